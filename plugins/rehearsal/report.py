"""Plain-text report of one rehearsal's evidence, for terminals and task logs."""
from __future__ import annotations

from typing import Any

from rehearsal.connections import describe, postgres
from rehearsal.evidence import EvidenceStore
from rehearsal.profile import Profile

MARK = {"pass": "PASS", "fail": "FAIL", "warn": "WARN", "inconclusive": "INCONCLUSIVE"}


def render(rehearsal: dict[str, Any], checks: list[dict[str, Any]], where: str) -> str:
    lines = [f"rehearsal {rehearsal['rehearsal_id']}",
             f"  environment {rehearsal['environment']}, outcome {rehearsal['outcome'] or 'still running'}", ""]
    width = max((len(c["check_id"]) for c in checks), default=10)
    for c in checks:
        lines.append(f"  {MARK[c['status']]:<12} {c['phase']:<14} {c['check_id']:<{width}}  {c['reason']}")
    if not checks:
        lines.append("  (no checkpoint recorded)")
    lines += ["", f"evidence: {where}",
              f"  SELECT * FROM evidence WHERE rehearsal_id = '{rehearsal['rehearsal_id']}';"]
    return "\n".join(lines)


def report(profile: Profile, rehearsal_id: str | None = None, dag_id: str | None = None) -> tuple[str, dict | None]:
    schema = profile.evidence.schema_name
    with postgres(profile.evidence.conn_id) as conn:
        store = EvidenceStore(conn, schema)
        store.ensure_schema()
        rehearsal_id = rehearsal_id or store.latest_rehearsal_id(dag_id)
        if rehearsal_id is None:
            return "no rehearsal recorded yet", None
        row = store.rehearsal(rehearsal_id)
        if row is None:
            return f"no rehearsal {rehearsal_id!r} in the evidence store", None
        checks = store.checks(rehearsal_id)
    where = f"schema {schema} of {describe(profile.evidence.conn_id)} (Connection {profile.evidence.conn_id!r})"
    return render(row, checks, where), row
