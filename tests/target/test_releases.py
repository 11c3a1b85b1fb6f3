"""The two-release repository: tags, VERSION per release, rollback by checkout + restart, idempotence."""
from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
from targetlib import TARGET_DIR, libpq_env, metric_value

from aura_target.releases import ReleaseError, build, checkout


def git(repo, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


def test_build_makes_two_tagged_releases_and_is_idempotent(tmp_path):
    dest = tmp_path / "releases"
    done = subprocess.run([sys.executable, "-m", "aura_target.releases", "build", str(dest)],
                          env={"PYTHONPATH": str(TARGET_DIR), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=60)  # HOME without a git identity
    assert done.returncode == 0, done.stderr
    assert git(dest, "tag", "--list").split() == ["v1.0.0", "v1.1.0"]
    assert git(dest, "show", "v1.0.0:VERSION") == "1.0.0"
    assert git(dest, "show", "v1.1.0:VERSION") == "1.1.0"
    assert git(dest, "rev-parse", "v1.1.0^") == git(dest, "rev-parse", "v1.0.0")  # previous is the parent
    assert (dest / "VERSION").read_text().strip() == "1.1.0"
    assert (dest / "aura_target" / "api.py").is_file() and (dest / "migrations" / "001_trust_score.sql").is_file()
    assert "__pycache__" not in git(dest, "ls-files")

    first = {tag: git(dest, "rev-parse", tag) for tag in ("v1.0.0", "v1.1.0")}
    tags, changed = build(dest)
    assert not changed and tags == first
    assert git(dest, "status", "--porcelain") == ""


def test_build_refuses_a_directory_it_did_not_make(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(ReleaseError, match="not a release repository"):
        build(tmp_path)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_rollback_is_checkout_of_previous_tag_and_restart(tmp_path, services):
    dest = tmp_path / "releases"
    build(dest, candidate_faults="wrong_order=1")  # a broken candidate, so the rollback fixes something
    env = libpq_env("postgres")
    candidate = services("api", env, pythonpath=dest)
    assert httpx.get(candidate.url + "/healthz").json()["version"] == "1.1.0"
    text = httpx.get(candidate.url + "/metrics").text
    assert metric_value(text, "aura_build_info", {"version": "1.1.0"}) == 1
    assert metric_value(text, "aura_fault_active", {"fault": "wrong_order"}) == 1
    candidate.stop()

    assert checkout(dest, "v1.0.0") == "1.0.0"
    assert not (dest / "FAULTS").exists()
    previous = services("api", env, pythonpath=dest)
    assert httpx.get(previous.url + "/healthz").json()["version"] == "1.0.0"
    text = httpx.get(previous.url + "/metrics").text
    assert metric_value(text, "aura_build_info", {"version": "1.0.0"}) == 1
    assert metric_value(text, "aura_fault_active", {"fault": "wrong_order"}) is None

    assert git(dest, "status", "--porcelain") == ""  # running it left the tree clean (bytecode ignored)
    worker = services("worker", {**env, "TRUSTMATH_INTERVAL_SECONDS": "5"}, ready_path="/metrics", pythonpath=dest)
    assert metric_value(httpx.get(worker.url + "/metrics").text, "aura_build_info",
                        {"service": "worker", "version": "1.0.0"}) == 1
