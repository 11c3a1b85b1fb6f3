"""init-db against the real embedded Postgres: every step, idempotence, repairs, clear failures."""
from __future__ import annotations

import json
import os
import sys
import uuid

import psycopg2
import pytest

from rehearsal.evidence import CheckFailed
from rehearsal.profile import Command, DatabaseSettings, HnswSettings, load_profile
from rehearsal.work import init_db
from stackenv import conn_dsn

DB = load_profile("local").database


def connect(dsn: str):
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    return conn


@pytest.fixture
def app(scratch_app_dsn):
    conn = connect(scratch_app_dsn)
    yield conn
    conn.close()


def pg_env(database: str) -> dict[str, str]:
    c = json.loads(os.environ["AIRFLOW_CONN_STAGING_DB"])
    return {"PGHOST": c["host"], "PGPORT": str(c["port"]), "PGUSER": c["login"],
            "PGPASSWORD": c["password"], "PGDATABASE": database}


def initialise(conn, db: DatabaseSettings = DB, database: str | None = None) -> dict[str, object]:
    """The phase's steps in the DAG's order, as plain calls."""
    results = {
        "connect": init_db.server_facts(conn),
        "extension": init_db.install_extension(conn, db.extension),
        "version": init_db.check_vector_version(conn, db.extension, db.min_vector_version),
        "schema": init_db.apply_schema(conn),
        "hnsw": init_db.ensure_hnsw_indexes(conn, db),
        "ef_search": init_db.set_ef_search(conn, db.hnsw.ef_search),
    }
    if database:
        results["migrations"] = init_db.run_migrations(db.migrations, pg_env(database))
    results["verify"] = init_db.verify(conn, db)
    return results


def index_oids(conn) -> dict[str, int]:
    return {name: init_db.inspect_index(conn, name)["oid"] for name in
            ("identity_ai_embedding_idx", "trust_event_ai_embedding_idx")}


def test_full_initialisation_then_a_second_run_changes_nothing(app, scratch_database):
    first = initialise(app, database=scratch_database)
    assert all(r.status == "pass" for r in first.values()), {k: r.reason for k, r in first.items()}
    assert {v["action"] for v in first["hnsw"].value.values()} == {"created"}
    assert first["verify"].value["identity_count"] == 0
    assert "1 migration(s) applied" in first["migrations"].reason
    oids = index_oids(app)

    second = initialise(app, database=scratch_database)
    assert all(r.status == "pass" for r in second.values())
    assert index_oids(app) == oids
    assert {v["action"] for v in second["hnsw"].value.values()} == {"kept"}
    assert second["ef_search"].value["action"] == "already set"
    assert "0 migration(s) applied" in second["migrations"].reason


def test_index_options_and_ef_search_are_what_the_profile_says(app, scratch_app_dsn):
    initialise(app)
    found = init_db.inspect_index(app, "identity_ai_embedding_idx")
    assert found["method"] == "hnsw" and found["opclass"] == "vector_cosine_ops"
    assert (found["m"], found["ef_construction"], found["valid"]) == (16, 64, True)
    assert init_db.database_setting(app, "hnsw.ef_search") == "100"
    new_session = connect(scratch_app_dsn)  # a new session inherits the database-level setting
    with new_session.cursor() as cur:
        cur.execute("SELECT '[1,2]'::vector, current_setting('hnsw.ef_search')")
        assert cur.fetchone()[1] == "100"
    new_session.close()


def test_misconfigured_index_is_rebuilt_with_the_right_options(app):
    init_db.install_extension(app)
    init_db.apply_schema(app)
    with app.cursor() as cur:
        cur.execute("CREATE INDEX identity_ai_embedding_idx ON identity USING hnsw (ai_embedding vector_l2_ops) "
                    "WITH (m = 8, ef_construction = 32)")
    before = init_db.inspect_index(app, "identity_ai_embedding_idx")
    result = init_db.ensure_hnsw_indexes(app, DB)
    after = init_db.inspect_index(app, "identity_ai_embedding_idx")
    entry = result.value["identity_ai_embedding_idx"]
    assert entry["action"] == "rebuilt"
    assert "opclass is 'vector_l2_ops'" in entry["why"] and "m is 8" in entry["why"]
    assert after["oid"] != before["oid"]
    assert (after["opclass"], after["m"], after["ef_construction"], after["valid"]) == ("vector_cosine_ops", 16, 64, True)
    assert init_db.inspect_index(app, "identity_ai_embedding_idx_rebuild") is None  # no temporary left


def test_invalid_index_is_rebuilt(app, scratch_admin_dsn):
    initialise(app)
    old = init_db.inspect_index(app, "trust_event_ai_embedding_idx")["oid"]
    admin = connect(scratch_admin_dsn)
    with admin.cursor() as cur:  # the state an interrupted CREATE INDEX CONCURRENTLY leaves
        cur.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = %s", (old,))
    admin.close()
    with pytest.raises(CheckFailed, match="trust_event_ai_embedding_idx: index is invalid"):
        init_db.verify(app, DB)
    result = init_db.ensure_hnsw_indexes(app, DB)
    assert result.value["trust_event_ai_embedding_idx"]["action"] == "rebuilt"
    assert result.value["identity_ai_embedding_idx"]["action"] == "kept"
    fresh = init_db.inspect_index(app, "trust_event_ai_embedding_idx")
    assert fresh["valid"] and fresh["oid"] != old
    assert init_db.verify(app, DB).status == "pass"


def test_a_failed_build_drops_nothing_and_leaves_no_invalid_index(app):
    initialise(app)
    kept = index_oids(app)
    with app.cursor() as cur:  # an embedding the HNSW cosine build cannot take keeps nothing half-built
        cur.execute("ALTER TABLE trust_event ALTER COLUMN ai_embedding TYPE vector")
        cur.execute("INSERT INTO trust_event (from_address, to_address, trust_score, event_type, ai_embedding) "
                    "VALUES ('a', 'b', 1, 't', '[1,2,3]')")
        cur.execute("DROP INDEX trust_event_ai_embedding_idx")
    with pytest.raises(CheckFailed, match="building HNSW index failed.*no index was dropped"):
        init_db.ensure_hnsw_indexes(app, DB)
    assert init_db.inspect_index(app, "identity_ai_embedding_idx")["oid"] == kept["identity_ai_embedding_idx"]
    assert init_db.inspect_index(app, "trust_event_ai_embedding_idx") is None


def test_missing_extension_is_reported_clearly(app):
    missing = DB.model_copy(update={"extension": "vector_not_installed_here"})
    with pytest.raises(CheckFailed) as caught:
        init_db.install_extension(app, missing.extension)
    result = caught.value.result
    assert result.check_id == "db.extension" and result.status == "fail"
    assert "extension 'vector_not_installed_here' is not available on the server" in result.reason
    assert "install pgvector" in result.reason


def test_app_role_without_privilege_is_told_to_use_the_admin_connection(admin_dsn):
    name = f"bare_{uuid.uuid4().hex[:10]}"
    app_user = json.loads(os.environ["AIRFLOW_CONN_STAGING_DB"])["login"]
    admin = connect(admin_dsn)
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}" OWNER "{app_user}"')
    try:
        conn = connect(conn_dsn("AIRFLOW_CONN_STAGING_DB", name))
        with pytest.raises(CheckFailed, match="CREATE EXTENSION vector failed.*admin_conn_id"):
            init_db.install_extension(conn, "vector")
        with pytest.raises(CheckFailed, match="extension vector is not installed"):
            init_db.check_vector_version(conn, "vector", "0.5.0")
        conn.close()
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_vector_older_than_required_fails_with_both_versions(app):
    with pytest.raises(CheckFailed, match=r"pgvector 0\.8\.5 is older than 99\.0"):
        init_db.check_vector_version(app, "vector", "99.0")
    assert init_db.check_vector_version(app, "vector", "0.5.0").value == {"installed": "0.8.5"}


def test_migration_failure_carries_its_output_and_no_password(app, scratch_database):
    env = pg_env(scratch_database)
    failing = Command(argv=[sys.executable, "-c", "import sys; print('step 1 ok'); sys.exit('relation missing')"])
    with pytest.raises(CheckFailed) as caught:
        init_db.run_migrations(failing, env)
    result = caught.value.result
    assert "exited 1: relation missing" in result.reason
    assert result.value["output_tail"] == ["step 1 ok", "relation missing"]
    assert env["PGPASSWORD"] not in json.dumps(result.value) + result.reason
    assert init_db.run_migrations(None, env).status == "warn"
    with pytest.raises(CheckFailed, match="migration command not found"):
        init_db.run_migrations(Command(argv=["no-such-migrate-tool"]), env)
    with pytest.raises(CheckFailed, match="did not finish within 1s"):
        init_db.run_migrations(Command(argv=[sys.executable, "-c", "import time; time.sleep(5)"], timeout_seconds=1), env)


def test_migrations_get_the_database_from_the_environment_not_argv(app, scratch_database):
    probe = Command(argv=[sys.executable, "-c", "import os; print(os.environ['PGDATABASE'], 'PGPASSWORD' in os.environ)"])
    result = init_db.run_migrations(probe, pg_env(scratch_database))
    assert result.value["output_tail"] == [f"{scratch_database} True"]


def test_verify_names_what_is_missing(app):
    initialise(app)
    with app.cursor() as cur:
        cur.execute("DROP INDEX identity_ai_embedding_idx")
    db = DB.model_copy(update={"hnsw": HnswSettings(ef_search=120), "tables": ["identity", "trust_event", "ghost"]})
    with pytest.raises(CheckFailed) as caught:
        init_db.verify(app, db)
    reason = caught.value.result.reason
    assert "table ghost is missing" in reason
    assert "index identity_ai_embedding_idx is missing" in reason
    assert "hnsw.ef_search is 100, expected 120" in reason
