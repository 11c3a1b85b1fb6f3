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
    for line in ENV_FILE.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            os.environ.setdefault(key, json.loads(value) if value.startswith('"') else value)


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
