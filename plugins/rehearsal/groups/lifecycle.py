"""What every rehearsal DAG shares: its Params, default args, and the open/close of the rehearsal.

`compose(phases)` lays out: open_rehearsal (validates the profile, opens the evidence record)
-> each phase's TaskGroup in order -> close_rehearsal (a teardown: it runs even when a phase
fails, and does not mask that failure in the run's final state).
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from airflow.sdk import Param, task

from rehearsal.profile import default_environment

DEFAULT_ARGS = {
    "owner": "release-engineering",
    "retries": 1,
    "retry_delay": timedelta(seconds=10),
}
TAGS = ["staging-rehearsal"]


def dag_settings(*tags: str) -> dict[str, Any]:
    """@dag arguments every rehearsal DAG shares: one run at a time, the trigger form, retries."""
    return {"catchup": False, "max_active_runs": 1, "default_args": DEFAULT_ARGS,
            "params": rehearsal_params(), "tags": [*TAGS, *tags]}


def rehearsal_params() -> dict[str, Param]:
    return {
        "environment": Param(
            default_environment(),
            type="string",
            minLength=1,
            title="Environment profile",
            description="A profile in include/environments/ (local, staging, ...) or a path to one. "
                        "The default comes from the deployment's REHEARSAL_ENVIRONMENT "
                        "(or the Variable rehearsal_environment).",
        ),
        "release_ref": Param(
            "",
            type="string",
            title="Release ref",
            description="Branch, tag or commit to rehearse; empty = the profile's release.ref.",
        ),
    }


@task
def open_rehearsal() -> dict[str, Any]:
    """Validate the profile once and hand its snapshot to every task (tasks share nothing else)."""
    from airflow.sdk import get_current_context
    from airflow.sdk.exceptions import AirflowFailException

    from rehearsal.connections import postgres
    from rehearsal.evidence import EvidenceStore, rehearsal_id_for
    from rehearsal.profile import ProfileError, load_profile

    ctx = get_current_context()
    environment = ctx["params"]["environment"]
    try:
        profile = load_profile(environment)
    except ProfileError as exc:
        raise AirflowFailException(f"Param environment={environment!r}: {exc}") from None
    if ref := (ctx["params"].get("release_ref") or "").strip():
        profile = profile.model_copy(update={"release": profile.release.model_copy(update={"ref": ref})})
    dag_id, run_id = ctx["dag"].dag_id, ctx["run_id"]
    run = {"rehearsal_id": rehearsal_id_for(dag_id, run_id), "environment": environment,
           "profile": profile.snapshot()}
    with postgres(profile.evidence.conn_id) as conn:
        store = EvidenceStore(conn, profile.evidence.schema_name)
        store.ensure_schema()
        store.open_rehearsal(run["rehearsal_id"], dag_id, run_id, environment, run["profile"])
    return run


@task
def close_rehearsal(run: dict[str, Any]) -> dict[str, Any]:
    """Stamp the rehearsal's end and outcome, and log its report so the task log reads as one."""
    import logging

    from airflow.sdk import get_current_context

    from rehearsal.connections import postgres
    from rehearsal.evidence import EvidenceStore
    from rehearsal.profile import Profile
    from rehearsal.report import report

    ti = get_current_context()["ti"]
    states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id]).get(ti.run_id, {})
    failed_tasks = sorted(task for task, state in states.items()
                          if state in ("failed", "upstream_failed") and task != ti.task_id)
    profile = Profile.from_snapshot(run["profile"])
    with postgres(profile.evidence.conn_id) as conn:
        EvidenceStore(conn, profile.evidence.schema_name).close_rehearsal(run["rehearsal_id"], failed_tasks)
    text, row = report(profile, run["rehearsal_id"])
    log = logging.getLogger(__name__)
    log.info("%s", text)
    if failed_tasks:
        log.warning("tasks that did not succeed: %s", ", ".join(failed_tasks))
    return {"rehearsal_id": run["rehearsal_id"], "outcome": row["outcome"], "failed_tasks": failed_tasks}


PhaseFactory = Callable[[Any], Any]


def compose(phases: list[PhaseFactory]) -> None:
    """Inside a @dag function: open -> phases in order -> close (teardown)."""
    run = open_rehearsal()
    previous = run
    for phase in phases:
        group = phase(run)
        previous >> group
        previous = group
    # A reusable @teardown decorator breaks on its second DAG (it stores its trigger rule on
    # itself), so the teardown is marked per DAG.
    previous >> close_rehearsal(run).as_teardown(setups=run)
