"""STEP 3 service supervisor with real processes on free 127.0.0.1 ports."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from rehearsal.work.services import (
    ServiceError,
    read_pid_file,
    service_status,
    start_service,
    stop_service,
)

# A tiny service: answers GET with its pid and what it sees of its environment (never values).
# mode "ok" -> 200, "unready" -> 503; "+fork" also starts a grandchild in its process group.
SERVER = r"""
import http.server, json, os, subprocess, sys
port, mode = int(sys.argv[1]), sys.argv[2]
if "fork" in mode:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    print("forked", child.pid, flush=True)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"pid": os.getpid(),
                           "secret_ok": os.environ.get("SERVICE_SECRET") == os.environ.get("EXPECTED_SECRET"),
                           "env_keys": sorted(os.environ)}).encode()
        self.send_response(503 if "unready" in mode else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
print("listening on", port, flush=True)
http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gone(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


class Services:
    """Paths under tmp_path, and a teardown that leaves no process behind whatever a test did."""

    def __init__(self, root: Path):
        self.root = root
        self.pid_files: list[Path] = []
        self.pids: set[int] = set()

    def paths(self, name: str) -> dict[str, Path]:
        pid_path = self.root / f"{name}.pid"
        self.pid_files.append(pid_path)
        return {"log_path": self.root / f"{name}.log", "pid_path": pid_path}

    def server(self, name: str, port: int, mode: str = "ok", **kwargs):
        kwargs.setdefault("ready_urls", [f"http://127.0.0.1:{port}/metrics"])
        kwargs.setdefault("timeout", 15)
        result = start_service(name, [sys.executable, "-c", SERVER, str(port), mode], **self.paths(name), **kwargs)
        self.pids.add(result["pid"])
        return result

    def cleanup(self) -> None:
        for pid_path in self.pid_files:
            stop_service(pid_path, timeout=3)
        for pid in self.pids:
            if not gone(pid):
                os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def services(tmp_path):
    s = Services(tmp_path)
    yield s
    s.cleanup()


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def test_service_comes_up_answers_and_stops(services, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SOMETHING", "postgres://u:worker-credential@h/db")
    port = free_port()
    result = services.server("api", port, env={"SERVICE_SECRET": "s3cr3t-value", "EXPECTED_SECRET": "s3cr3t-value"})
    assert result["argv0"] == sys.executable and "env" not in result
    seen = get_json(f"http://127.0.0.1:{port}/metrics")
    assert seen["pid"] == result["pid"]
    assert seen["secret_ok"] is True  # secrets arrive through the environment...
    assert "AIRFLOW_CONN_SOMETHING" not in seen["env_keys"]  # ...and the worker's own do not leak in
    pid_file = Path(result["pid_path"]).read_text()
    assert "s3cr3t-value" not in pid_file and read_pid_file(result["pid_path"])["pid"] == result["pid"]
    assert "listening on" in Path(result["log_path"]).read_text()

    status = service_status(result["pid_path"], result["ready_urls"])
    assert status["alive"] and status["healthy"] and status["state"] == "running"
    assert status["answering"] == {f"http://127.0.0.1:{port}/metrics": 200}

    stopped = stop_service(result["pid_path"])
    assert stopped["state"] == "terminated" and stopped["pid"] == result["pid"]
    assert gone(result["pid"]) and not Path(result["pid_path"]).exists()
    after = service_status(result["pid_path"], result["ready_urls"])
    assert after["state"] == "absent" and not after["alive"] and after["answering"][result["ready_urls"][0]] is None


def test_second_start_replaces_the_first(services):
    port = free_port()
    first = services.server("worker", port)
    second = services.server("worker", port)
    assert second["pid"] != first["pid"]
    assert gone(first["pid"])
    assert second["replaced"] == {"pid_path": first["pid_path"], "pid": first["pid"], "state": "terminated"}
    assert get_json(f"http://127.0.0.1:{port}/metrics")["pid"] == second["pid"]


def test_crash_at_start_gives_log_tail_and_leaves_nothing(services):
    paths = services.paths("crasher")
    script = "import sys\nfor i in range(30): print('line', i)\nprint('boom: PGHOST is not set', flush=True)\nsys.exit(3)"
    with pytest.raises(ServiceError) as err:
        start_service("crasher", [sys.executable, "-c", script], ready_urls=[f"http://127.0.0.1:{free_port()}/"],
                      timeout=15, **paths)
    message = str(err.value)
    assert "exited with code 3" in message
    assert "boom: PGHOST is not set" in message
    assert len(err.value.log_tail) == 20 and "line 0" not in message
    assert gone(err.value.pid)
    assert not paths["pid_path"].exists()


def test_never_ready_is_killed_with_its_children(services):
    port = free_port()
    paths = services.paths("stuck")
    started = time.monotonic()
    with pytest.raises(ServiceError, match=r"not ready within 1\.5s: no 2xx from http://127\.0\.0\.1") as err:
        start_service("stuck", [sys.executable, "-c", SERVER, str(port), "unready+fork"],
                      ready_urls=[f"http://127.0.0.1:{port}/metrics"], timeout=1.5, **paths)
    assert time.monotonic() - started < 8
    log = paths["log_path"].read_text()
    grandchild = int(log.split("forked ", 1)[1].split()[0])
    assert gone(err.value.pid) and gone(grandchild)
    assert not paths["pid_path"].exists()


def test_silent_process_that_never_listens_is_killed(services):
    paths = services.paths("silent")
    with pytest.raises(ServiceError, match="not ready within 1s") as err:
        start_service("silent", [sys.executable, "-c", "import time; time.sleep(300)"],
                      ready_urls=[f"http://127.0.0.1:{free_port()}/health"], timeout=1, **paths)
    assert gone(err.value.pid) and not paths["pid_path"].exists()


def test_stop_kills_the_whole_process_group(services):
    port = free_port()
    result = services.server("forking", port, mode="ok+fork")
    grandchild = int(Path(result["log_path"]).read_text().split("forked ", 1)[1].split()[0])
    assert not gone(grandchild)
    stop_service(result["pid_path"])
    assert gone(result["pid"]) and gone(grandchild)


def test_stale_pid_files_are_harmless(services, tmp_path):
    # A pid that has exited.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / "dead.pid"
    stale.write_text(json.dumps({"pid": dead.pid, "start_ticks": 1}))
    assert stop_service(stale)["state"] == "stale" and not stale.exists()
    # A live pid that is not ours any more (pid reuse): this very test process, wrong start time.
    reused = tmp_path / "reused.pid"
    reused.write_text(json.dumps({"pid": os.getpid(), "pgid": os.getpid(), "start_ticks": 1}))
    assert stop_service(reused)["state"] == "stale"  # and we are still here to assert it
    # Garbage, and no file at all.
    junk = tmp_path / "junk.pid"
    junk.write_text("not a pid\n")
    assert stop_service(junk)["state"] == "stale"
    assert stop_service(tmp_path / "never.pid")["state"] == "absent"


def test_bare_pid_of_a_live_process_is_not_killed(services, tmp_path):
    # The plan's `echo $PID > /tmp/staging-api.pid` carries no start time: it cannot be proven ours.
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
    services.pids.add(sleeper.pid)
    bare = tmp_path / "bare.pid"
    bare.write_text(f"{sleeper.pid}\n")
    assert stop_service(bare)["state"] == "unverified"
    assert not gone(sleeper.pid) and bare.exists()
    with pytest.raises(ServiceError, match="refusing to kill an unproven process"):
        start_service("bare", [sys.executable, "-c", "pass"], log_path=tmp_path / "bare.log", pid_path=bare)
    sleeper.kill()
    sleeper.wait()


def test_build_step_runs_first_and_its_failure_is_reported(services, tmp_path):
    port = free_port()
    marker = tmp_path / "built"
    result = services.server("web", port, build_argv=[sys.executable, "-c", f"open({str(marker)!r}, 'w').write('ok')"])
    assert marker.read_text() == "ok" and result["pid"]
    paths = services.paths("badbuild")
    with pytest.raises(ServiceError, match="build .* failed with exit code 2") as err:
        start_service("badbuild", [sys.executable, "-c", "pass"], **paths,
                      build_argv=[sys.executable, "-c", "import sys; print('tsc: error TS2304'); sys.exit(2)"])
    assert "tsc: error TS2304" in str(err.value)
    assert not paths["pid_path"].exists()


def test_an_orphan_already_answering_is_refused(services):
    port = free_port()
    orphan = services.server("orphan", port)
    with pytest.raises(ServiceError, match="already answers at"):
        start_service("api", [sys.executable, "-c", SERVER, str(port), "ok"], **services.paths("api"),
                      ready_urls=[f"http://127.0.0.1:{port}/metrics"], timeout=5)
    assert not gone(orphan["pid"])


def test_argv_must_be_a_list():
    with pytest.raises(ServiceError, match="argv must be a non-empty list"):
        start_service("x", [], log_path="/tmp/unused.log", pid_path="/tmp/unused.pid")


def test_service_outlives_the_process_that_started_it(services, tmp_path):
    # As in Airflow: the task's interpreter starts the service and exits; the service stays up and a
    # later task (another process, not its parent) stops it through the pid file.
    port = free_port()
    paths = services.paths("detached")
    starter = f"""
import json, sys
from rehearsal.work.services import start_service
r = start_service("detached", [sys.executable, "-c", {SERVER!r}, "{port}", "ok"],
                  log_path={str(paths["log_path"])!r}, pid_path={str(paths["pid_path"])!r},
                  ready_urls=["http://127.0.0.1:{port}/metrics"], timeout=15)
print(json.dumps(r))
"""
    plugins = str(Path(__file__).resolve().parents[2] / "plugins")
    done = subprocess.run([sys.executable, "-c", starter], check=False, capture_output=True, text=True, timeout=30,
                          env={**os.environ, "PYTHONPATH": plugins})
    assert done.returncode == 0, done.stderr
    pid = json.loads(done.stdout.strip().splitlines()[-1])["pid"]
    services.pids.add(pid)
    assert get_json(f"http://127.0.0.1:{port}/metrics")["pid"] == pid
    assert service_status(paths["pid_path"])["state"] == "running"
    assert stop_service(paths["pid_path"])["state"] == "terminated"
    assert gone(pid)
