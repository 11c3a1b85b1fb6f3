"""Database connections from Airflow Connections; passwords registered as secrets on the way in.

Imports of the provider happen inside the functions: DAG files import this package at parse time.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rehearsal.redaction import register_secret


def _connection(conn_id: str):
    from airflow.sdk import BaseHook

    try:
        conn = BaseHook.get_connection(conn_id)
    except Exception as exc:  # AirflowNotFoundException and friends
        raise ConnectionError(f"Airflow Connection {conn_id!r} is not defined ({type(exc).__name__}): "
                              f"create it, or set AIRFLOW_CONN_{conn_id.upper()}") from None
    register_secret(conn.password)
    return conn


def describe(conn_id: str) -> str:
    """host:port/database of a connection, for messages (never the login or password)."""
    c = _connection(conn_id)
    return f"{c.host}:{c.port or 5432}/{c.schema}"


@contextmanager
def postgres(conn_id: str, autocommit: bool = True) -> Iterator[Any]:
    """A psycopg2 connection through the postgres provider's hook; closed on exit."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    _connection(conn_id)
    try:
        conn = PostgresHook(postgres_conn_id=conn_id).get_conn()
    except Exception as exc:
        raise ConnectionError(f"cannot connect to Postgres {describe(conn_id)} (Connection {conn_id!r}): "
                              f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from None
    conn.autocommit = autocommit
    try:
        yield conn
    finally:
        conn.close()


def with_postgres(conn_id: str, work: Callable[..., Any], *args: Any) -> Any:
    with postgres(conn_id) as conn:
        return work(conn, *args)


def libpq_env(conn_id: str) -> dict[str, str]:
    """PG* variables for a subprocess (migrations, pg_dump): credentials never go on argv."""
    c = _connection(conn_id)
    env = {"PGHOST": c.host or "", "PGPORT": str(c.port or 5432), "PGUSER": c.login or "",
           "PGDATABASE": c.schema or ""}
    if c.password:
        env["PGPASSWORD"] = c.password
    return env
