"""DAG integrity (Astronomer's pattern): every file imports, every DAG is documented and retried,
and DAG files stay thin: no provider imported at parse time."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((ROOT / "dags").glob("*.py"))
PHASE_DAGS = {"staging_init_db": "init_db", "staging_deploy": "deploy"}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert {Path(f).stem for f in DAG_FILES} == set(dagbag.dag_ids)


def test_every_phase_dag_and_the_rollout_exist(dagbag):
    assert set(PHASE_DAGS) | {"staging_rollout"} <= set(dagbag.dag_ids)


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.stem)
def test_dag_is_documented_owned_tagged_and_retried(dagbag, dag_file):
    dag = dagbag.dags[dag_file.stem]
    assert dag.tags and "staging-rehearsal" in dag.tags
    assert dag.doc_md and dag.doc_md.strip().startswith(f"### {dag.dag_id}")
    assert dag.max_active_runs == 1
    assert "environment" in dag.params
    for task in dag.tasks:
        assert task.owner == "release-engineering", task.task_id
        assert task.retries >= 1, task.task_id


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.stem)
def test_dag_file_imports_no_provider_and_does_no_io(dag_file, tmp_path):
    # A fresh interpreter, so nothing imported by other tests hides an import of the file's own.
    probe = (
        "import json, runpy, socket, sys\n"
        "def refuse(*a, **k): raise RuntimeError('network I/O at parse time')\n"
        "socket.socket.connect = refuse\n"
        f"runpy.run_path({str(dag_file)!r})\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT / "dags")])}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    # Airflow itself reads every provider's get_provider_info; hooks and drivers must wait for a task.
    heavy = [m for m in loaded if m.split(".")[0] in {"psycopg2", "psycopg", "boto3", "botocore", "hvac"}
             or (m.startswith("airflow.providers.") and ".hooks" in m and m.split(".")[2] != "standard")]
    assert heavy == []


@pytest.mark.parametrize("dag_id", sorted(PHASE_DAGS))
def test_rollout_runs_the_same_group_as_each_phase_dag(dagbag, dag_id):
    group = PHASE_DAGS[dag_id]
    rollout = dagbag.dags["staging_rollout"]
    in_rollout = {t.task_id for t in rollout.tasks if t.task_id.startswith(f"{group}.")}
    alone = {t.task_id for t in dagbag.dags[dag_id].tasks if t.task_id.startswith(f"{group}.")}
    assert in_rollout == alone and alone


def test_rollout_orders_the_phases_and_closes_with_a_teardown(dagbag):
    rollout = dagbag.dags["staging_rollout"]
    # deploy starts only after init-db's final checkpoint
    for first in ("deploy.identify_release", "deploy.check_secrets", "deploy.service_names"):
        assert "init_db.verify" in rollout.get_task(first).upstream_task_ids, first
    open_task = rollout.get_task("open_rehearsal")
    assert open_task.downstream_task_ids >= {"init_db.connect", "close_rehearsal"}
    assert rollout.get_task("close_rehearsal").is_teardown
    verify = rollout.get_task("init_db.verify")
    assert verify.upstream_task_ids - {"open_rehearsal"} == {"init_db.build_hnsw_indexes", "init_db.set_ef_search",
                                        "init_db.run_migrations"}
