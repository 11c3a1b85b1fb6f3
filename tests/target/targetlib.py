"""Helpers for the reference target's tests: scratch databases with the app schema, services as subprocesses.

Services run as real processes (`python -m aura_target.<service>`) on free 127.0.0.1 ports with the
libpq environment of a scratch database; they are always killed in teardown.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import psycopg
from pgvector.psycopg import register_vector

ROOT = Path(__file__).resolve().parents[2]
TARGET_DIR = ROOT / "include" / "target"
TABLES_SQL = ROOT / "include" / "sql" / "init_db" / "01_tables.sql"
DIMENSION = 1536
HNSW_INDEXES = (
    "CREATE INDEX IF NOT EXISTS identity_ai_embedding_idx ON identity"
    " USING hnsw (ai_embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)",
    "CREATE INDEX IF NOT EXISTS trust_event_ai_embedding_idx ON trust_event"
    " USING hnsw (ai_embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)",
)


def _conn(env: str) -> dict:
    return json.loads(os.environ[env])


def libpq_env(database: str) -> dict[str, str]:
    """PG* variables for the app role on `database`: how the services get their connection."""
    c = _conn("AIRFLOW_CONN_STAGING_DB")
    return {"PGHOST": c["host"], "PGPORT": str(c["port"]), "PGUSER": c["login"],
            "PGPASSWORD": c["password"], "PGDATABASE": database}


def dsn_for(database: str, admin: bool = False) -> str:
    c = _conn("AIRFLOW_CONN_STAGING_DB_ADMIN" if admin else "AIRFLOW_CONN_STAGING_DB")
    return f"host={c['host']} port={c['port']} user={c['login']} password={c['password']} dbname={database}"


def apply_schema(database: str) -> None:
    """What the init-db phase and the migrate step do to a real staging database."""
    with psycopg.connect(dsn_for(database), autocommit=True) as conn:
        conn.execute(TABLES_SQL.read_text())
        for statement in HNSW_INDEXES:
            conn.execute(statement)
    subprocess.run([sys.executable, "-m", "aura_target.migrate"], check=True, capture_output=True,
                   env={**os.environ, **libpq_env(database), "PYTHONPATH": str(TARGET_DIR)}, timeout=60)


@contextmanager
def scratch_db(with_schema: bool = True) -> Iterator[str]:
    """Like tests/conftest.py's scratch_database, but usable at module scope."""
    name = f"scratch_target_{uuid.uuid4().hex[:10]}"
    app_user = _conn("AIRFLOW_CONN_STAGING_DB")["login"]
    admin = dsn_for(_conn("AIRFLOW_CONN_STAGING_DB_ADMIN")["schema"], admin=True)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" OWNER "{app_user}"')
    try:
        with psycopg.connect(dsn_for(name, admin=True), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        if with_schema:
            apply_schema(name)
        yield name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """One target service as a subprocess; logs go to a file that failures quote."""

    def __init__(self, module: str, env: dict[str, str], port: int, log_path: Path,
                 pythonpath: Path = TARGET_DIR) -> None:
        self.module, self.port, self.log_path = module, port, log_path
        self.url = f"http://127.0.0.1:{port}"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "TARGET_"))}
        port_var = {"api": "API_PORT", "worker": "WORKER_PORT", "web": "WEB_PORT"}[module]
        full_env.update({"PYTHONPATH": str(pythonpath), "TARGET_HOST": "127.0.0.1", port_var: str(port), **env})
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", f"aura_target.{module}"], env=full_env,
                                     stdout=self._log, stderr=subprocess.STDOUT)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, path: str = "/healthz", timeout: float = 20.0) -> Service:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.module} exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                if httpx.get(self.url + path, timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{self.module} not ready on {self.url}{path} after {timeout}s:\n{self.log_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()


def clustered_embeddings(count: int, clusters: int, seed: int, spread: float = 0.3) -> np.ndarray:
    """Points around random centres: realistic for embeddings, and HNSW recall is meaningful on it
    (on uniform random 1536-d data it is not)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, DIMENSION))
    members = rng.integers(0, clusters, count)
    return (centres[members] + spread * rng.standard_normal((count, DIMENSION))).astype(np.float32)


def cosine_distances(matrix: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Exact cosine distance of every row to the query: the brute-force baseline."""
    matrix = matrix.astype(np.float64)
    query = query.astype(np.float64)
    return 1.0 - (matrix @ query) / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(query))


def address_of(i: int, prefix: str = "a") -> str:
    return "0x" + (prefix + f"{i:x}").rjust(40, "0")


def seed_identities(database: str, embeddings: np.ndarray, prefix: str = "a") -> list[str]:
    addresses = [address_of(i, prefix) for i in range(len(embeddings))]
    with psycopg.connect(dsn_for(database)) as conn:
        register_vector(conn)
        with conn.cursor().copy("COPY identity (address, ai_embedding) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(["varchar", "vector"])
            for address, vector in zip(addresses, embeddings, strict=True):
                copy.write_row((address, vector))
    return addresses


def count_rows(database: str, table: str) -> int:
    with psycopg.connect(dsn_for(database)) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    """The value of one sample in Prometheus text format (labels must match exactly as a subset)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                return sample.value
    return None
