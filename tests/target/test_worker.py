"""The TrustMath worker as a process: scores land in trust_score, runs and graph size are measured."""
from __future__ import annotations

import time

import httpx
import psycopg
import pytest
from targetlib import address_of, dsn_for, libpq_env, metric_value, scratch_db

from aura_target.trustmath import compute_trust

FAST = {"TRUSTMATH_INTERVAL_SECONDS": "0.2"}


def wait_for_metric(service, name: str, labels: dict, at_least: float, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = httpx.get(service.url + "/metrics").text
        value = metric_value(text, name, labels)
        if value is not None and value >= at_least:
            return text
        time.sleep(0.1)
    raise AssertionError(f"{name}{labels} never reached {at_least}:\n{service.log_text()[-2000:]}")


def test_worker_scores_match_the_pure_function_and_reach_the_api(services):
    a, b, c, d = (address_of(i, "b") for i in range(4))
    events = [(a, c, 1.0), (b, c, 2.0), (c, a, 0.5), (d, c, 1.0), (a, b, 1.0)]
    with scratch_db() as database:
        with psycopg.connect(dsn_for(database)) as conn:
            conn.cursor().executemany(
                "INSERT INTO trust_event (from_address, to_address, trust_score, event_type)"
                " VALUES (%s, %s, %s, 'attestation')", events)
        worker = services("worker", {**libpq_env(database), **FAST}, ready_path="/metrics")
        text = wait_for_metric(worker, "trustmath_runs_total", {"status": "success"}, 1)
        expected = compute_trust(events)
        with psycopg.connect(dsn_for(database)) as conn:
            stored = dict(conn.execute("SELECT address, score FROM trust_score").fetchall())
        assert stored == pytest.approx(expected.scores, abs=1e-12)
        assert metric_value(text, "trustmath_graph_size", {"kind": "nodes"}) == 4
        assert metric_value(text, "trustmath_graph_size", {"kind": "edges"}) == 5
        assert metric_value(text, "trustmath_runs_total", {"status": "failure"}) == 0
        assert metric_value(text, "trustmath_last_success_timestamp_seconds") > time.time() - 60
        assert metric_value(text, "trustmath_run_duration_seconds_count") >= 1
        assert metric_value(text, "aura_build_info", {"service": "worker"}) == 1

        # The next run picks up a new event; the API serves what the worker stored.
        with psycopg.connect(dsn_for(database)) as conn:
            conn.execute("INSERT INTO trust_event (from_address, to_address, trust_score, event_type)"
                         " VALUES (%s, %s, 1.0, 'attestation')", (c, d))
        after = compute_trust(events + [(c, d, 1.0)]).scores
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with psycopg.connect(dsn_for(database)) as conn:
                stored = dict(conn.execute("SELECT address, score FROM trust_score").fetchall())
            if stored.get(d) == pytest.approx(after[d], abs=1e-12):
                break
            time.sleep(0.1)
        assert stored == pytest.approx(after, abs=1e-12)
        api = services("api", libpq_env(database), ready_path="/readyz")
        body = httpx.get(f"{api.url}/api/identities/{c}/trust").json()
        assert body["score"] == pytest.approx(after[c], abs=1e-12)


def test_empty_graph_runs_successfully_and_stores_nothing(services):
    with scratch_db() as database:
        with psycopg.connect(dsn_for(database)) as conn:  # stale scores from an earlier graph go away
            conn.execute("INSERT INTO trust_score (address, score) VALUES (%s, 1.0)", (address_of(1, "c"),))
        worker = services("worker", {**libpq_env(database), **FAST}, ready_path="/metrics")
        text = wait_for_metric(worker, "trustmath_runs_total", {"status": "success"}, 2)
        assert metric_value(text, "trustmath_graph_size", {"kind": "nodes"}) == 0
        assert metric_value(text, "trustmath_runs_total", {"status": "failure"}) == 0
        with psycopg.connect(dsn_for(database)) as conn:
            assert conn.execute("SELECT count(*) FROM trust_score").fetchone()[0] == 0


def test_a_failing_run_is_counted_and_the_worker_keeps_going(services):
    # A database without the app schema: every run fails on the missing trust_event table.
    with scratch_db(with_schema=False) as database:
        worker = services("worker", {**libpq_env(database), **FAST}, ready_path="/metrics")
        text = wait_for_metric(worker, "trustmath_runs_total", {"status": "failure"}, 2)
        assert metric_value(text, "trustmath_runs_total", {"status": "success"}) == 0
        assert metric_value(text, "trustmath_last_success_timestamp_seconds") == 0
        assert worker.proc.poll() is None
        assert "ERROR" in worker.log_text() and "trust_event" in worker.log_text()
        worker.stop()  # SIGTERM: the loop ends cleanly
        assert worker.proc.returncode == 0
