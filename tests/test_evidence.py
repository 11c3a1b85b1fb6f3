"""The evidence store on the real Postgres: schema, upserts, statuses, and no secrets."""
from __future__ import annotations

import psycopg2
import pytest

from rehearsal.evidence import CheckResult, EvidenceStore
from rehearsal.redaction import REDACTED, register_secret


@pytest.fixture
def store(scratch_app_dsn):
    conn = psycopg2.connect(scratch_app_dsn)
    store = EvidenceStore(conn, "evidence_test")
    store.ensure_schema()
    store.ensure_schema()  # idempotent
    store.open_rehearsal("dag/run-1", "dag", "run-1", "local", {"name": "local"})
    yield store
    conn.close()


def test_records_are_upserted_per_check_and_counted(store):
    store.record("dag/run-1", "init_db", CheckResult("db.connect", "fail", "refused"), attempt=1)
    store.record("dag/run-1", "init_db", CheckResult("db.connect", "pass", "connected", value={"v": 16}), attempt=2)
    store.record("dag/run-1", "init_db", CheckResult("db.migrations", "warn", "none configured"))
    checks = {c["check_id"]: c for c in store.checks("dag/run-1")}
    assert checks["db.connect"]["status"] == "pass" and checks["db.connect"]["attempt"] == 2
    assert checks["db.connect"]["value"] == {"v": 16}
    assert store.close_rehearsal("dag/run-1") == {"pass": 1, "warn": 1}
    row = store.rehearsal("dag/run-1")
    assert row["outcome"] == "completed" and row["finished_at"] is not None
    assert store.latest_rehearsal_id("dag") == "dag/run-1"
    assert store.latest_rehearsal_id("other-dag") is None


def test_a_failed_check_makes_the_outcome_failed(store):
    store.record("dag/run-1", "init_db", CheckResult("db.verify", "fail", "index missing"))
    store.close_rehearsal("dag/run-1")
    assert store.rehearsal("dag/run-1")["outcome"] == "failed"


def test_status_outside_the_four_is_rejected():
    with pytest.raises(ValueError, match="status must be one of"):
        CheckResult("x", "ok", "fine")


def test_registered_secrets_never_reach_the_store(store):
    secret = "s3cr3t-Value-For-Evidence"
    register_secret(secret)
    store.record("dag/run-1", "deploy", CheckResult(
        "secrets.read", "fail", f"bad password {secret}", value={"dsn": f"password={secret}"}, threshold=[secret]))
    (check,) = store.checks("dag/run-1")
    assert secret not in repr(check)
    assert REDACTED in check["reason"] and check["value"] == {"dsn": f"password={REDACTED}"}


def test_schema_name_must_be_an_identifier(scratch_app_dsn):
    with pytest.raises(ValueError, match="plain lower-case identifier"):
        EvidenceStore(None, "evil; DROP TABLE x")


def test_a_task_that_failed_without_a_check_makes_the_outcome_failed(store):
    store.record("dag/run-1", "init_db", CheckResult("db.connect", "pass", "connected"))
    assert store.close_rehearsal("dag/run-1", failed_tasks=["deploy.service_names"]) == {"pass": 1}
    assert store.rehearsal("dag/run-1")["outcome"] == "failed"
