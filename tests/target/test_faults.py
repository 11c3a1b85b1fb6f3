"""Fault injection: the parser, and each switch observable from outside the service."""
from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest
from targetlib import (
    DIMENSION,
    TARGET_DIR,
    address_of,
    clustered_embeddings,
    libpq_env,
    metric_value,
    scratch_db,
    seed_identities,
)
from test_worker import wait_for_metric

from aura_target.faults import ALL_RUNS, FaultConfigError, Faults, parse_faults


def test_no_faults_by_default():
    assert parse_faults(None) == Faults() and parse_faults("") == Faults() and Faults().active == {}


def test_full_specification_parses():
    faults = parse_faults("similarity_latency_seconds=2.5, error_rate=0.2,seed=7,"
                          "memory_leak_kb_per_request=512,worker_failures=all,wrong_order=1")
    assert faults == Faults(similarity_latency_seconds=2.5, error_rate=0.2, seed=7,
                            memory_leak_kb_per_request=512, worker_failures=ALL_RUNS, wrong_order=True)
    assert set(faults.active) == {"similarity_latency_seconds", "error_rate", "memory_leak_kb_per_request",
                                  "worker_failures", "wrong_order"}


@pytest.mark.parametrize("spec, named", [
    ("latency=2", "latency"),
    ("error_rate=1.5", "error_rate"),
    ("error_rate=lots", "error_rate"),
    ("similarity_latency_seconds=-1", "similarity_latency_seconds"),
    ("memory_leak_kb_per_request=0.5", "memory_leak_kb_per_request"),
    ("wrong_order=maybe", "wrong_order"),
    ("worker_failures=some", "worker_failures"),
    ("wrong_order", "wrong_order"),
    ("error_rate=0.1,error_rate=0.2", "error_rate"),
])
def test_bad_switch_is_named_in_the_error(spec, named):
    with pytest.raises(FaultConfigError, match=named):
        parse_faults(spec)


@pytest.mark.parametrize("module", ["api", "worker"])
def test_services_refuse_to_start_on_an_unknown_switch(module, tmp_path):
    env = {"PYTHONPATH": str(TARGET_DIR), "TARGET_FAULTS": "error_rate=0.1,slow_disk=1",
           "TARGET_LOG_FILE": str(tmp_path / "target.log"), "API_PORT": "0", "WORKER_PORT": "0"}
    done = subprocess.run([sys.executable, "-m", f"aura_target.{module}"], env=env, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2
    assert "unknown fault switch 'slow_disk'" in done.stderr
    assert "refusing to start" in (tmp_path / "target.log").read_text()


@pytest.fixture(scope="module")
def database():
    with scratch_db() as name:
        seed_identities(name, clustered_embeddings(200, 8, seed=3))
        yield name


def similar(api, k: int = 8) -> list[dict]:
    response = httpx.post(api.url + "/api/similarity", json={"embedding": [0.2] * DIMENSION, "k": k}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["results"]


def test_similarity_latency_is_added_and_seen_by_the_histogram(database, services):
    api = services("api", {**libpq_env(database), "TARGET_FAULTS": "similarity_latency_seconds=0.6"},
                   ready_path="/readyz")
    started = time.perf_counter()
    similar(api)
    assert time.perf_counter() - started >= 0.6
    text = httpx.get(api.url + "/metrics").text
    assert metric_value(text, "vector_search_latency_seconds_sum") >= 0.6
    assert metric_value(text, "vector_search_latency_seconds_bucket", {"le": "0.5"}) == 0
    assert metric_value(text, "aura_fault_active", {"fault": "similarity_latency_seconds"}) == 0.6


def test_error_rate_is_roughly_honoured_with_a_fixed_seed(database, services):
    api = services("api", {**libpq_env(database), "TARGET_FAULTS": "error_rate=0.3,seed=7"})
    with httpx.Client(base_url=api.url) as client:
        statuses = [client.get(f"/api/identities/{address_of(i)}", params={"include_embedding": "false"}).status_code
                    for i in range(200)]
        health = {client.get("/healthz").status_code for _ in range(20)}
    injected = statuses.count(500)
    assert set(statuses) == {200, 500}
    assert 0.2 <= injected / len(statuses) <= 0.4, injected
    assert health == {200}  # probes and scrapes are not part of the error budget under test
    text = httpx.get(api.url + "/metrics").text
    assert metric_value(text, "http_requests_total",
                        {"method": "GET", "route": "/api/identities/{address}", "status": "500"}) == injected
    # Same seed, same sequence: a rehearsal that injects this fault is reproducible.
    again = services("api", {**libpq_env(database), "TARGET_FAULTS": "error_rate=0.3,seed=7"})
    with httpx.Client(base_url=again.url) as client:
        replay = [client.get(f"/api/identities/{address_of(i)}", params={"include_embedding": "false"}).status_code
                  for i in range(200)]
    assert replay == statuses


def test_memory_leak_grows_resident_memory(database, services):
    api = services("api", {**libpq_env(database), "TARGET_FAULTS": "memory_leak_kb_per_request=1024"})
    before = metric_value(httpx.get(api.url + "/metrics").text, "process_resident_memory_bytes")
    with httpx.Client(base_url=api.url) as client:
        for i in range(80):
            client.get(f"/api/identities/{address_of(i)}", params={"include_embedding": "false"})
    after = metric_value(httpx.get(api.url + "/metrics").text, "process_resident_memory_bytes")
    assert after - before >= 60 * 1024 * 1024, (before, after)


def test_wrong_order_is_detectable(database, services):
    healthy = similar(services("api", libpq_env(database)))
    broken = similar(services("api", {**libpq_env(database), "TARGET_FAULTS": "wrong_order=1"}))
    distances = [r["distance"] for r in broken]
    assert distances != sorted(distances)  # what a rehearsal ordering check sees
    assert broken == healthy[::-1]


def test_worker_failures_are_counted_then_the_worker_recovers(services):
    with scratch_db() as database:
        worker = services("worker", {**libpq_env(database), "TRUSTMATH_INTERVAL_SECONDS": "0.2",
                                     "TARGET_FAULTS": "worker_failures=2"}, ready_path="/metrics")
        text = wait_for_metric(worker, "trustmath_runs_total", {"status": "success"}, 1)
        assert metric_value(text, "trustmath_runs_total", {"status": "failure"}) == 2
        assert "injected fault: worker_failures" in worker.log_text()
