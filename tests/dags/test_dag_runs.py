"""Whole DAG runs in-process with dag.test(): task states, the evidence written, no secret leaked."""
from __future__ import annotations

import json
import os

import psycopg2
import pytest
import yaml

from rehearsal.paths import ENVIRONMENTS_DIR
from stackenv import conn_dsn


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ENVIRONMENTS_DIR.parents[1] / "dags"))


@pytest.fixture
def scratch_profile(tmp_path, scratch_database, monkeypatch):
    """The local profile pointed at a scratch database through its own Connections."""
    for conn_id, source in (("SCRATCH_DB", "AIRFLOW_CONN_STAGING_DB"), ("SCRATCH_DB_ADMIN", "AIRFLOW_CONN_STAGING_DB_ADMIN")):
        conn = json.loads(os.environ[source])
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id}", json.dumps({**conn, "schema": scratch_database}))
    data = yaml.safe_load((ENVIRONMENTS_DIR / "local.yaml").read_text())
    data["name"] = "scratch"
    data["database"].update(conn_id="scratch_db", admin_conn_id="scratch_db_admin")
    path = tmp_path / "scratch.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def evidence_rows(rehearsal_id: str) -> tuple[dict, list[dict]]:
    conn = psycopg2.connect(conn_dsn("AIRFLOW_CONN_REHEARSAL_EVIDENCE"))
    with conn, conn.cursor() as cur:
        cur.execute("SELECT row_to_json(r) FROM rehearsal.rehearsal r WHERE rehearsal_id = %s", (rehearsal_id,))
        (rehearsal,) = cur.fetchone()
        cur.execute("SELECT row_to_json(e) FROM rehearsal.evidence e WHERE rehearsal_id = %s", (rehearsal_id,))
        checks = [row[0] for row in cur.fetchall()]
    conn.close()
    return rehearsal, checks


def states(dag_run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in dag_run.get_task_instances()}


INIT_DB_CHECKS = {"db.connect", "db.extension", "db.vector_version", "db.schema", "db.hnsw_indexes",
                  "db.ef_search", "db.migrations", "db.verify"}


@pytest.mark.parametrize("dag_id", ["staging_init_db", "staging_rollout"])
def test_run_succeeds_and_records_every_checkpoint(dagbag, dag_id, scratch_profile, capfd):
    run = dagbag.dags[dag_id].test(run_conf={"environment": scratch_profile})
    assert run.state == "success"
    assert set(states(run).values()) == {"success"}
    rehearsal, checks = evidence_rows(f"{dag_id}/{run.run_id}")
    assert rehearsal["environment"] == scratch_profile and rehearsal["outcome"] == "completed"
    assert rehearsal["profile"]["database"]["conn_id"] == "scratch_db"
    assert {c["check_id"] for c in checks} == INIT_DB_CHECKS
    assert {c["status"] for c in checks} == {"pass"} and {c["phase"] for c in checks} == {"init_db"}

    # No password in the evidence, the task output, or the XComs.
    password = json.loads(os.environ["AIRFLOW_CONN_STAGING_DB"])["password"]
    output = capfd.readouterr()
    assert password not in json.dumps([rehearsal, checks])
    assert password not in output.out + output.err
    xcoms = [ti.xcom_pull(task_ids=ti.task_id) for ti in run.get_task_instances()]
    assert xcoms and password not in json.dumps(xcoms, default=str)


def test_second_run_changes_nothing(dagbag, scratch_profile):
    dag = dagbag.dags["staging_init_db"]
    first = dag.test(run_conf={"environment": scratch_profile})
    second = dag.test(run_conf={"environment": scratch_profile})
    assert first.state == second.state == "success"
    _, checks = evidence_rows(f"staging_init_db/{second.run_id}")
    by_id = {c["check_id"]: c for c in checks}
    assert {v["action"] for v in by_id["db.hnsw_indexes"]["value"].values()} == {"kept"}
    _, first_checks = evidence_rows(f"staging_init_db/{first.run_id}")
    first_oids = {k: v["oid"] for k, v in {c["check_id"]: c for c in first_checks}["db.hnsw_indexes"]["value"].items()}
    assert {k: v["oid"] for k, v in by_id["db.hnsw_indexes"]["value"].items()} == first_oids
    assert by_id["db.ef_search"]["value"]["action"] == "already set"


def test_unknown_environment_fails_at_the_start_and_runs_nothing(dagbag):
    run = dagbag.dags["staging_rollout"].test(run_conf={"environment": "no-such-env"})
    assert run.state == "failed"
    got = states(run)
    assert got["open_rehearsal"] == "failed"
    assert {s for t, s in got.items() if t != "open_rehearsal"} == {"upstream_failed"}


def test_a_failing_checkpoint_fails_the_run_and_is_recorded(dagbag, scratch_profile, tmp_path):
    data = yaml.safe_load(open(scratch_profile))
    data["database"]["min_vector_version"] = "99.0.0"
    path = tmp_path / "too-new.yaml"
    path.write_text(yaml.safe_dump(data))
    run = dagbag.dags["staging_rollout"].test(run_conf={"environment": str(path)})
    assert run.state == "failed"
    got = states(run)
    assert got["init_db.check_vector_version"] == "failed"
    assert got["init_db.apply_schema"] == "upstream_failed"
    assert got["close_rehearsal"] == "success"  # the teardown still closes the record
    rehearsal, checks = evidence_rows(f"staging_rollout/{run.run_id}")
    failed = [c for c in checks if c["status"] == "fail"]
    assert [c["check_id"] for c in failed] == ["db.vector_version"]
    assert "older than 99.0.0" in failed[0]["reason"]
    assert failed[0]["attempt"] == 1  # a failed check is final: no retry
    assert rehearsal["outcome"] == "failed"
