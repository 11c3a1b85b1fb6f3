"""init-db (plan STEP 2): pgvector, the application's tables, HNSW indexes, ef_search, migrations.

Every function takes an open DB-API connection in autocommit mode (CREATE INDEX CONCURRENTLY
cannot run in a transaction) and returns a CheckResult, or raises CheckFailed with the evidence
of what is wrong. Every step is idempotent: a second run changes nothing.
"""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rehearsal.evidence import CheckFailed, CheckResult
from rehearsal.paths import ROOT, SQL_DIR
from rehearsal.profile import Command, DatabaseSettings, HnswSettings, VectorIndex
from rehearsal.work.commands import resolve_argv, resolve_dir, resolve_env

SCHEMA_SQL_DIR = SQL_DIR / "init_db"
_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")


def _q(identifier: str) -> str:
    """Quote an identifier the profile has already restricted to [a-z_][a-z0-9_]*."""
    if not _IDENT.match(identifier):
        raise ValueError(f"not a plain identifier: {identifier!r}")
    return f'"{identifier}"'


def _one(conn, sql: str, params: tuple = ()) -> tuple | None:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchone() if cur.description else None


def _all(conn, sql: str, params: tuple = ()) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def _exec(conn, sql: str, params: tuple = ()) -> None:
    with conn.cursor() as cur:
        cur.execute(sql, params)


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


# --------------------------------------------------------------------------------------------
# STEP 2.1: connect


def server_facts(conn) -> CheckResult:
    version, version_num, database, user, in_recovery = _one(
        conn, "SELECT version(), current_setting('server_version_num')::int, current_database(), "
              "current_user, pg_is_in_recovery()")
    value = {"version": version, "server_version_num": version_num, "database": database,
             "user": user, "in_recovery": in_recovery}
    if in_recovery:
        raise CheckFailed(CheckResult("db.connect", "fail", value=value,
                                      reason=f"{database} is a read-only standby; init-db needs the primary"))
    return CheckResult("db.connect", "pass", value=value,
                       reason=f"connected to {database} as {user}: {version.split(' on ')[0]}")


# --------------------------------------------------------------------------------------------
# STEP 2.2: the extension and its version


def install_extension(conn, extension: str = "vector") -> CheckResult:
    available = _one(conn, "SELECT default_version, installed_version FROM pg_available_extensions WHERE name = %s",
                     (extension,))
    database = _one(conn, "SELECT current_database()")[0]
    if available is None:
        raise CheckFailed(CheckResult(
            "db.extension", "fail", value={"extension": extension, "available": False},
            reason=f"extension {extension!r} is not available on the server of {database} "
                   f"(no {extension}.control in pg_available_extensions): install pgvector on the "
                   "server (plan Appendix A) or use a PostgreSQL build that ships it"))
    default_version, installed = available
    if installed is None:
        try:
            _exec(conn, f"CREATE EXTENSION IF NOT EXISTS {_q(extension)}")
        except Exception as exc:  # privilege errors differ between drivers; report the server's words
            user = _one(conn, "SELECT current_user")[0]
            raise CheckFailed(CheckResult(
                "db.extension", "fail", value={"extension": extension, "available": True, "user": user},
                reason=f"CREATE EXTENSION {extension} failed in {database} as {user}: {_first_line(exc)} "
                       "(pgvector is not a trusted extension: set database.admin_conn_id to a role that may "
                       "create it)")) from None
        action = "created"
    else:
        action = "already installed"
    version = _one(conn, "SELECT extversion FROM pg_extension WHERE extname = %s", (extension,))[0]
    return CheckResult("db.extension", "pass", value={"extension": extension, "version": version, "action": action},
                       reason=f"{extension} {version} {action} in {database}")


def check_vector_version(conn, extension: str, minimum: str) -> CheckResult:
    # The plan's `SELECT vector_version()` does not exist in pgvector: pg_extension is authoritative.
    row = _one(conn, "SELECT extversion FROM pg_extension WHERE extname = %s", (extension,))
    if row is None:
        raise CheckFailed(CheckResult("db.vector_version", "fail", threshold={"min": minimum},
                                      reason=f"extension {extension} is not installed"))
    installed = row[0]
    value = {"installed": installed}
    if version_tuple(installed) < version_tuple(minimum):
        raise CheckFailed(CheckResult(
            "db.vector_version", "fail", value=value, threshold={"min": minimum},
            reason=f"pgvector {installed} is older than {minimum}, the first release with HNSW: "
                   f"upgrade the extension (ALTER EXTENSION {extension} UPDATE after installing a newer build)"))
    return CheckResult("db.vector_version", "pass", value=value, threshold={"min": minimum},
                       reason=f"pgvector {installed} >= {minimum} (HNSW supported)")


# --------------------------------------------------------------------------------------------
# STEP 2.3: tables and btree indexes


def schema_files(folder: Path = SCHEMA_SQL_DIR) -> list[Path]:
    return sorted(folder.glob("*.sql"))


def apply_schema(conn, folder: Path = SCHEMA_SQL_DIR) -> CheckResult:
    """Run the DDL files in order, each in one transaction (all IF NOT EXISTS: re-runs are no-ops)."""
    applied = []
    for path in schema_files(folder):
        text = path.read_text()
        try:
            _exec(conn, "BEGIN")
            _exec(conn, text)
            _exec(conn, "COMMIT")
        except Exception as exc:
            _exec(conn, "ROLLBACK")
            raise CheckFailed(CheckResult(
                "db.schema", "fail", value={"file": path.name, "applied_before": applied},
                reason=f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} failed: "
                       f"{_first_line(exc)}")) from None
        applied.append({"file": path.name, "sha256": hashlib.sha256(text.encode()).hexdigest()[:16]})
    if not applied:
        raise CheckFailed(CheckResult("db.schema", "fail", reason=f"no .sql files in {folder}"))
    return CheckResult("db.schema", "pass", value={"files": applied},
                       reason=f"applied {len(applied)} DDL file(s): {', '.join(a['file'] for a in applied)}")


# --------------------------------------------------------------------------------------------
# HNSW indexes: built concurrently, checked, rebuilt only when invalid or mis-configured


def inspect_index(conn, name: str) -> dict[str, Any] | None:
    """The facts that decide whether an index is the one we want; None when it does not exist."""
    row = _one(conn, """
        SELECT c.oid::bigint, am.amname, t.relname, i.indisvalid AND i.indisready,
               coalesce(c.reloptions, '{}'), opc.opcname, a.attname
          FROM pg_class c
          JOIN pg_index i ON i.indexrelid = c.oid
          JOIN pg_class t ON t.oid = i.indrelid
          JOIN pg_am am ON am.oid = c.relam
          LEFT JOIN pg_opclass opc ON opc.oid = i.indclass[0]
          LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = i.indkey[0]
         WHERE c.relname = %s AND c.relkind = 'i'
           AND c.relnamespace = 'public'::regnamespace""", (name,))
    if row is None:
        return None
    oid, method, table, valid, options, opclass, column = row
    opts = dict(o.split("=", 1) for o in options)
    return {"oid": int(oid), "method": method, "table": table, "valid": bool(valid), "opclass": opclass,
            "column": column, "m": int(opts["m"]) if "m" in opts else None,
            "ef_construction": int(opts["ef_construction"]) if "ef_construction" in opts else None}


def index_mismatches(found: dict[str, Any], spec: VectorIndex, hnsw: HnswSettings) -> list[str]:
    # pgvector's defaults apply when an option is absent: m=16, ef_construction=64.
    expected = {"method": "hnsw", "table": spec.table, "column": spec.column, "opclass": hnsw.opclass,
                "m": hnsw.m, "ef_construction": hnsw.ef_construction}
    actual = {**found, "m": found["m"] or 16, "ef_construction": found["ef_construction"] or 64}
    problems = [f"{key} is {actual[key]!r}, expected {want!r}" for key, want in expected.items() if actual[key] != want]
    if not found["valid"]:
        problems.insert(0, "index is invalid (an interrupted concurrent build?)")
    return problems


def _create_index_sql(name: str, spec: VectorIndex, hnsw: HnswSettings) -> str:
    return (f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {_q(name)} ON {_q(spec.table)} "
            f"USING hnsw ({_q(spec.column)} {hnsw.opclass}) "
            f"WITH (m = {int(hnsw.m)}, ef_construction = {int(hnsw.ef_construction)})")


def _build(conn, name: str, spec: VectorIndex, hnsw: HnswSettings) -> None:
    """Build concurrently; a failed build leaves an invalid index behind, which we drop."""
    try:
        _exec(conn, _create_index_sql(name, spec, hnsw))
    except Exception:
        _exec(conn, f"DROP INDEX CONCURRENTLY IF EXISTS {_q(name)}")
        raise


def ensure_hnsw_indexes(conn, db: DatabaseSettings) -> CheckResult:
    """Make each HNSW index exist, be valid and carry the profile's options.

    Unlike the plan's DROP + CREATE, a healthy index is never touched, and a mis-configured one
    keeps serving queries while its replacement is built under a temporary name and swapped in.
    """
    _exec(conn, f"SET maintenance_work_mem = '{db.maintenance_work_mem}'")
    _exec(conn, f"SET statement_timeout = {int(db.index_build_timeout_seconds * 1000)}")
    report: dict[str, Any] = {}
    try:
        for spec in db.hnsw_indexes:
            found = inspect_index(conn, spec.name)
            if found is None:
                _build(conn, spec.name, spec, db.hnsw)
                action, why = "created", "did not exist"
            elif not (problems := index_mismatches(found, spec, db.hnsw)):
                action, why = "kept", "valid with the expected options"
            elif not found["valid"]:
                # An invalid index serves no query: dropping it first loses nothing.
                _exec(conn, f"DROP INDEX CONCURRENTLY IF EXISTS {_q(spec.name)}")
                _build(conn, spec.name, spec, db.hnsw)
                action, why = "rebuilt", "; ".join(problems)
            else:
                temp = f"{spec.name[:50]}_rebuild"
                _exec(conn, f"DROP INDEX CONCURRENTLY IF EXISTS {_q(temp)}")  # leftover of an interrupted swap
                _build(conn, temp, spec, db.hnsw)
                _exec(conn, f"DROP INDEX CONCURRENTLY {_q(spec.name)}")
                _exec(conn, f"ALTER INDEX {_q(temp)} RENAME TO {_q(spec.name)}")
                action, why = "rebuilt", "; ".join(problems)
            after = inspect_index(conn, spec.name)
            remaining = index_mismatches(after, spec, db.hnsw) if after else ["missing after build"]
            if remaining:
                raise CheckFailed(CheckResult(
                    "db.hnsw_indexes", "fail", value={**report, spec.name: after},
                    reason=f"{spec.name} is still wrong after {action}: {'; '.join(remaining)}"))
            report[spec.name] = {**after, "action": action, "why": why}
    except CheckFailed:
        raise
    except Exception as exc:
        raise CheckFailed(CheckResult(
            "db.hnsw_indexes", "fail", value=report,
            reason=f"building HNSW index failed: {_first_line(exc)} (no index was dropped)")) from None
    finally:
        _exec(conn, "RESET statement_timeout")
        _exec(conn, "RESET maintenance_work_mem")
    actions = ", ".join(f"{name} {r['action']}" for name, r in report.items())
    return CheckResult("db.hnsw_indexes", "pass", value=report,
                       threshold={"m": db.hnsw.m, "ef_construction": db.hnsw.ef_construction,
                                  "opclass": db.hnsw.opclass},
                       reason=f"HNSW indexes valid: {actions}")


# --------------------------------------------------------------------------------------------
# hnsw.ef_search at database level


def database_setting(conn, name: str) -> str | None:
    rows = _all(conn, """
        SELECT unnest(s.setconfig) FROM pg_db_role_setting s
          JOIN pg_database d ON d.oid = s.setdatabase
         WHERE d.datname = current_database() AND s.setrole = 0""")
    for (entry,) in rows:
        key, _, value = entry.partition("=")
        if key == name:
            return value
    return None


def set_ef_search(conn, ef_search: int) -> CheckResult:
    current = database_setting(conn, "hnsw.ef_search")
    database = _one(conn, "SELECT current_database()")[0]
    if current == str(ef_search):
        action = "already set"
    else:
        # Until pgvector's library is loaded in this session, hnsw.ef_search is an unknown
        # placeholder that only a superuser may set; casting a literal loads it.
        _exec(conn, "SELECT '[1]'::vector")
        _exec(conn, f"ALTER DATABASE {_q(database)} SET hnsw.ef_search = {int(ef_search)}")
        action = f"changed from {current}" if current else "set"
    confirmed = database_setting(conn, "hnsw.ef_search")
    if confirmed != str(ef_search):
        raise CheckFailed(CheckResult("db.ef_search", "fail", value={"setting": confirmed},
                                      threshold={"expected": ef_search},
                                      reason=f"hnsw.ef_search on {database} reads {confirmed}, expected {ef_search}"))
    return CheckResult("db.ef_search", "pass", value={"setting": int(confirmed), "action": action},
                       threshold={"expected": ef_search},
                       reason=f"hnsw.ef_search = {confirmed} on database {database} ({action})")


# --------------------------------------------------------------------------------------------
# the application's migrations (the plan runs Prisma; the profile names any argv)


def run_migrations(command: Command | None, pg_env: Mapping[str, str]) -> CheckResult:
    """Run the migration command with the database in PG* variables (never argv); keep its output tail."""
    if command is None:
        return CheckResult("db.migrations", "warn", value={"configured": False},
                           reason="no migration command in the profile (database.migrations): nothing was run")
    cwd = resolve_dir(command.cwd, ROOT)
    env = {**os.environ, **resolve_env(command.env, ROOT), **pg_env}
    argv = resolve_argv(command.argv)
    shown = " ".join(command.argv)
    try:
        proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=command.timeout_seconds)
    except FileNotFoundError:
        raise CheckFailed(CheckResult("db.migrations", "fail", value={"argv": command.argv},
                                      reason=f"migration command not found: {command.argv[0]!r} (cwd {cwd})")) from None
    except subprocess.TimeoutExpired as exc:
        raise CheckFailed(CheckResult(
            "db.migrations", "fail", value={"argv": command.argv, "output_tail": _tail(exc.stdout, exc.stderr)},
            threshold={"timeout_seconds": command.timeout_seconds},
            reason=f"`{shown}` did not finish within {command.timeout_seconds:.0f}s")) from None
    tail = _tail(proc.stdout, proc.stderr)
    value = {"argv": command.argv, "exit_code": proc.returncode, "output_tail": tail}
    if proc.returncode != 0:
        raise CheckFailed(CheckResult("db.migrations", "fail", value=value,
                                      reason=f"`{shown}` exited {proc.returncode}: {tail[-1] if tail else 'no output'}"))
    return CheckResult("db.migrations", "pass", value=value,
                       reason=f"`{shown}` succeeded: {tail[-1] if tail else 'no output'}")


def _tail(*outputs: str | bytes | None, lines: int = 12) -> list[str]:
    text = "\n".join(o.decode(errors="replace") if isinstance(o, bytes) else o for o in outputs if o)
    return [line for line in text.splitlines() if line.strip()][-lines:]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --------------------------------------------------------------------------------------------
# STEP 2 checkpoint: everything in place


def verify(conn, db: DatabaseSettings) -> CheckResult:
    problems: list[str] = []
    value: dict[str, Any] = {}
    ext = _one(conn, "SELECT extversion FROM pg_extension WHERE extname = %s", (db.extension,))
    value["extension"] = {"name": db.extension, "version": ext[0] if ext else None}
    if ext is None:
        problems.append(f"extension {db.extension} is not installed")
    elif version_tuple(ext[0]) < version_tuple(db.min_vector_version):
        problems.append(f"{db.extension} {ext[0]} < {db.min_vector_version}")

    def exists(table: str) -> bool:
        return bool(_one(conn, "SELECT to_regclass(%s) IS NOT NULL", (f"public.{table}",))[0])

    tables = {table: exists(table) for table in db.tables}
    problems += [f"table {table} is missing" for table, present in tables.items() if not present]
    value["tables"] = tables
    want_type = f"vector({db.embedding_dimension})"
    for spec in db.hnsw_indexes:
        if not tables.get(spec.table, exists(spec.table)):
            continue
        col = _one(conn, """SELECT format_type(atttypid, atttypmod) FROM pg_attribute
                             WHERE attrelid = %s::regclass AND attname = %s AND NOT attisdropped""",
                   (f"public.{spec.table}", spec.column))
        if col is None or col[0] != want_type:
            problems.append(f"{spec.table}.{spec.column} is {col[0] if col else 'missing'}, expected {want_type}")

    indexes = {}
    for spec in db.hnsw_indexes:
        found = inspect_index(conn, spec.name)
        indexes[spec.name] = found
        if found is None:
            problems.append(f"index {spec.name} is missing")
        elif mismatch := index_mismatches(found, spec, db.hnsw):
            problems.append(f"index {spec.name}: {'; '.join(mismatch)}")
    value["indexes"] = indexes

    ef = database_setting(conn, "hnsw.ef_search")
    value["ef_search"] = ef
    if ef != str(db.hnsw.ef_search):
        problems.append(f"hnsw.ef_search is {ef}, expected {db.hnsw.ef_search}")

    if tables.get("identity"):
        value["identity_count"] = int(_one(conn, "SELECT COUNT(*) FROM identity")[0])
    threshold = {"min_vector_version": db.min_vector_version, "ef_search": db.hnsw.ef_search,
                 "m": db.hnsw.m, "ef_construction": db.hnsw.ef_construction, "embedding_type": want_type}
    if problems:
        raise CheckFailed(CheckResult("db.verify", "fail", value=value, threshold=threshold,
                                      reason="; ".join(problems)))
    return CheckResult("db.verify", "pass", value=value, threshold=threshold,
                       reason=f"pgvector {value['extension']['version']}, {len(tables)} tables, "
                              f"{len(indexes)} valid HNSW indexes, ef_search {ef}, "
                              f"identity has {value.get('identity_count', 'n/a')} rows")
