"""The deploy phase's checkpoints with the real reference target on the real embedded stack."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rehearsal.evidence import CheckFailed
from rehearsal.profile import load_profile
from rehearsal.work import deploy
from rehearsal.work.services import read_pid_file


def deploy_all(profile):
    return {s.name: deploy.deploy_service(s, profile.release, profile.secrets, profile.deploy.run_dir)
            for s in profile.deploy.services}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def processes_of(module: str, cwd: Path) -> list[int]:
    """Live processes running `python -m module` from cwd (the release tree)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and module.encode() in (proc / "cmdline").read_bytes() \
                    and Path(os.readlink(proc / "cwd")) == cwd and alive(int(proc.name)):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_release_is_identified_and_checked_out(deploy_profile):
    profile = load_profile(deploy_profile)
    identified = deploy.identify_release(profile.release)
    assert identified.status == "pass" and identified.value["ref"] == "v1.1.0"
    previous = deploy.identify_release(profile.release, "v1.0.0")
    assert previous.value["commit"] != identified.value["commit"]
    checked = deploy.checkout_release(profile.release, previous.value["commit"])
    assert checked.value["commit"] == previous.value["commit"]
    version = (Path(profile.release.repository) / "VERSION").read_text().strip()
    assert version == "1.0.0"


def test_unknown_ref_and_dirty_tree_stop_the_phase(deploy_profile):
    profile = load_profile(deploy_profile)
    with pytest.raises(CheckFailed, match="v9.9.9"):
        deploy.identify_release(profile.release, "v9.9.9")
    (Path(profile.release.repository) / "aura_target" / "hotfix.py").write_text("x = 1\n")
    with pytest.raises(CheckFailed, match="not clean.*hotfix.py"):
        deploy.identify_release(profile.release)


def test_services_come_up_verified_and_a_second_deploy_replaces_them(deploy_profile):
    profile = load_profile(deploy_profile)
    first = deploy_all(profile)
    assert {n: r.status for n, r in first.items()} == {"api": "pass", "worker": "pass", "web": "pass"}
    assert first["api"].value["version"] == "1.1.0"
    for service in profile.deploy.services:
        verified = deploy.verify_service(service, profile.deploy.run_dir)
        assert verified.status == "pass", verified.reason
    assert "connected to the database" in deploy.verify_service(profile.deploy.services[1], profile.deploy.run_dir).reason

    old = {n: r.value["pid"] for n, r in first.items()}
    second = deploy_all(profile)
    new = {n: r.value["pid"] for n, r in second.items()}
    assert all(second[n].value["replaced"] for n in new)
    assert not set(old.values()) & set(new.values())
    assert not any(alive(pid) for pid in old.values())  # no orphan of the first deploy
    assert all(alive(pid) for pid in new.values())
    assert processes_of("aura_target.api", Path(profile.release.repository)) == [new["api"]]


def test_secrets_reach_the_environment_never_argv_or_evidence(deploy_profile):
    profile = load_profile(deploy_profile)
    api = profile.deploy.services[0]
    result = deploy.deploy_service(api, profile.release, profile.secrets, profile.deploy.run_dir)
    password = json.loads(os.environ["AIRFLOW_CONN_STAGING_DB"])["password"]
    pid = result.value["pid"]
    assert password not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    assert f"PGPASSWORD={password}".encode() in Path(f"/proc/{pid}/environ").read_bytes()
    assert password not in json.dumps(result.summary())
    log = Path(profile.deploy.run_dir) / "api.log"
    assert password not in log.read_text()


def test_a_service_that_crashes_at_start_fails_with_its_log_tail_and_leaves_nothing(deploy_profile):
    profile = load_profile(deploy_profile)
    api = profile.deploy.services[0]
    broken = api.model_copy(update={"start": api.start.model_copy(
        update={"env": {**api.start.env, "TARGET_FAULTS": "no_such_fault=1"}})})
    with pytest.raises(CheckFailed) as caught:
        deploy.deploy_service(broken, profile.release, profile.secrets, profile.deploy.run_dir)
    result = caught.value.result
    assert result.check_id == "deploy.api.started" and result.status == "fail"
    assert "no_such_fault" in "\n".join(result.value["log_tail"])
    pid_file = Path(profile.deploy.run_dir) / "api.pid"
    assert read_pid_file(pid_file) is None and not pid_file.exists()
    assert processes_of("aura_target.api", Path(profile.release.repository)) == []
    with pytest.raises(CheckFailed, match="api is not running"):
        deploy.verify_service(api, profile.deploy.run_dir)


def test_missing_secret_key_names_the_key_not_a_value(deploy_profile, monkeypatch):
    secrets = json.loads(os.environ["AIRFLOW_VAR_REHEARSAL_LOCAL_SECRETS"])
    password = secrets["secret/data/aura/staging/database"].pop("PGPASSWORD")
    monkeypatch.setenv("AIRFLOW_VAR_REHEARSAL_LOCAL_SECRETS", json.dumps(secrets))
    profile = load_profile(deploy_profile)
    with pytest.raises(CheckFailed) as caught:
        deploy.check_secrets(profile.secrets)
    assert "PGPASSWORD" in caught.value.result.reason
    assert password not in json.dumps(caught.value.result.value) + caught.value.result.reason
    with pytest.raises(CheckFailed, match="lacks PGPASSWORD for service api"):
        deploy.deploy_service(profile.deploy.services[0], profile.release, profile.secrets, profile.deploy.run_dir)


def test_metric_samples_match_a_label_subset():
    text = ('# TYPE trustmath_runs_total counter\ntrustmath_runs_total{status="success"} 3.0\n'
            'trustmath_runs_total{status="failure"} 1.0\nother 5\n')
    assert deploy.metric_samples(text, 'trustmath_runs_total{status="success"}') == [3.0]
    assert deploy.metric_samples(text, "trustmath_runs_total") == [3.0, 1.0]
    assert deploy.metric_samples(text, 'trustmath_runs_total{status="x"}') == []
