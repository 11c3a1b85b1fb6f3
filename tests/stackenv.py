"""Helpers for tests that talk to the embedded stack (import as `from stackenv import ...`).

Kept out of conftest.py: with several conftest files, `from conftest import` is ambiguous.
"""
from __future__ import annotations

import json
import os


def conn_dsn(conn_env: str, database: str | None = None) -> str:
    """libpq DSN from one of the stack's AIRFLOW_CONN_* JSON connections."""
    c = json.loads(os.environ[conn_env])
    return (f"host={c['host']} port={c['port']} user={c['login']} password={c['password']} "
            f"dbname={database or c['schema']}")
