"""Secret values known to this process, scrubbed from anything that leaves it as evidence.

Airflow masks connection passwords in task logs; the evidence store is our own output, so it
gets its own guard: every value registered here is replaced before a row is written.
"""
from __future__ import annotations

import json
from typing import Any

REDACTED = "***"
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret value; also hand it to Airflow's log masker when running in a task."""
    if not value or len(value) < 4:  # masking tiny strings would shred ordinary text
        return
    _secrets.add(value)
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # plain-function use outside Airflow
        return
    mask_secret(value)


def scrub(obj: Any) -> Any:
    """Return obj with every registered secret replaced, recursing into JSON-like structures."""
    if isinstance(obj, str):
        for secret in sorted(_secrets, key=len, reverse=True):
            obj = obj.replace(secret, REDACTED)
        return obj
    if isinstance(obj, dict):
        return {scrub(k): scrub(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [scrub(v) for v in obj]
    return obj


def contains_secret(obj: Any) -> bool:
    text = obj if isinstance(obj, str) else json.dumps(obj, default=str)
    return any(secret in text for secret in _secrets)
