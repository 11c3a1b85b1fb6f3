"""Apply the target's pending SQL migrations, in order: the local stand-in for `prisma migrate deploy`.

    python -m aura_target.migrate [--dir MIGRATIONS_DIR]

Connection from the libpq environment (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE): never argv.
Each migration runs in its own transaction together with its row in _aura_migrations, so a failed
migration leaves neither its changes nor its record. Exit 0 when all are applied, 1 otherwise.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import psycopg

DEFAULT_DIR = Path(__file__).resolve().parents[1] / "migrations"


def pending(conn: psycopg.Connection, folder: Path) -> list[Path]:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS _aura_migrations ("
        " name TEXT PRIMARY KEY, sha256 TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    )
    done = dict(conn.execute("SELECT name, sha256 FROM _aura_migrations").fetchall())
    todo = []
    for path in sorted(folder.glob("*.sql")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if path.name in done and done[path.name] != digest:
            raise SystemExit(f"migration {path.name} was changed after it was applied "
                             f"(recorded sha256 {done[path.name][:12]}, file {digest[:12]})")
        if path.name not in done:
            todo.append(path)
    return todo


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    args = parser.parse_args()
    if not args.dir.is_dir():
        print(f"migrations folder {args.dir} does not exist", file=sys.stderr)
        return 1
    with psycopg.connect(autocommit=True) as conn:
        todo = pending(conn, args.dir)
        for path in todo:
            try:
                with conn.transaction():
                    conn.execute(path.read_text())
                    conn.execute("INSERT INTO _aura_migrations (name, sha256) VALUES (%s, %s)",
                                 (path.name, hashlib.sha256(path.read_bytes()).hexdigest()))
            except psycopg.Error as exc:
                print(f"migration {path.name} failed: {exc}".strip(), file=sys.stderr)
                return 1
            print(f"applied {path.name}")
        print(f"{len(todo)} migration(s) applied; database is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
