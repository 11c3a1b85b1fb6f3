"""Where the project's non-Python assets live (they ship with the DAGs to every worker)."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INCLUDE = ROOT / "include"
SQL_DIR = INCLUDE / "sql"
ENVIRONMENTS_DIR = INCLUDE / "environments"
