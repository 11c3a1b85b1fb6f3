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


def test_init_db_run_succeeds_and_records_every_checkpoint(dagbag, scratch_profile, capfd, caplog):
    dag_id = "staging_init_db"
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
    logs = output.out + output.err + caplog.text
    assert "checkpoint db.connect: PASS" in logs  # the task logs were captured, so the next line can fail
    assert password not in json.dumps([rehearsal, checks])
    assert password not in logs
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
    closing = next(ti for ti in run.get_task_instances() if ti.task_id == "close_rehearsal")
    summary = closing.xcom_pull(task_ids="close_rehearsal")
    assert summary["outcome"] == "failed"
    assert "init_db.check_vector_version" in summary["failed_tasks"]
    assert "init_db.verify" in summary["failed_tasks"]  # upstream_failed counts too


DEPLOY_CHECKS = {"release.identified", "secrets.readable", "release.checked_out",
                 *(f"deploy.{s}.{step}" for s in ("api", "worker", "web") for step in ("started", "verified"))}


def with_scratch_database(profile_path: str, monkeypatch) -> str:
    """Point the profile's own database connections at the database its services use."""
    database = json.loads(os.environ["AIRFLOW_VAR_REHEARSAL_LOCAL_SECRETS"])["secret/data/aura/staging/database"]["PGDATABASE"]
    for conn_id, source in (("DEPLOY_DB", "AIRFLOW_CONN_STAGING_DB"), ("DEPLOY_DB_ADMIN", "AIRFLOW_CONN_STAGING_DB_ADMIN")):
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id}", json.dumps({**json.loads(os.environ[source]), "schema": database}))
    data = yaml.safe_load(open(profile_path))
    data["database"].update(conn_id="deploy_db", admin_conn_id="deploy_db_admin")
    with open(profile_path, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False)
    return profile_path


def test_deploy_phase_run_records_every_checkpoint_and_leaks_no_secret(dagbag, deploy_profile, capfd, caplog):
    run = dagbag.dags["staging_deploy"].test(run_conf={"environment": deploy_profile})
    assert run.state == "success", states(run)
    assert {s for s in states(run).values()} == {"success"}
    rehearsal, checks = evidence_rows(f"staging_deploy/{run.run_id}")
    assert {c["check_id"] for c in checks} == DEPLOY_CHECKS
    assert {c["status"] for c in checks} == {"pass"}
    by_id = {c["check_id"]: c for c in checks}
    assert by_id["release.identified"]["value"]["ref"] == "v1.1.0"
    assert by_id["deploy.api.started"]["value"]["version"] == "1.1.0"

    local_secrets = json.loads(os.environ["AIRFLOW_VAR_REHEARSAL_LOCAL_SECRETS"])
    secret_values = [local_secrets["secret/data/aura/staging/database"]["PGPASSWORD"],
                     local_secrets["secret/data/aura/staging/backup"]["AWS_SECRET_ACCESS_KEY"]]
    output = capfd.readouterr()
    logs = output.out + output.err + caplog.text
    assert "checkpoint deploy.api.started: PASS" in logs
    xcoms = json.dumps([ti.xcom_pull(task_ids=ti.task_id, map_indexes=ti.map_index)
                        for ti in run.get_task_instances()], default=str)
    for secret in secret_values:
        assert secret not in json.dumps([rehearsal, checks])
        assert secret not in logs
        assert secret not in xcoms


def test_unknown_release_ref_param_stops_the_deploy(dagbag, deploy_profile):
    run = dagbag.dags["staging_deploy"].test(run_conf={"environment": deploy_profile, "release_ref": "v9.9.9"})
    assert run.state == "failed"
    got = states(run)
    assert got["deploy.identify_release"] == "failed"
    assert got["deploy.deploy_service"] == "upstream_failed"
    _, checks = evidence_rows(f"staging_deploy/{run.run_id}")
    failed = {c["check_id"]: c["reason"] for c in checks if c["status"] == "fail"}
    assert list(failed) == ["release.identified"] and "v9.9.9" in failed["release.identified"]


def test_rollout_runs_init_db_then_deploy(dagbag, deploy_profile, monkeypatch):
    profile = with_scratch_database(deploy_profile, monkeypatch)
    run = dagbag.dags["staging_rollout"].test(run_conf={"environment": profile, "release_ref": "v1.0.0"})
    assert run.state == "success", states(run)
    rehearsal, checks = evidence_rows(f"staging_rollout/{run.run_id}")
    assert {c["check_id"] for c in checks} == INIT_DB_CHECKS | DEPLOY_CHECKS
    assert {c["phase"] for c in checks} == {"init_db", "deploy"}
    by_id = {c["check_id"]: c for c in checks}
    assert by_id["deploy.api.started"]["value"]["version"] == "1.0.0"  # the Param chose the release
    assert rehearsal["profile"]["release"]["ref"] == "v1.0.0"
    last_init = max(c["finished_at"] for c in checks if c["phase"] == "init_db")
    first_deploy = min(c["started_at"] for c in checks if c["phase"] == "deploy")
    assert last_init <= first_deploy


@pytest.mark.parametrize("conf, field", [({"environment": 5}, "environment"), ({"environment": ""}, "environment"),
                                         ({"release_ref": ["v1"]}, "release_ref")])
def test_a_malformed_param_is_refused_before_any_task_runs(dagbag, conf, field):
    from airflow.sdk.definitions.param import ParamValidationError

    with pytest.raises(ParamValidationError, match=field):
        dagbag.dags["staging_rollout"].test(run_conf=conf)
