"""
### staging_rollout — the whole staging rehearsal, every phase in order

The plan's runbook end to end, one TaskGroup per phase (the same groups the phase DAGs run),
sharing one rehearsal id in the evidence store. Phases so far: init-db (STEP 2), then
deploy (STEPs 0, 1, 3).

Runs nightly; trigger it from the UI with another `environment`, or from a terminal:
`airflow dags test staging_rollout` (or `make rehearsal` on the embedded stack).
"""
from pathlib import Path

import pendulum
from airflow.sdk import dag

from rehearsal.groups.deploy import deploy_group
from rehearsal.groups.init_db import init_db_group
from rehearsal.groups.lifecycle import compose, dag_settings


@dag(
    dag_id=Path(__file__).stem,
    doc_md=__doc__,
    schedule="0 2 * * *",
    start_date=pendulum.datetime(2026, 12, 1, tz="UTC"),
    **dag_settings("rollout"),
)
def staging_rollout():
    compose([init_db_group, deploy_group])


staging_rollout()
