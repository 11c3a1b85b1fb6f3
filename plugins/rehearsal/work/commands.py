"""How profile commands become processes: argv lists (never a shell), paths relative to a base."""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path


def resolve_argv(argv: Sequence[str]) -> list[str]:
    """`python` means the interpreter running the task, not whatever is first on PATH."""
    argv = list(argv)
    if argv and argv[0] == "python":
        argv[0] = sys.executable
    return argv


def resolve_dir(path: str | None, base: Path) -> Path:
    if not path:
        return base
    candidate = Path(path)
    return candidate if candidate.is_absolute() else base / candidate


def resolve_env(env: Mapping[str, str], base: Path) -> dict[str, str]:
    """Variables ending in PATH (PYTHONPATH, ...) hold paths relative to `base`."""
    resolved = {}
    for key, value in env.items():
        if key.endswith("PATH"):
            value = os.pathsep.join(str(base / p) if p and not os.path.isabs(p) else p for p in value.split(os.pathsep))
        resolved[key] = value
    return resolved
