"""deploy (plan STEPs 0, 1, 3) as checkpoints: the release pinned, secrets readable, services up.

Built on release.py (which commit), secrets.py (read without showing) and services.py (start,
wait, stop); this module turns their outcomes into CheckResults and wires a service's secrets
into its environment, never into its argv.
"""
from __future__ import annotations

import re
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from rehearsal.evidence import CheckFailed, CheckResult
from rehearsal.paths import ROOT
from rehearsal.profile import ReleaseSettings, SecretsSettings, ServiceSettings
from rehearsal.work import release as release_work
from rehearsal.work import secrets as secrets_work
from rehearsal.work import services as services_work
from rehearsal.work.commands import resolve_argv, resolve_dir, resolve_env

PUBLIC_KEYS = secrets_work.PLAN_PUBLIC_KEYS  # ports, regions, URLs: not masked everywhere


def repository_path(release: ReleaseSettings) -> Path:
    return resolve_dir(release.repository, ROOT)


# --------------------------------------------------------------------------------------------
# STEP 0: which release


def identify_release(release: ReleaseSettings, ref: str | None = None) -> CheckResult:
    ref = ref or release.ref
    try:
        facts = release_work.check_release(repository_path(release), ref, release.required_paths,
                                           require_clean=release.require_clean)
    except release_work.ReleaseCheckError as exc:
        raise CheckFailed(CheckResult("release.identified", "fail", value={"ref": ref, "problems": exc.problems},
                                      reason="; ".join(exc.problems))) from None
    return CheckResult("release.identified", "pass", value=facts,
                       threshold={"required_paths": release.required_paths, "clean": release.require_clean},
                       reason=f"{ref} is {facts['short_commit']} ({facts['subject']}); "
                              f"{len(release.required_paths)} required paths present"
                              + (", tree clean" if release.require_clean else ""))


def checkout_release(release: ReleaseSettings, commit: str) -> CheckResult:
    """Put the working tree at exactly `commit` (detached), so what runs is what was identified."""
    repo = repository_path(release)
    out = subprocess.run(["git", "-C", str(repo), "-c", "advice.detachedHead=false", "checkout", "--quiet",
                          "--detach", commit], capture_output=True, text=True)
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    if out.returncode != 0 or head != commit:
        raise CheckFailed(CheckResult("release.checked_out", "fail", value={"commit": commit, "head": head},
                                      reason=f"could not check out {commit[:12]} in {repo}: "
                                             f"{out.stderr.strip() or f'HEAD is {head[:12]}'}"))
    return CheckResult("release.checked_out", "pass", value={"repository": str(repo), "commit": commit},
                       reason=f"{repo} at {commit[:12]}")


# --------------------------------------------------------------------------------------------
# STEP 1: secrets


def check_secrets(settings: SecretsSettings) -> CheckResult:
    try:
        summary = secrets_work.check_profile_secrets(settings, public_keys=PUBLIC_KEYS)
    except secrets_work.SecretsCheckError as exc:
        reasons = [p["message"] for p in exc.summary["problems"]]
        raise CheckFailed(CheckResult("secrets.readable", "fail", value=exc.summary,
                                      threshold={"required_keys": settings.required_keys},
                                      reason="; ".join(reasons))) from None
    counts = summary["counts"]
    return CheckResult("secrets.readable", "pass", value=summary, threshold={"required_keys": settings.required_keys},
                       reason=f"{counts['paths_readable']}/{counts['paths']} paths readable, "
                              f"{counts['keys_required']} required keys present and non-empty ({summary['source']})")


# --------------------------------------------------------------------------------------------
# STEP 3: services


def service_environment(service: ServiceSettings, secrets: SecretsSettings,
                        source: secrets_work.SecretSource | None = None) -> dict[str, str]:
    """The profile's plain variables plus the named secret keys, read now (never stored)."""
    source = source or secrets_work.source_from_settings(secrets)
    env = dict(service.start.env)
    for name, keys in service.secrets.items():
        values = secrets_work.read_secret_values(source, secrets.paths[name], public_keys=PUBLIC_KEYS)
        missing = [k for k in keys if not values.get(k)]
        if missing:
            raise CheckFailed(CheckResult(
                f"deploy.{service.name}.started", "fail", value={"secret": name, "missing_keys": missing},
                reason=f"secret {secrets.paths[name]} lacks {', '.join(missing)} for service {service.name}"))
        env.update({k: values[k] for k in keys})
    return env


def run_paths(run_dir: str, service: ServiceSettings) -> tuple[Path, Path]:
    folder = resolve_dir(run_dir, ROOT)
    return folder / f"{service.name}.log", folder / f"{service.name}.pid"


def deploy_service(service: ServiceSettings, release: ReleaseSettings, secrets: SecretsSettings, run_dir: str,
                   source: secrets_work.SecretSource | None = None) -> CheckResult:
    """Build (if configured), stop the old process, start the new one, wait until it answers."""
    check_id = f"deploy.{service.name}.started"
    repo = repository_path(release)
    env = resolve_env(service_environment(service, secrets, source), resolve_dir(service.start.cwd, repo))
    log_path, pid_path = run_paths(run_dir, service)
    try:
        started = services_work.start_service(
            service.name, resolve_argv(service.start.argv), env=env, cwd=resolve_dir(service.start.cwd, repo),
            log_path=log_path, pid_path=pid_path, ready_urls=service.ready_urls,
            timeout=service.start.timeout_seconds,
            build_argv=resolve_argv(service.build.argv) if service.build else None,
            build_timeout=service.build.timeout_seconds if service.build else 600)
    except services_work.ServiceError as exc:
        raise CheckFailed(CheckResult(check_id, "fail", value={"log_tail": exc.log_tail, "log_path": str(log_path)},
                                      threshold={"ready_urls": service.ready_urls,
                                                 "timeout_seconds": service.start.timeout_seconds},
                                      reason=exc.reason)) from None
    version = _version(service)
    value = {**started, "version": version}
    return CheckResult(check_id, "pass", value=value,
                       threshold={"ready_urls": service.ready_urls, "timeout_seconds": service.start.timeout_seconds},
                       reason=f"{service.name} pid {started['pid']} ready in {started['ready_after_seconds']}s"
                              + (f", version {version}" if version else "")
                              + (" (replaced the previous process)" if started.get("replaced") else ""))


def _get(url: str, timeout: float = 5.0) -> tuple[int | None, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as resp:
            return resp.status, resp.read(2_000_000).decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return None, ""


def _version(service: ServiceSettings) -> str | None:
    """The release a service reports: aura_build_info{version=...} on /metrics, if it has one."""
    if not service.metrics_url:
        return None
    status, text = _get(service.metrics_url)
    match = re.search(r'_build_info\{[^}]*version="([^"]+)"', text) if status == 200 else None
    return match.group(1) if match else None


def metric_samples(text: str, sample: str) -> list[float]:
    """Values of `name{labels}` (label subset match) in Prometheus text format."""
    name, _, labels = sample.partition("{")
    wanted = dict(re.findall(r'(\w+)="([^"]*)"', labels))
    values = []
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        match = re.match(rf"^{re.escape(name)}(?:\{{([^}}]*)\}})?\s+(\S+)", line)
        if not match:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(have.get(k) == v for k, v in wanted.items()):
            values.append(float(match.group(2)))
    return values


def verify_service(service: ServiceSettings, run_dir: str) -> CheckResult:
    """STEP 3 checkpoint: running, answering, exposing /metrics, connected to the database."""
    check_id = f"deploy.{service.name}.verified"
    _, pid_path = run_paths(run_dir, service)
    status = services_work.service_status(pid_path, service.ready_urls)
    value: dict[str, Any] = {"pid": status["pid"], "alive": status["alive"], "answering": status["answering"]}
    problems = []
    if not status["alive"]:
        problems.append(f"{service.name} is not running (pid file {pid_path}: {status['state']})")
    elif not status["healthy"]:
        bad = [f"{url} -> {code}" for url, code in status["answering"].items() if not code or code >= 300]
        problems.append(f"{service.name} does not answer: {', '.join(bad)}")
    if service.metrics_url:
        code, text = _get(service.metrics_url)
        families = len(re.findall(r"^# TYPE ", text, flags=re.M))
        value["metrics"] = {"url": service.metrics_url, "status": code, "families": families}
        if code != 200 or families == 0:
            problems.append(f"{service.metrics_url} answered {code} with {families} metric families")
    if service.database and not problems:
        probe = service.database
        deadline = time.monotonic() + probe.timeout_seconds
        while True:
            if probe.url:
                code, _ = _get(probe.url)
                connected, seen = code is not None and 200 <= code < 300, code
            else:
                _, text = _get(service.metrics_url) if service.metrics_url else (None, "")
                samples = metric_samples(text, probe.metric)
                connected, seen = any(v > 0 for v in samples), samples
            if connected or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        value["database"] = {"probe": probe.url or probe.metric, "seen": seen, "connected": connected}
        if not connected:
            problems.append(f"{service.name} shows no database connection within {probe.timeout_seconds:.0f}s "
                            f"({probe.url or probe.metric} -> {seen})")
    threshold = {"ready_urls": service.ready_urls, "metrics_url": service.metrics_url,
                 "database": service.database.url or service.database.metric if service.database else None}
    if problems:
        log_path, _ = run_paths(run_dir, service)
        value["log_tail"] = services_work.log_tail(log_path)
        raise CheckFailed(CheckResult(check_id, "fail", value=value, threshold=threshold, reason="; ".join(problems)))
    parts = [f"{service.name} pid {status['pid']} answering"]
    if service.metrics_url:
        parts.append(f"/metrics with {value['metrics']['families']} families")
    if service.database:
        parts.append("connected to the database")
    return CheckResult(check_id, "pass", value=value, threshold=threshold, reason=", ".join(parts))


def stop_services(services: list[ServiceSettings], run_dir: str) -> dict[str, Any]:
    return {s.name: services_work.stop_service(run_paths(run_dir, s)[1]) for s in services}
