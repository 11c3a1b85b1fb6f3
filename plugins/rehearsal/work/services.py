"""Service supervisor (plan STEP 3): start a long-running service, wait until it answers, stop it.

The plan's `node dist/server.js & ... echo $! > pid; sleep 5; curl -f` becomes:
  * the process is started from an argv list (never a shell), in its own session, so it outlives
    the task that started it and can be stopped as a whole process group;
  * secrets reach it only through its environment; the pid file and the result hold argv[0] only;
  * readiness is polled until every ready URL answers 2xx, with a timeout - no fixed sleep;
  * the pid file records the process start time (from /proc/<pid>/stat) and boot id, so a stale
    file whose pid now belongs to another process is never killed;
  * starting a service whose pid file points at a live process stops that process first.
Linux only (/proc). No Airflow needed.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rehearsal.redaction import scrub

LOG_TAIL_LINES = 20
STOP_TIMEOUT_SECONDS = 10.0
# What a service inherits from the worker when no full env is given: enough to find programs and
# locales, but not the worker's own credentials (AIRFLOW_CONN_* and the like).
BASE_ENV_KEYS = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME")


class ServiceError(RuntimeError):
    """A service failed to build, start or become ready; carries the last lines of its log."""

    def __init__(self, name: str, reason: str, log_tail: list[str] | None = None, pid: int | None = None):
        self.name, self.reason, self.log_tail, self.pid = name, reason, log_tail or [], pid
        text = f"service {name!r}: {reason}"
        if self.log_tail:
            text += f"\n--- last {len(self.log_tail)} line(s) of its log ---\n" + "\n".join(self.log_tail)
        super().__init__(text)


# --- /proc helpers ----------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, pgrp, start time in clock ticks since boot) of a process, None if it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name sits in parentheses and may itself hold spaces or ')': split at the last one.
    fields = raw[raw.rindex(")") + 2:].split()
    return fields[0], int(fields[2]), int(fields[19])


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our own child (tests, or a failed start)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _alive(pid: int) -> bool:
    _reap(pid)
    stat = _proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def _group_alive(pgid: int) -> bool:
    """Does any live (non-zombie) process remain in the process group?"""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat and stat[1] == pgid and stat[0] not in ("Z", "X"):
                _reap(int(entry.name))
                stat = _proc_stat(int(entry.name))
                if stat and stat[0] not in ("Z", "X"):
                    return True
    return False


def _wait_gone(pid: int, pgid: int | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        if not _alive(pid) and (pgid is None or not _group_alive(pgid)):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def _signal(pid: int, pgid: int | None, sig: int) -> None:
    try:
        if pgid is not None:
            os.killpg(pgid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _terminate(pid: int, pgid: int | None, timeout: float) -> str:
    """SIGTERM, wait, SIGKILL; returns how it ended ('terminated' or 'killed')."""
    _signal(pid, pgid, signal.SIGTERM)
    if _wait_gone(pid, pgid, timeout):
        return "terminated"
    _signal(pid, pgid, signal.SIGKILL)
    if not _wait_gone(pid, pgid, 5.0):
        raise RuntimeError(f"process {pid} survived SIGKILL")
    return "killed"


# --- pid files -------------------------------------------------------------------------------


def _write_pid_file(pid_path: Path, record: dict[str, Any]) -> None:
    pid_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = pid_path.with_name(pid_path.name + ".tmp")
    tmp.write_text(json.dumps(record) + "\n")
    os.replace(tmp, pid_path)  # atomic: a reader never sees half a file


def read_pid_file(pid_path: str | Path) -> dict[str, Any] | None:
    """The pid file's record; a bare number (the plan's `echo $! > pid`) gives {'pid': n} only."""
    path = Path(pid_path)
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    if text.isdigit():
        return {"pid": int(text)}
    try:
        record = json.loads(text)
        return record if isinstance(record, dict) and isinstance(record.get("pid"), int) else {"pid": None}
    except json.JSONDecodeError:
        return {"pid": None}


def _identify(record: dict[str, Any] | None) -> tuple[str, int | None]:
    """('running' | 'stale' | 'unverified' | 'absent', pid) for a pid file record.

    'stale': the pid is dead, or now belongs to another process (start time or boot differs).
    'unverified': a live pid with no start time recorded - we cannot prove it is ours.
    """
    if record is None:
        return "absent", None
    pid = record.get("pid")
    if not isinstance(pid, int) or pid <= 1:
        return "stale", None
    stat = _proc_stat(pid) if _alive(pid) else None
    if stat is None:
        return "stale", pid
    if "start_ticks" not in record:
        return "unverified", pid
    if stat[2] != record["start_ticks"] or (record.get("boot_id") and record["boot_id"] != _boot_id()):
        return "stale", pid  # pid reused by an unrelated process
    return "running", pid


# --- HTTP readiness ---------------------------------------------------------------------------

# No proxies: readiness is about this address, and an HTTP_PROXY in the worker's env must not answer for it.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def probe(url: str, timeout: float = 2.0) -> int | None:
    """HTTP status of a GET, or None if nothing answered."""
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _ok(status: int | None) -> bool:
    return status is not None and 200 <= status < 300


# --- public API -------------------------------------------------------------------------------


def log_tail(log_path: str | Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    """Last lines of a log, with registered secrets masked."""
    try:
        with open(log_path, errors="replace") as f:
            return [scrub(line.rstrip("\n")) for line in deque(f, maxlen=lines)]
    except FileNotFoundError:
        return []


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: os.environ[k] for k in BASE_ENV_KEYS if k in os.environ}
    env.update(extra or {})
    return env


def stop_service(pid_path: str | Path, timeout: float = STOP_TIMEOUT_SECONDS) -> dict[str, Any]:
    """Stop the service a pid file names; harmless if it is gone or the file is stale.

    Returns {'pid_path', 'pid', 'state': absent|stale|unverified|terminated|killed}. 'unverified'
    (a bare pid with no start time) is left running: killing an unproven pid could hit a stranger.
    """
    path = Path(pid_path)
    record = read_pid_file(path)
    state, pid = _identify(record)
    result = {"pid_path": str(path), "pid": pid, "state": state}
    if state == "running":
        pgid = record.get("pgid")
        # Only signal the group if it is still the group the service leads (it started one itself).
        if not (isinstance(pgid, int) and pgid == pid and _proc_stat(pid) and _proc_stat(pid)[1] == pgid):
            pgid = None
        result["state"] = _terminate(pid, pgid, timeout)
    if state != "unverified":
        path.unlink(missing_ok=True)
    return result


def service_status(pid_path: str | Path, ready_urls: Sequence[str] = (), timeout: float = 2.0) -> dict[str, Any]:
    """Is the service in the pid file alive (and really the one we started), and do its URLs answer 2xx?"""
    record = read_pid_file(pid_path)
    state, pid = _identify(record)
    answering = {url: probe(url, timeout) for url in ready_urls}
    return {
        "pid_path": str(pid_path),
        "pid": pid,
        "state": state,
        "alive": state in ("running", "unverified"),
        "answering": answering,
        "healthy": state == "running" and all(_ok(s) for s in answering.values()),
        "started_at": (record or {}).get("started_at"),
    }


def _run_build(name: str, build_argv: Sequence[str], env: dict[str, str], cwd: str | Path | None,
               log_path: Path, timeout: float) -> None:
    with open(log_path, "ab") as log:
        log.write(f"=== {_now()} build: {build_argv[0]} ===\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(list(build_argv), env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            raise ServiceError(name, f"build command {build_argv[0]!r} could not start: {exc.strerror}") from None
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _terminate(proc.pid, proc.pid, 5.0)
        raise ServiceError(name, f"build {build_argv[0]!r} did not finish within {timeout:g}s", log_tail(log_path)) from None
    if code != 0:
        raise ServiceError(name, f"build {build_argv[0]!r} failed with exit code {code}", log_tail(log_path))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def start_service(name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
                  cwd: str | Path | None = None, log_path: str | Path, pid_path: str | Path,
                  ready_urls: Sequence[str] = (), timeout: float = 60.0,
                  build_argv: Sequence[str] | None = None, build_timeout: float = 600.0,
                  inherit_env: bool = False) -> dict[str, Any]:
    """Start `argv` detached, wait until every ready URL answers 2xx, return what evidence needs.

    `env` is added to a minimal base environment (PATH, HOME, locale) unless `inherit_env`, in
    which case it is added to the whole current environment. On failure (exit, timeout, an old
    process still answering), the process group is killed, the pid file removed, and ServiceError
    raised with the log's last lines. Returns {name, pid, started_at, argv0, log_path, pid_path,
    ready_urls, ready_after_seconds, replaced}.
    """
    if not argv or not all(isinstance(a, str) for a in argv):
        raise ServiceError(name, "argv must be a non-empty list of strings (no shell command line)")
    log, pidfile = Path(log_path), Path(pid_path)
    log.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **(env or {})} if inherit_env else base_env(env)

    # Idempotent redeploy: whatever the pid file proves is ours goes first.
    replaced = stop_service(pidfile)
    if replaced["state"] == "unverified":
        raise ServiceError(name, f"pid file {pidfile} names live pid {replaced['pid']} without a start time; "
                           "refusing to kill an unproven process - stop it and remove the file")
    # Something already answering would make readiness meaningless (an orphan from an older run).
    busy = [url for url in ready_urls if probe(url, 1.0) is not None]
    if busy:
        raise ServiceError(name, f"something not in {pidfile} already answers at {', '.join(busy)}")

    if build_argv:
        _run_build(name, build_argv, full_env, cwd, log, build_timeout)

    with open(log, "ab") as out:
        out.write(f"=== {_now()} start: {argv[0]} ===\n".encode())
        out.flush()
        try:
            proc = subprocess.Popen(list(argv), env=full_env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
        except OSError as exc:
            raise ServiceError(name, f"{argv[0]!r} could not start: {exc.strerror}") from None
    started = time.monotonic()
    started_at = _now()
    stat = _proc_stat(proc.pid)
    _write_pid_file(pidfile, {"pid": proc.pid, "pgid": proc.pid, "start_ticks": stat[2] if stat else None,
                              "boot_id": _boot_id(), "name": name, "argv0": argv[0],
                              "started_at": started_at, "log_path": str(log)})

    def fail(reason: str) -> ServiceError:
        if proc.poll() is None:
            _terminate(proc.pid, proc.pid, 5.0)
        elif _group_alive(proc.pid):  # the leader died, children it forked may not have
            _signal(proc.pid, proc.pid, signal.SIGKILL)
            _wait_gone(proc.pid, proc.pid, 5.0)
        pidfile.unlink(missing_ok=True)
        return ServiceError(name, reason, log_tail(log), pid=proc.pid)

    pending = list(ready_urls)
    deadline = started + timeout
    delay = 0.05
    while True:
        code = proc.poll()
        if code is not None:
            raise fail(f"{argv[0]!r} exited with code {code} {time.monotonic() - started:.1f}s after start")
        pending = [url for url in pending if not _ok(probe(url, max(0.2, min(2.0, deadline - time.monotonic()))))]
        if not pending:
            # Answered, but was it us? A process that died meanwhile means the answer came from elsewhere.
            if proc.poll() is None:
                break
            continue
        if time.monotonic() >= deadline:
            raise fail(f"not ready within {timeout:g}s: no 2xx from {', '.join(pending)}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)
    return {
        "name": name,
        "pid": proc.pid,
        "started_at": started_at,
        "argv0": argv[0],
        "log_path": str(log),
        "pid_path": str(pidfile),
        "ready_urls": list(ready_urls),
        "ready_after_seconds": round(time.monotonic() - started, 3),
        "replaced": replaced if replaced["state"] != "absent" else None,
    }
