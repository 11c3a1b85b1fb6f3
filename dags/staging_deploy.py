"""
### staging_deploy — the deploy phase alone (plan STEPs 0, 1, 3)

Pins the release (the ref resolves to one commit, the tree is clean, the required files are
present) and checks it out; proves every Vault path is readable and every required key is set,
without ever showing a value; then, for each service of the profile, builds it, stops the previous
process (PID files honoured), starts the new one with its secrets in its environment and waits until
it answers — no fixed sleeps. Finally checks each service is up, exposes /metrics and reached the
database. Running it again replaces the processes cleanly.

Trigger with `environment` = a profile (`local`, `staging`) and optionally `release_ref`.
"""
from pathlib import Path

from airflow.sdk import dag

from rehearsal.groups.deploy import deploy_group
from rehearsal.groups.lifecycle import compose, dag_settings


@dag(
    dag_id=Path(__file__).stem,
    doc_md=__doc__,
    schedule=None,
    **dag_settings("phase:deploy"),
)
def staging_deploy():
    compose([deploy_group])


staging_deploy()
