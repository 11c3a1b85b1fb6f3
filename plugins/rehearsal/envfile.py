"""Read the `export KEY=value` files the embedded stack writes (values JSON-quoted when not digits)."""
from __future__ import annotations

import json
from pathlib import Path


def read_exports(path: Path) -> dict[str, str]:
    exports: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            exports[key] = json.loads(value) if value.startswith('"') else value
    return exports
