"""
### staging_init_db — the init-db phase alone (plan STEP 2)

Connects to the profile's staging database, installs pgvector (>= 0.5.0 for HNSW), applies the
application's tables, builds the HNSW indexes concurrently (an index is rebuilt only when it is
invalid or carries the wrong options), sets `hnsw.ef_search`, runs the application's migrations
and verifies everything. Idempotent: a second run changes nothing.

Every checkpoint is recorded in the evidence store under this run's rehearsal id.
Trigger with `environment` = a profile name (`local`, `staging`) or a path to a profile.
"""
from pathlib import Path

from airflow.sdk import dag

from rehearsal.groups.init_db import init_db_group
from rehearsal.groups.lifecycle import compose, dag_settings


@dag(
    dag_id=Path(__file__).stem,
    doc_md=__doc__,
    schedule=None,
    **dag_settings("phase:init-db"),
)
def staging_init_db():
    compose([init_db_group])


staging_init_db()
