"""Fault injection for rehearsing a NO-GO: off by default, chosen once at start from configuration.

Syntax (env TARGET_FAULTS, comma-separated `name=value`; empty or unset means no faults):

    TARGET_FAULTS="similarity_latency_seconds=2.5,error_rate=0.2,seed=7,
                   memory_leak_kb_per_request=512,worker_failures=3,wrong_order=1"

Switches (each exists so a later rehearsal check can be shown to catch it):
    similarity_latency_seconds  float >= 0   added inside the timed vector search of /api/similarity
                                             (the HighVectorSearchLatency alert / load p95 catch it)
    error_rate                  0..1         fraction of /api/* requests answered 500
    seed                        int          seed of the error_rate draw (reproducible rehearsals)
    memory_leak_kb_per_request  int >= 0     resident memory kept per /api/* request (leak check)
    worker_failures             int >= 0|all the first N TrustMath runs fail ("all": every run)
    wrong_order                 0|1          /api/similarity returns results farthest first

If TARGET_FAULTS is unset, a FAULTS file next to the release's VERSION file is read instead (the
release builder can bake a broken candidate); TARGET_FAULTS set to "" always means no faults.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from pathlib import Path

ENV_VAR = "TARGET_FAULTS"
RELEASE_FAULTS_FILE = Path(__file__).resolve().parents[1] / "FAULTS"
ALL_RUNS = -1  # worker_failures=all


class FaultConfigError(ValueError):
    """A fault switch that is unknown or has a bad value; services refuse to start on it."""


@dataclass(frozen=True)
class Faults:
    similarity_latency_seconds: float = 0.0
    error_rate: float = 0.0
    seed: int | None = None
    memory_leak_kb_per_request: int = 0
    worker_failures: int = 0
    wrong_order: bool = False

    @property
    def active(self) -> dict[str, object]:
        """The switches that differ from the default (for logs and the aura_fault_active gauge)."""
        default = Faults()
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) != getattr(default, f.name) and f.name != "seed"}


def _float(name: str, raw: str, low: float, high: float = math.inf) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise FaultConfigError(f"fault switch {name}={raw!r}: not a number") from None
    if not (low <= value <= high) or math.isnan(value):
        bound = f"between {low:g} and {high:g}" if high != math.inf else f">= {low:g}"
        raise FaultConfigError(f"fault switch {name}={raw!r}: must be {bound}")
    return value


def _int(name: str, raw: str, low: int | None = 0) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise FaultConfigError(f"fault switch {name}={raw!r}: not an integer") from None
    if low is not None and value < low:
        raise FaultConfigError(f"fault switch {name}={raw!r}: must be >= {low}")
    return value


def _bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise FaultConfigError(f"fault switch {name}={raw!r}: must be 0 or 1")


def _worker_failures(name: str, raw: str) -> int:
    return ALL_RUNS if raw.strip().lower() == "all" else _int(name, raw)


_PARSERS = {
    "similarity_latency_seconds": lambda n, v: _float(n, v, 0.0),
    "error_rate": lambda n, v: _float(n, v, 0.0, 1.0),
    "seed": lambda n, v: _int(n, v, low=None),
    "memory_leak_kb_per_request": lambda n, v: _int(n, v),
    "worker_failures": _worker_failures,
    "wrong_order": _bool,
}


def parse_faults(text: str | None) -> Faults:
    """Parse a fault specification; raises FaultConfigError naming the bad switch."""
    values: dict[str, object] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not raw.strip():
            raise FaultConfigError(f"fault switch {item!r}: expected name=value")
        if name not in _PARSERS:
            raise FaultConfigError(f"unknown fault switch {name!r}; known switches: {', '.join(_PARSERS)}")
        if name in values:
            raise FaultConfigError(f"fault switch {name!r} given twice")
        values[name] = _PARSERS[name](name, raw.strip())
    return Faults(**values)  # type: ignore[arg-type]


def faults_from_environment() -> Faults:
    if ENV_VAR in os.environ:
        return parse_faults(os.environ[ENV_VAR])
    if RELEASE_FAULTS_FILE.is_file():
        return parse_faults(RELEASE_FAULTS_FILE.read_text().strip())
    return Faults()
