"""The deploy phase (plan STEPs 0, 1, 3) as a TaskGroup; its dependencies mirror the checkpoints.

identify_release -> checkout_release --\\
check_secrets --------------------------> deploy_service[each service] -> verify_service[each service]

One mapped task instance per service of the profile: each is retried, logged and recorded alone.
Secrets are read inside deploy_service and go only into the service's environment.
"""
from __future__ import annotations

from typing import Any

from airflow.sdk import task, task_group

from rehearsal.checkpoint import run_checkpoint

PHASE = "deploy"


def _service(profile, name: str):
    return next(s for s in profile.deploy.services if s.name == name)


@task
def identify_release(run: dict[str, Any]) -> dict[str, Any]:
    """STEP 0: the ref resolves to one commit, the tree is clean, the required files are there."""
    from rehearsal.work import deploy

    return run_checkpoint(run, PHASE, "release.identified", lambda p: deploy.identify_release(p.release))


@task
def check_secrets(run: dict[str, Any]) -> dict[str, Any]:
    """STEP 1: every secret path readable and every required key non-empty (names only, never values)."""
    from rehearsal.work import deploy

    return run_checkpoint(run, PHASE, "secrets.readable", lambda p: deploy.check_secrets(p.secrets))


@task
def checkout_release(run: dict[str, Any], identified: dict[str, Any]) -> dict[str, Any]:
    """STEP 0: the working tree at exactly the identified commit."""
    from rehearsal.work import deploy

    commit = identified["value"]["commit"]
    return run_checkpoint(run, PHASE, "release.checked_out", lambda p: deploy.checkout_release(p.release, commit))


@task
def service_names(run: dict[str, Any]) -> list[str]:
    return [s["name"] for s in run["profile"]["deploy"]["services"]]


@task(map_index_template="{{ service_name }}")
def deploy_service(run: dict[str, Any], service_name: str) -> dict[str, Any]:
    """STEP 3: build, stop the old process, start with its secrets in the environment, wait until ready."""
    from rehearsal.work import deploy

    return run_checkpoint(run, PHASE, f"deploy.{service_name}.started", lambda p: deploy.deploy_service(
        _service(p, service_name), p.release, p.secrets, p.deploy.run_dir))


@task(map_index_template="{{ service_name }}")
def verify_service(run: dict[str, Any], service_name: str) -> dict[str, Any]:
    """STEP 3 checkpoint: running, answering, /metrics exposed, connected to the database."""
    from rehearsal.work import deploy

    return run_checkpoint(run, PHASE, f"deploy.{service_name}.verified", lambda p: deploy.verify_service(
        _service(p, service_name), p.deploy.run_dir))


def deploy_group(run, group_id: str = "deploy"):
    @task_group(group_id=group_id, tooltip="STEPs 0, 1, 3: release, secrets, services")
    def deploy(run):
        checked_out = checkout_release(run, identify_release(run))
        names = service_names(run)
        started = deploy_service.partial(run=run).expand(service_name=names)
        [checked_out, check_secrets(run)] >> started
        started >> verify_service.partial(run=run).expand(service_name=names)

    return deploy(run)
