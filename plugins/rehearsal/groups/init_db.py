"""The init-db phase (plan STEP 2) as a TaskGroup; its dependencies mirror the plan's checkpoints.

connect -> install_extension -> check_vector_version -> apply_schema
        -> {build_hnsw_indexes, set_ef_search, run_migrations} -> verify
"""
from __future__ import annotations

from typing import Any

from airflow.sdk import task, task_group

from rehearsal.checkpoint import run_checkpoint

PHASE = "init_db"


@task
def connect(run: dict[str, Any]) -> dict[str, Any]:
    """STEP 2.1: reach the staging database and record its server version."""
    from rehearsal.connections import with_postgres
    from rehearsal.work import init_db

    return run_checkpoint(run, PHASE, "db.connect", lambda p: with_postgres(p.database.conn_id, init_db.server_facts))


@task
def install_extension(run: dict[str, Any]) -> dict[str, Any]:
    """STEP 2.2: CREATE EXTENSION IF NOT EXISTS vector (as the admin connection when set)."""
    from rehearsal.connections import with_postgres
    from rehearsal.work import init_db

    return run_checkpoint(run, PHASE, "db.extension", lambda p: with_postgres(
        p.database.extension_conn_id, init_db.install_extension, p.database.extension))


@task
def check_vector_version(run: dict[str, Any]) -> dict[str, Any]:
    """STEP 2.2: pgvector new enough for HNSW (>= 0.5.0 unless the profile says otherwise)."""
    from rehearsal.connections import with_postgres
    from rehearsal.work import init_db

    return run_checkpoint(run, PHASE, "db.vector_version", lambda p: with_postgres(
        p.database.conn_id, init_db.check_vector_version, p.database.extension, p.database.min_vector_version))


@task
def apply_schema(run: dict[str, Any]) -> dict[str, Any]:
    """STEP 2.3: the tables and btree indexes from include/sql/init_db/."""
    from rehearsal.connections import with_postgres
    from rehearsal.work import init_db

    return run_checkpoint(run, PHASE, "db.schema", lambda p: with_postgres(p.database.conn_id, init_db.apply_schema))


@task(execution_timeout=None)
def build_hnsw_indexes(run: dict[str, Any]) -> dict[str, Any]:
    """STEP 2.3: HNSW indexes built concurrently; rebuilt only when invalid or mis-configured."""
    from rehearsal.connections import with_postgres
    from rehearsal.work import init_db

    return run_checkpoint(run, PHASE, "db.hnsw_indexes", lambda p: with_postgres(
        p.database.conn_id, init_db.ensure_hnsw_indexes, p.database))


@task
def set_ef_search(run: dict[str, Any]) -> dict[str, Any]:
    """STEP 2.3: ALTER DATABASE ... SET hnsw.ef_search, only when it differs."""
    from rehearsal.connections import with_postgres
    from rehearsal.work import init_db

    return run_checkpoint(run, PHASE, "db.ef_search", lambda p: with_postgres(
        p.database.conn_id, init_db.set_ef_search, p.database.hnsw.ef_search))


@task
def run_migrations(run: dict[str, Any]) -> dict[str, Any]:
    """STEP 2.4: the application's migration command from the profile (the plan's Prisma)."""
    from rehearsal.connections import libpq_env
    from rehearsal.work import init_db

    return run_checkpoint(run, PHASE, "db.migrations", lambda p: init_db.run_migrations(
        p.database.migrations, libpq_env(p.database.conn_id)))


@task
def verify(run: dict[str, Any]) -> dict[str, Any]:
    """STEP 2 checkpoint: extension, tables, valid HNSW indexes, ef_search, SELECT COUNT(*) FROM identity."""
    from rehearsal.connections import with_postgres
    from rehearsal.work import init_db

    return run_checkpoint(run, PHASE, "db.verify", lambda p: with_postgres(p.database.conn_id, init_db.verify, p.database))


def init_db_group(run, group_id: str = "init_db"):
    @task_group(group_id=group_id, tooltip="STEP 2: pgvector + HNSW database initialisation")
    def init_db(run):
        schema = apply_schema(run)
        connect(run) >> install_extension(run) >> check_vector_version(run) >> schema
        schema >> [build_hnsw_indexes(run), set_ef_search(run), run_migrations(run)] >> verify(run)

    return init_db(run)
