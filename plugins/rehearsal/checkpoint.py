"""Run one checkpoint inside a task and record its result in the evidence store.

A work function returns a CheckResult (pass / warn / inconclusive) or raises CheckFailed. Either
way the result is written before the task ends; a failed check fails the task without retries
(retrying cannot change a deterministic verdict), while an unexpected error (a refused
connection, say) is recorded as a failure and re-raised so Airflow's retries apply.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from rehearsal.evidence import CheckFailed, CheckResult, EvidenceStore, utcnow
from rehearsal.profile import Profile

log = logging.getLogger(__name__)


def record(run: dict[str, Any], profile: Profile, phase: str, result: CheckResult) -> None:
    from airflow.sdk import get_current_context

    from rehearsal.connections import postgres

    try:
        ti = get_current_context()["ti"]
        attempt, task_id = ti.try_number, ti.task_id
    except Exception:  # called outside a running task
        attempt, task_id = 1, None
    with postgres(profile.evidence.conn_id) as conn:
        EvidenceStore(conn, profile.evidence.schema_name).record(
            run["rehearsal_id"], phase, result, attempt=attempt, task_id=task_id)


def run_checkpoint(run: dict[str, Any], phase: str, check_id: str,
                   work: Callable[[Profile], CheckResult]) -> dict[str, Any]:
    from airflow.sdk.exceptions import AirflowFailException

    profile = Profile.from_snapshot(run["profile"])
    started = utcnow()
    failure: Exception | None = None
    try:
        result = work(profile)
    except CheckFailed as exc:
        result, failure = exc.result, exc
    except Exception as exc:
        result = CheckResult(check_id, "fail", reason=f"{type(exc).__name__}: {str(exc).strip() or 'no message'}")
        failure = exc
    result = dataclasses.replace(result, check_id=check_id, started_at=started, finished_at=utcnow())
    record(run, profile, phase, result)
    log.info("checkpoint %s: %s — %s", check_id, result.status.upper(), result.reason)
    if isinstance(failure, CheckFailed):
        raise AirflowFailException(f"{check_id} failed: {result.reason}")
    if failure is not None:
        raise failure
    return result.summary()
