"""The TrustMath worker: recompute global trust from trust_event every interval, store it in trust_score.

    PYTHONPATH=include/target python -m aura_target.worker   # env: WORKER_PORT, TRUSTMATH_*, PG*, ...

Each run reads the graph, computes (aura_target.trustmath.compute_trust) and replaces trust_score in
one transaction, so readers see either the previous scores or the new ones. A failed run is counted
and logged; the loop goes on. SIGTERM/SIGINT stop it after the current run.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

import psycopg
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server

from .config import ConfigError, ServiceConfig, configure_logging, database_summary, env_float, env_int
from .faults import ALL_RUNS, FaultConfigError, Faults, faults_from_environment
from .trustmath import TrustResult, compute_trust

log = logging.getLogger("aura_target.worker")

RUNS = Counter("trustmath_runs_total", "TrustMath runs by outcome", ["status"])
RUN_DURATION = Histogram("trustmath_run_duration_seconds", "Duration of one TrustMath run",
                         buckets=(.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60))
LAST_SUCCESS = Gauge("trustmath_last_success_timestamp_seconds", "Unix time of the last successful run")
GRAPH_SIZE = Gauge("trustmath_graph_size", "Size of the trust graph in the last successful run", ["kind"])
ITERATIONS = Gauge("trustmath_iterations", "Power iterations of the last successful run")
CONVERGED = Gauge("trustmath_converged", "1 if the last successful run converged within max iterations")
BUILD_INFO = Gauge("aura_build_info", "Release of the running service (value is always 1)",
                   ["version", "service"])


class InjectedFailure(RuntimeError):
    pass


class TrustMathWorker:
    def __init__(self, faults: Faults, alpha: float, pre_trusted: list[str], tolerance: float,
                 max_iterations: int) -> None:
        self.faults = faults
        self.alpha, self.pre_trusted = alpha, pre_trusted
        self.tolerance, self.max_iterations = tolerance, max_iterations
        self.runs = 0

    def run_once(self) -> TrustResult:
        self.runs += 1
        failures = self.faults.worker_failures
        if failures == ALL_RUNS or self.runs <= failures:
            raise InjectedFailure(f"injected fault: worker_failures (run {self.runs})")
        # A fresh connection per run: a worker that outlives a database restart recovers by itself.
        with psycopg.connect(connect_timeout=10) as conn:
            events = conn.execute("SELECT from_address, to_address, trust_score FROM trust_event").fetchall()
            result = compute_trust(events, alpha=self.alpha, pre_trusted=self.pre_trusted,
                                   tolerance=self.tolerance, max_iterations=self.max_iterations)
            with conn.transaction():
                conn.execute("DELETE FROM trust_score")
                with conn.cursor().copy("COPY trust_score (address, score) FROM STDIN") as copy:
                    for address, score in result.scores.items():
                        copy.write_row((address, score))
        return result

    def observed_run(self) -> bool:
        started = time.perf_counter()
        try:
            result = self.run_once()
        except Exception as exc:  # counted and logged; the next interval tries again
            RUNS.labels(status="failure").inc()
            RUN_DURATION.observe(time.perf_counter() - started)
            log.error("trustmath run %d failed: %s: %s", self.runs, type(exc).__name__, str(exc).strip())
            return False
        RUNS.labels(status="success").inc()
        RUN_DURATION.observe(time.perf_counter() - started)
        LAST_SUCCESS.set(time.time())
        GRAPH_SIZE.labels(kind="nodes").set(result.nodes)
        GRAPH_SIZE.labels(kind="edges").set(result.edges)
        ITERATIONS.set(result.iterations)
        CONVERGED.set(1 if result.converged else 0)
        if not result.converged:
            log.warning("trustmath run %d did not converge in %d iterations (delta %.3g)",
                        self.runs, result.iterations, result.delta)
        log.debug("trustmath run %d: %d nodes, %d edges, %d iterations", self.runs, result.nodes,
                  result.edges, result.iterations)
        return True


def main() -> int:
    log_ = configure_logging("worker")
    try:
        config = ServiceConfig.from_environment()
        faults = faults_from_environment()
        worker = TrustMathWorker(
            faults,
            alpha=env_float("TRUSTMATH_ALPHA", 0.15),
            pre_trusted=[a.strip().lower() for a in os.environ.get("TRUSTMATH_PRETRUSTED", "").split(",") if a.strip()],
            tolerance=env_float("TRUSTMATH_TOLERANCE", 1e-9),
            max_iterations=env_int("TRUSTMATH_MAX_ITERATIONS", 200, low=1, high=100000),
        )
        if worker.alpha > 1:
            raise ConfigError(f"TRUSTMATH_ALPHA={worker.alpha}: must be between 0 and 1")
    except (ConfigError, FaultConfigError) as exc:
        log_.error("refusing to start: %s", exc)
        return 2

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    # Both outcomes exist from the start, so rate(...{status="failure"}) is 0, not "no data".
    RUNS.labels(status="success")
    RUNS.labels(status="failure")
    BUILD_INFO.labels(version=config.version, service="worker").set(1)
    server, _thread = start_http_server(config.worker_port, addr=config.host, registry=REGISTRY)
    log_.info("worker %s: metrics on %s:%d, database %s, every %gs, faults=%s", config.version, config.host,
              config.worker_port, database_summary(), config.trustmath_interval_seconds, faults.active or "none")
    while not stop.is_set():
        worker.observed_run()
        stop.wait(config.trustmath_interval_seconds)
    server.shutdown()
    log_.info("worker stopped after %d runs", worker.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
