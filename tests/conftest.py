"""Shared fixtures: the embedded stack's environment and scratch databases on its real Postgres.

The stack must be up (`make test` starts it; by hand: `.venv/bin/python include/scripts/stack up`).
Its generated environment (.stack/stack.env) is loaded here before anything imports Airflow.
"""
from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path

import pytest

from stackenv import conn_dsn

ROOT = Path(__file__).resolve().parents[1]
STACK_DIR = Path(os.environ.get("STACK_DIR", ROOT / ".stack"))
ENV_FILE = STACK_DIR / "stack.env"


def _load_stack_env() -> None:
    if not ENV_FILE.exists():
        raise pytest.UsageError(f"{ENV_FILE} is missing: start the stack with `make up` (or run `make test`)")
    sys.path.insert(0, str(ROOT / "plugins"))
    from rehearsal.envfile import read_exports

    for key, value in read_exports(ENV_FILE).items():
        os.environ.setdefault(key, value)


_load_stack_env()
for folder in ("plugins", "dags", "include/target"):
    if str(ROOT / folder) not in sys.path:
        sys.path.insert(0, str(ROOT / folder))


@pytest.fixture(scope="session")
def admin_dsn() -> str:
    return conn_dsn("AIRFLOW_CONN_STAGING_DB_ADMIN")


@pytest.fixture(scope="session")
def app_dsn() -> str:
    return conn_dsn("AIRFLOW_CONN_STAGING_DB")


@pytest.fixture
def scratch_database(admin_dsn):
    """A fresh, empty database owned by the app role, with the vector extension installed.

    Yields its name; dropped afterwards (WITH (FORCE): a leaked connection cannot keep it alive).
    """
    import psycopg

    name = f"scratch_{uuid.uuid4().hex[:12]}"
    app_user = json.loads(os.environ["AIRFLOW_CONN_STAGING_DB"])["login"]
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" OWNER "{app_user}"')
    try:
        with psycopg.connect(conn_dsn("AIRFLOW_CONN_STAGING_DB_ADMIN", name), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        yield name
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def scratch_app_dsn(scratch_database) -> str:
    """DSN of the scratch database as the (non-superuser) app role."""
    return conn_dsn("AIRFLOW_CONN_STAGING_DB", scratch_database)


@pytest.fixture
def scratch_admin_dsn(scratch_database) -> str:
    return conn_dsn("AIRFLOW_CONN_STAGING_DB_ADMIN", scratch_database)


@pytest.fixture
def initialised_database(scratch_database, scratch_app_dsn) -> str:
    """A scratch database after the init-db phase (tables, HNSW, ef_search, target migrations)."""
    import psycopg2

    from rehearsal.profile import load_profile
    from rehearsal.work import init_db

    db = load_profile("local").database
    conn = psycopg2.connect(scratch_app_dsn)
    conn.autocommit = True
    try:
        init_db.apply_schema(conn)
        init_db.ensure_hnsw_indexes(conn, db)
        init_db.set_ef_search(conn, db.hnsw.ef_search)
    finally:
        conn.close()
    app = json.loads(os.environ["AIRFLOW_CONN_STAGING_DB"])
    init_db.run_migrations(db.migrations, {"PGHOST": app["host"], "PGPORT": str(app["port"]), "PGUSER": app["login"],
                                           "PGPASSWORD": app["password"], "PGDATABASE": scratch_database})
    return scratch_database


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def deploy_profile(tmp_path, initialised_database, monkeypatch) -> str:
    """The local profile on its own release repository, run folder, ports and database.

    Yields the profile's path; every service it deployed is stopped afterwards.
    """
    import subprocess

    import yaml

    from rehearsal.paths import ENVIRONMENTS_DIR

    release = tmp_path / "release"
    subprocess.run([sys.executable, "-m", "aura_target.releases", "build", str(release)], check=True,
                   capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT / "include" / "target")})
    for var in ("STACK_API_PORT", "STACK_WORKER_PORT", "STACK_WEB_PORT"):
        monkeypatch.setenv(var, str(free_port()))
    secrets = json.loads(os.environ["AIRFLOW_VAR_REHEARSAL_LOCAL_SECRETS"])
    secrets["secret/data/aura/staging/database"]["PGDATABASE"] = initialised_database
    monkeypatch.setenv("AIRFLOW_VAR_REHEARSAL_LOCAL_SECRETS", json.dumps(secrets))
    data = yaml.safe_load((ENVIRONMENTS_DIR / "local.yaml").read_text())
    data["name"] = "deploytest"
    data["release"]["repository"] = str(release)
    data["deploy"]["run_dir"] = str(tmp_path / "run")
    path = tmp_path / "deploytest.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    yield str(path)
    from rehearsal.work.services import stop_service

    for pid_file in (tmp_path / "run").glob("*.pid"):
        stop_service(pid_file)
