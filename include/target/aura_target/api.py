"""The API service: identities with embeddings, similarity search through HNSW, trust events, metrics.

    PYTHONPATH=include/target python -m aura_target.api      # env: API_PORT, TARGET_HOST, PG*, ...
"""
from __future__ import annotations

import logging
import math
import random
import sys
import time
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated

import numpy as np
import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StringConstraints
from starlette.routing import Match

from .config import ConfigError, ServiceConfig, configure_logging, database_summary
from .db import PoolCollector, column_dimension, make_pool
from .faults import FaultConfigError, Faults, faults_from_environment

log = logging.getLogger("aura_target.api")

ADDRESS_PATTERN = r"^0x[0-9a-fA-F]{40}$"
Address = Annotated[str, StringConstraints(pattern=ADDRESS_PATTERN)]
# Strict: a JSON string "0.5" or true is a client bug, not a number; allow_inf_nan=False rejects the
# NaN/Infinity literals that Python's json (and so FastAPI) accepts.
Embedding = list[Annotated[StrictFloat, Field(allow_inf_nan=False)]]  # strict float still takes 1

# Buckets resolve the 2 s objective: several below and above it, so a p95 near 2 s is visible.
LATENCY_BUCKETS = (.005, .01, .025, .05, .1, .25, .5, .75, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0)

VECTOR_SEARCH_LATENCY = Histogram("vector_search_latency_seconds",
                                  "Time of the similarity query (HNSW search), per request",
                                  buckets=LATENCY_BUCKETS)
HTTP_REQUESTS = Counter("http_requests_total", "HTTP requests by route template and status",
                        ["method", "route", "status"])
HTTP_DURATION = Histogram("http_request_duration_seconds", "HTTP request duration by route template",
                          ["method", "route"], buckets=LATENCY_BUCKETS)
BUILD_INFO = Gauge("aura_build_info", "Release of the running service (value is always 1)",
                   ["version", "service"])
FAULT_ACTIVE = Gauge("aura_fault_active", "Fault switches injected at start (value = setting)", ["fault"])


class IdentityIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: Address
    embedding: Embedding


class SimilarityIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    embedding: Embedding
    k: Annotated[StrictInt, Field(ge=1, le=100)] = 5


class TrustEventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    from_address: Address
    to_address: Address
    trust_score: Annotated[StrictFloat, Field(allow_inf_nan=False)]
    event_type: Annotated[str, StringConstraints(min_length=1, max_length=50)]
    embedding: Embedding | None = None


def invalid(field: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=422, content={
        "detail": [{"field": field, "msg": message}], "message": f"{field}: {message}"})


class Api:
    """Holds the pool, the faults and the cached embedding dimension for the handlers."""

    def __init__(self, config: ServiceConfig, faults: Faults) -> None:
        self.config = config
        self.faults = faults
        self.pool = make_pool(config.pool_min_size, config.pool_max_size)
        self.error_draw = random.Random(faults.seed)
        self.leaked: list[bytes] = []
        self._dimension: int | None = None

    def dimension(self, conn: psycopg.Connection) -> int:
        if self._dimension is None:
            found = column_dimension(conn, "identity", "ai_embedding")
            if found is None:  # schema not there yet: use the configured value, ask again next time
                return self.config.embedding_dimension
            self._dimension = found
        return self._dimension

    def check_embedding(self, conn: psycopg.Connection, field: str, values: list[float]) -> JSONResponse | None:
        expected = self.dimension(conn)
        if len(values) != expected:
            return invalid(field, f"must have exactly {expected} values, got {len(values)}")
        return None


def create_app(config: ServiceConfig, faults: Faults) -> FastAPI:
    api = Api(config, faults)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        api.pool.open(wait=False)
        REGISTRY.register(PoolCollector(api.pool))
        BUILD_INFO.labels(version=config.version, service="api").set(1)
        for name, value in faults.active.items():
            FAULT_ACTIVE.labels(fault=name).set(float(value) if value != -1 else math.inf)
        log.info("api %s listening on %s:%d, database %s, hnsw.ef_search=%d, faults=%s",
                 config.version, config.host, config.api_port, database_summary(), config.hnsw_ef_search,
                 faults.active or "none")
        try:
            yield
        finally:
            api.pool.close()

    app = FastAPI(title="aura target API", version=config.version, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.api = api

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # One entry per field (a 1536-long embedding of NaNs is one problem, not 1536).
        by_field: dict[str, dict] = {}
        for error in exc.errors():
            location = [str(part) for part in error.get("loc", ()) if part != "body"]
            field = "body" if error.get("type") == "json_invalid" or not location else location[0]
            where = f"item {location[1]}: " if len(location) > 1 and location[1].isdigit() else ""
            if field in by_field:
                by_field[field]["count"] += 1
            else:
                by_field[field] = {"field": field, "msg": where + error.get("msg", "invalid"), "count": 1}
        details = [{"field": d["field"], "msg": d["msg"] + (f" (and {d['count'] - 1} more)" if d["count"] > 1 else "")}
                   for d in by_field.values()]
        summary = "; ".join(f"{d['field']}: {d['msg']}" for d in details)
        return JSONResponse(status_code=422, content={"detail": details, "message": summary})

    @app.middleware("http")
    async def observe(request: Request, call_next):
        started = time.perf_counter()
        is_api = request.url.path.startswith("/api/")
        if is_api and faults.memory_leak_kb_per_request:
            # Filled bytes, not bytearray(n): zero pages from calloc would not count as resident.
            api.leaked.append(b"\xa5" * (faults.memory_leak_kb_per_request * 1024))
        if is_api and faults.error_rate and api.error_draw.random() < faults.error_rate:
            response: Response = JSONResponse(status_code=500, content={"detail": "injected fault: error_rate"})
        else:
            try:
                response = await call_next(request)
            except Exception:
                log.exception("unhandled error on %s %s", request.method, request.url.path)
                response = JSONResponse(status_code=500, content={"detail": "internal error"})
        route_label = route_template(app, request)
        HTTP_REQUESTS.labels(request.method, route_label, str(response.status_code)).inc()
        HTTP_DURATION.labels(request.method, route_label).observe(time.perf_counter() - started)
        if response.status_code >= 500:
            log.error("%s %s -> %d", request.method, route_label, response.status_code)
        return response

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok", "service": "api", "version": config.version}

    @app.get("/readyz")
    def readyz() -> Response:
        try:
            with api.pool.connection(timeout=2.0) as conn:
                conn.execute("SELECT 1")
        except Exception as exc:  # PoolTimeout, OperationalError, ...: the reason, never the DSN
            log.warning("not ready: database unreachable (%s)", type(exc).__name__)
            return JSONResponse(status_code=503, content={"status": "unavailable", "version": config.version,
                                                          "reason": f"database unreachable ({type(exc).__name__})"})
        return JSONResponse({"status": "ready", "version": config.version})

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @app.post("/api/identities")
    def upsert_identity(body: IdentityIn) -> Response:
        address = body.address.lower()  # hex addresses are case-insensitive (EIP-55 case is a checksum)
        with api.pool.connection() as conn:
            if (problem := api.check_embedding(conn, "embedding", body.embedding)) is not None:
                return problem
            created = conn.execute(
                "INSERT INTO identity (address, ai_embedding) VALUES (%s, %s)"
                " ON CONFLICT (address) DO UPDATE SET ai_embedding = EXCLUDED.ai_embedding, updated_at = now()"
                " RETURNING (xmax = 0)",
                (address, np.asarray(body.embedding, dtype=np.float32))).fetchone()[0]
        return JSONResponse(status_code=201 if created else 200,
                            content={"address": address, "created": bool(created)})

    @app.get("/api/identities/{address}")
    def get_identity(address: str, include_embedding: bool = True) -> Response:
        if not _is_address(address):
            return invalid("address", "must be 0x followed by 40 hex digits")
        with api.pool.connection() as conn:
            row = conn.execute(
                "SELECT i.address, i.ai_embedding, i.created_at, i.updated_at, t.score, t.computed_at"
                " FROM identity i LEFT JOIN trust_score t USING (address) WHERE i.address = %s",
                (address.lower(),)).fetchone()
        if row is None:
            return JSONResponse(status_code=404, content={"detail": f"identity {address.lower()} not found"})
        # The trust score rides along, so the page needs one request (and no 404) per lookup.
        trust = None if row[4] is None else {"score": row[4], "computed_at": _iso(row[5])}
        content = {"address": row[0], "has_embedding": row[1] is not None,
                   "created_at": _iso(row[2]), "updated_at": _iso(row[3]), "trust": trust}
        if include_embedding:
            content["embedding"] = None if row[1] is None else vector_values(row[1])
        return JSONResponse(content)

    @app.post("/api/similarity")
    def similarity(body: SimilarityIn) -> Response:
        with api.pool.connection() as conn:
            if (problem := api.check_embedding(conn, "embedding", body.embedding)) is not None:
                return problem
            query = np.asarray(body.embedding, dtype=np.float32)
            with VECTOR_SEARCH_LATENCY.time():
                # SET LOCAL (set_config(..., true)): the setting ends with this transaction, so a pooled
                # connection never carries it to another request.
                conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(config.hnsw_ef_search),))
                rows = conn.execute(
                    "SELECT address, ai_embedding <=> %(q)s AS distance FROM identity"
                    " ORDER BY ai_embedding <=> %(q)s LIMIT %(k)s", {"q": query, "k": body.k}).fetchall()
                if faults.similarity_latency_seconds:
                    time.sleep(faults.similarity_latency_seconds)
        results = [{"address": address, "distance": float(distance)} for address, distance in rows
                   if distance is not None]
        if faults.wrong_order:
            results.reverse()
        return JSONResponse({"results": results, "k": body.k})

    @app.post("/api/trust-events")
    def add_trust_event(body: TrustEventIn) -> Response:
        with api.pool.connection() as conn:
            embedding = None
            if body.embedding is not None:
                if (problem := api.check_embedding(conn, "embedding", body.embedding)) is not None:
                    return problem
                embedding = np.asarray(body.embedding, dtype=np.float32)
            event_id = conn.execute(
                "INSERT INTO trust_event (from_address, to_address, trust_score, ai_embedding, event_type)"
                " VALUES (%s, %s, %s, %s, %s) RETURNING id",
                (body.from_address.lower(), body.to_address.lower(), float(body.trust_score), embedding,
                 body.event_type)).fetchone()[0]
        return JSONResponse(status_code=201, content={"id": str(event_id)})

    @app.get("/api/identities/{address}/trust")
    def get_trust(address: str) -> Response:
        if not _is_address(address):
            return invalid("address", "must be 0x followed by 40 hex digits")
        with api.pool.connection() as conn:
            row = conn.execute("SELECT score, computed_at FROM trust_score WHERE address = %s",
                               (address.lower(),)).fetchone()
        if row is None:
            return JSONResponse(status_code=404,
                                content={"detail": f"no trust score computed for {address.lower()} yet"})
        return JSONResponse({"address": address.lower(), "score": row[0], "computed_at": _iso(row[1])})

    return app


def route_template(app: FastAPI, request: Request) -> str:
    """The matched route's template (bounded label values), also for requests that never reached it."""
    route = request.scope.get("route")
    if route is None:  # an injected error answered before routing: find the route it was meant for
        route = next((r for r in app.router.routes if r.matches(request.scope)[0] == Match.FULL), None)
    return getattr(route, "path", None) or "unmatched"


def vector_values(value) -> list[float]:
    """pgvector hands back numpy arrays (text format) or Vector objects (binary format)."""
    array = value.to_numpy() if hasattr(value, "to_numpy") else np.asarray(value)
    return array.astype(float).tolist()


def _is_address(value: str) -> bool:
    return len(value) == 42 and value[:2] == "0x" and all(c in "0123456789abcdefABCDEF" for c in value[2:])


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def main() -> int:
    import uvicorn

    log_ = configure_logging("api")
    try:
        config = ServiceConfig.from_environment()
        faults = faults_from_environment()
    except (ConfigError, FaultConfigError) as exc:
        log_.error("refusing to start: %s", exc)
        return 2
    # backlog: the default of a few connections gives 1 s SYN-retry outliers under bursts.
    uvicorn.run(create_app(config, faults), host=config.host, port=config.api_port, log_config=None,
                access_log=False, backlog=2048)
    return 0


if __name__ == "__main__":
    sys.exit(main())
