"""The evidence store: every checkpoint's result, keyed by rehearsal, durable across runs.

It lives in a dedicated schema of a Postgres that every worker reaches (the profile's
evidence connection), so later phases, the decide phase and next night's baseline can read it.
Works on any DB-API connection of psycopg2 or psycopg 3.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from rehearsal.paths import SQL_DIR
from rehearsal.redaction import scrub

Status = Literal["pass", "fail", "warn", "inconclusive"]
STATUSES: tuple[str, ...] = ("pass", "fail", "warn", "inconclusive")
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
_SCHEMA_LOCK = 7_310_001  # advisory lock key: workers creating the schema at once must not race


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class CheckResult:
    """One checkpoint's outcome: what was measured, against what, and why it passed or not."""

    check_id: str
    status: Status
    reason: str
    value: Any = None
    threshold: Any = None
    started_at: datetime = field(default_factory=utcnow)
    finished_at: datetime = field(default_factory=utcnow)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")

    def summary(self) -> dict[str, Any]:
        """Small, JSON-safe form for XCom."""
        data = asdict(self)
        data["started_at"] = self.started_at.isoformat()
        data["finished_at"] = self.finished_at.isoformat()
        return scrub(data)


class CheckFailed(Exception):
    """Raised by work functions when a checkpoint fails for a reason worth recording as evidence."""

    def __init__(self, result: CheckResult):
        super().__init__(f"{result.check_id}: {result.reason}")
        self.result = result


def rehearsal_id_for(dag_id: str, run_id: str) -> str:
    return f"{dag_id}/{run_id}"


class EvidenceStore:
    def __init__(self, conn, schema: str = "rehearsal"):
        if not _IDENTIFIER.match(schema):
            raise ValueError(f"evidence schema {schema!r} is not a plain lower-case identifier")
        self.conn = conn
        self.schema = schema

    def _execute(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self.conn.cursor() as cur:
            cur.execute(sql.replace("{schema}", self.schema), params)
            rows = cur.fetchall() if cur.description else []
        self.conn.commit()
        return rows

    def ensure_schema(self) -> None:
        ddl = (SQL_DIR / "evidence" / "schema.sql").read_text().replace("{schema}", self.schema)
        with self.conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            cur.execute(ddl)
        self.conn.commit()

    def open_rehearsal(self, rehearsal_id: str, dag_id: str, run_id: str, environment: str,
                       profile: dict[str, Any]) -> None:
        """Create the rehearsal's row; re-opening (a retried task) keeps the original start time."""
        self._execute(
            """INSERT INTO {schema}.rehearsal (rehearsal_id, dag_id, run_id, environment, profile)
               VALUES (%s, %s, %s, %s, %s)
               ON CONFLICT (rehearsal_id) DO UPDATE SET environment = EXCLUDED.environment,
                                                       profile = EXCLUDED.profile""",
            (rehearsal_id, dag_id, run_id, environment, json.dumps(scrub(profile))),
        )

    def record(self, rehearsal_id: str, phase: str, result: CheckResult, *, attempt: int = 1,
               task_id: str | None = None) -> None:
        """Upsert a checkpoint result; a retry's newer result replaces the earlier attempt's."""
        self._execute(
            """INSERT INTO {schema}.evidence (rehearsal_id, phase, check_id, status, value, threshold,
                                              reason, started_at, finished_at, attempt, task_id)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (rehearsal_id, phase, check_id) DO UPDATE SET
                 status = EXCLUDED.status, value = EXCLUDED.value, threshold = EXCLUDED.threshold,
                 reason = EXCLUDED.reason, started_at = EXCLUDED.started_at,
                 finished_at = EXCLUDED.finished_at, attempt = EXCLUDED.attempt, task_id = EXCLUDED.task_id""",
            (rehearsal_id, phase, result.check_id, result.status,
             json.dumps(scrub(result.value), default=str), json.dumps(scrub(result.threshold), default=str),
             scrub(result.reason), result.started_at, result.finished_at, attempt, task_id),
        )

    def close_rehearsal(self, rehearsal_id: str, failed_tasks: tuple[str, ...] | list[str] = ()) -> dict[str, int]:
        """Stamp the end time and the outcome; return the checkpoint status counts.

        "failed" when a check failed or when a task failed without recording one (a crash before
        its checkpoint ran must not read as a clean rehearsal); "completed" otherwise.
        """
        counts = self.status_counts(rehearsal_id)
        outcome = "failed" if counts.get("fail") or failed_tasks else "completed"
        self._execute("UPDATE {schema}.rehearsal SET finished_at = now(), outcome = %s WHERE rehearsal_id = %s",
                      (outcome, rehearsal_id))
        return counts

    def status_counts(self, rehearsal_id: str) -> dict[str, int]:
        rows = self._execute("SELECT status, count(*) FROM {schema}.evidence WHERE rehearsal_id = %s GROUP BY status",
                             (rehearsal_id,))
        return {status: int(n) for status, n in rows}

    def checks(self, rehearsal_id: str) -> list[dict[str, Any]]:
        rows = self._execute(
            """SELECT phase, check_id, status, value, threshold, reason, started_at, finished_at, attempt
                 FROM {schema}.evidence WHERE rehearsal_id = %s ORDER BY started_at, check_id""",
            (rehearsal_id,),
        )
        keys = ("phase", "check_id", "status", "value", "threshold", "reason", "started_at", "finished_at", "attempt")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def rehearsal(self, rehearsal_id: str) -> dict[str, Any] | None:
        rows = self._execute(
            """SELECT rehearsal_id, dag_id, run_id, environment, started_at, finished_at, outcome
                 FROM {schema}.rehearsal WHERE rehearsal_id = %s""", (rehearsal_id,))
        keys = ("rehearsal_id", "dag_id", "run_id", "environment", "started_at", "finished_at", "outcome")
        return dict(zip(keys, rows[0], strict=True)) if rows else None

    def latest_rehearsal_id(self, dag_id: str | None = None) -> str | None:
        rows = self._execute(
            "SELECT rehearsal_id FROM {schema}.rehearsal WHERE %s::text IS NULL OR dag_id = %s ORDER BY started_at DESC LIMIT 1",
            (dag_id, dag_id))
        return rows[0][0] if rows else None
