"""The web front end: one static page, and a same-origin proxy of /api/* to the API service.

    PYTHONPATH=include/target python -m aura_target.web     # env: WEB_PORT, API_BASE_URL, TARGET_HOST

Why a proxy rather than the page calling the API directly: the page and its API calls share one
origin, so there is no CORS to configure or get wrong, and the page needs no API URL baked in.
"""
from __future__ import annotations

import logging
import sys
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI, Request
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import JSONResponse, Response

from .config import ConfigError, ServiceConfig, configure_logging

log = logging.getLogger("aura_target.web")
STATIC = Path(__file__).resolve().parent / "static"
ASSETS = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/app.css": ("app.css", "text/css; charset=utf-8"), "/favicon.svg": ("favicon.svg", "image/svg+xml")}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self';"
                               " frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
FORWARDED_REQUEST_HEADERS = ("content-type", "accept")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "server", "date"}


def create_app(config: ServiceConfig) -> FastAPI:
    assets = {path: ((STATIC / name).read_bytes(), media) for path, (name, media) in ASSETS.items()}
    client = httpx.AsyncClient(base_url=config.api_base_url, timeout=30.0)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        log.info("web %s listening on %s:%d, proxying /api/* to %s", config.version, config.host,
                 config.web_port, config.api_base_url)
        try:
            yield
        finally:
            await client.aclose()

    app = FastAPI(title="aura target web", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(GZipMiddleware, minimum_size=1000)  # an identity's embedding is ~20 kB of JSON

    def asset(path: str) -> Response:
        body, media = assets[path]
        return Response(body, media_type=media, headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})

    for path in ASSETS:
        app.add_api_route(path, lambda path=path: asset(path), methods=["GET"], include_in_schema=False)

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok", "service": "web", "version": config.version}

    @app.get("/readyz")
    async def readyz() -> Response:
        try:
            upstream = await client.get("/readyz")
        except httpx.TransportError as exc:
            return JSONResponse(status_code=503, content={"status": "unavailable",
                                                          "reason": f"API unreachable ({type(exc).__name__})"})
        return JSONResponse(status_code=200 if upstream.status_code == 200 else 503,
                            content={"status": "ready" if upstream.status_code == 200 else "unavailable",
                                     "api_status": upstream.status_code})

    @app.api_route("/api/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def proxy(rest: str, request: Request) -> Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() in FORWARDED_REQUEST_HEADERS}
        try:
            upstream = await client.request(request.method, f"/api/{rest}", params=request.query_params,
                                            content=await request.body(), headers=headers)
        except httpx.TransportError as exc:
            log.error("API unreachable for %s /api/%s: %s", request.method, rest, type(exc).__name__)
            return JSONResponse(status_code=502, content={"detail": "the API is unreachable"})
        passed = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
        return Response(upstream.content, status_code=upstream.status_code, headers=passed)

    return app


def main() -> int:
    import uvicorn

    log_ = configure_logging("web")
    try:
        config = ServiceConfig.from_environment()
    except ConfigError as exc:
        log_.error("refusing to start: %s", exc)
        return 2
    uvicorn.run(create_app(config), host=config.host, port=config.web_port, log_config=None, access_log=False,
                backlog=2048)
    return 0


if __name__ == "__main__":
    sys.exit(main())
