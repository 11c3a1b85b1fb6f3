"""Benchmark POST /api/similarity at a fixed arrival rate (open loop) against a real HNSW index.

    .venv/bin/python bench/similarity_endpoint.py [--rate 20] [--duration 30] [--identities 10000] [--k 5]

Loads clustered identities into a scratch database on the embedded stack (.stack/stack.env), builds
the HNSW index (m=16, ef_construction=64), starts the API, and sends requests on a fixed schedule
whatever the responses do: latency is measured from each request's scheduled time, so a slow server
cannot hide its queueing (no coordinated omission). Prints p50/p95/p99, errors and achieved rate.
The database is dropped and the API stopped at the end, also on Ctrl-C or SIGTERM.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import psycopg
from pgvector.psycopg import register_vector

ROOT = Path(__file__).resolve().parents[1]
DIMENSION = 1536


def load_stack_env() -> None:
    env_file = Path(os.environ.get("STACK_DIR", ROOT / ".stack")) / "stack.env"
    if not env_file.exists():
        raise SystemExit(f"{env_file} is missing: start the stack first (make up)")
    for line in env_file.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            os.environ.setdefault(key, json.loads(value) if value.startswith('"') else value)


def connection(env: str, database: str | None = None) -> dict:
    c = json.loads(os.environ[env])
    return {"host": c["host"], "port": c["port"], "user": c["login"], "password": c["password"],
            "dbname": database or c["schema"]}


def clustered(count: int, clusters: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    centres = rng.standard_normal((clusters, DIMENSION))
    members = rng.integers(0, clusters, count)
    return (centres[members] + 0.3 * rng.standard_normal((count, DIMENSION))).astype(np.float32), centres


def prepare_database(name: str, count: int, rng: np.random.Generator) -> np.ndarray:
    app_user = connection("AIRFLOW_CONN_STAGING_DB")["user"]
    with psycopg.connect(**connection("AIRFLOW_CONN_STAGING_DB_ADMIN"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" OWNER "{app_user}"')
    with psycopg.connect(**connection("AIRFLOW_CONN_STAGING_DB_ADMIN", name), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    embeddings, centres = clustered(count, max(10, count // 200), rng)
    started = time.perf_counter()
    with psycopg.connect(**connection("AIRFLOW_CONN_STAGING_DB", name), autocommit=True) as conn:
        register_vector(conn)
        conn.execute((ROOT / "include/sql/init_db/01_tables.sql").read_text())
        with conn.cursor().copy("COPY identity (address, ai_embedding) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(["varchar", "vector"])
            for i, vector in enumerate(embeddings):
                copy.write_row((f"0x{i:040x}", vector))
        loaded = time.perf_counter()
        conn.execute("SET maintenance_work_mem = '512MB'")  # the 64 MB default overflows for 10k x 1536
        conn.execute("CREATE INDEX identity_ai_embedding_idx ON identity"
                     " USING hnsw (ai_embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)")
        conn.execute("ANALYZE identity")
        stored = conn.execute("SELECT count(*) FROM identity WHERE ai_embedding IS NOT NULL").fetchone()[0]
        plan = conn.execute("EXPLAIN SELECT address, ai_embedding <=> %(q)s AS distance FROM identity"
                            " ORDER BY ai_embedding <=> %(q)s LIMIT 5", {"q": embeddings[0]}).fetchall()
        uses_index = any("identity_ai_embedding_idx" in row[0] for row in plan)
    print(f"loaded {stored} identities in {loaded - started:.1f}s, HNSW index built in "
          f"{time.perf_counter() - loaded:.1f}s; the API's query plan "
          f"{'uses the HNSW index' if uses_index else 'does NOT use the HNSW index'}", flush=True)
    return centres


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_api(database: str, port: int, log_path: Path) -> subprocess.Popen:
    c = connection("AIRFLOW_CONN_STAGING_DB", database)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "TARGET_"))}
    env.update(PYTHONPATH=str(ROOT / "include/target"), API_PORT=str(port), TARGET_HOST="127.0.0.1",
               PGHOST=c["host"], PGPORT=str(c["port"]), PGUSER=c["user"], PGPASSWORD=c["password"],
               PGDATABASE=database, TARGET_LOG_FILE=str(log_path))
    proc = subprocess.Popen([sys.executable, "-m", "aura_target.api"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"API exited with {proc.returncode}; see {log_path}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"API not ready after 30s; see {log_path}")


async def drive(url: str, bodies: list[bytes], rate: float, duration: float) -> list[tuple[float, int, float]]:
    """Open loop: request i is sent at start + i/rate no matter how earlier ones are doing."""
    results: list[tuple[float, int, float]] = []  # (latency from schedule, status or 0, send lag)
    limits = httpx.Limits(max_connections=500, max_keepalive_connections=100)
    async with httpx.AsyncClient(base_url=url, timeout=30.0, limits=limits) as client:
        async def one(i: int, scheduled: float) -> None:
            sent = time.perf_counter()
            try:
                response = await client.post("/api/similarity", content=bodies[i % len(bodies)],
                                             headers={"content-type": "application/json"})
                ok = response.status_code == 200 and len(response.json()["results"]) > 0
                status = response.status_code if ok else -response.status_code
            except httpx.HTTPError:
                status = 0
            results.append((time.perf_counter() - scheduled, status, sent - scheduled))

        start = time.perf_counter() + 0.05
        total = int(rate * duration)
        tasks = []
        for i in range(total):
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, scheduled)))
        await asyncio.gather(*tasks)
    return results


def server_side(url: str) -> str:
    from prometheus_client.parser import text_string_to_metric_families

    values = {}
    for family in text_string_to_metric_families(httpx.get(url + "/metrics").text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    count = values.get(("vector_search_latency_seconds_count", ()), 0)
    total = values.get(("vector_search_latency_seconds_sum", ()), 0)
    rss = values.get(("process_resident_memory_bytes", ()), 0)
    return (f"server: {int(count)} vector searches, mean query time {1000 * total / max(count, 1):.1f} ms, "
            f"API resident memory {rss / 2**20:.0f} MiB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0, help="arrivals per second (default 20)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load (default 30)")
    parser.add_argument("--identities", type=int, default=10_000)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args()
    load_stack_env()

    # SIGTERM takes the same path as Ctrl-C, so cleanup runs either way.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    database = f"bench_similarity_{uuid.uuid4().hex[:10]}"
    rng = np.random.default_rng(2024)
    api: subprocess.Popen | None = None
    log_path = Path(f"/tmp/{database}-api.log")
    try:
        centres = prepare_database(database, args.identities, rng)
        port = free_port()
        api = start_api(database, port, log_path)
        url = f"http://127.0.0.1:{port}"
        # Query vectors near the data (as a real caller's would be), JSON-encoded once up front so the
        # client spends its CPU on sending, not encoding.
        queries = centres[rng.integers(0, len(centres), 256)] + 0.3 * rng.standard_normal((256, DIMENSION))
        bodies = [json.dumps({"embedding": q.astype(np.float32).tolist(), "k": args.k}).encode() for q in queries]
        for body in bodies[:10]:  # warm-up: connections, plans, index pages in cache
            httpx.post(url + "/api/similarity", content=body, headers={"content-type": "application/json"})
        print(f"driving {args.rate:g} req/s for {args.duration:g}s (open loop, k={args.k})", flush=True)
        began = time.perf_counter()
        results = asyncio.run(drive(url, bodies, args.rate, args.duration))
        elapsed = time.perf_counter() - began
        latencies = np.array([r[0] for r in results])
        errors = sum(1 for r in results if r[1] != 200)
        p50, p95, p99 = (float(np.percentile(latencies, q)) for q in (50, 95, 99))
        summary = {
            "requests": len(results), "errors": errors, "offered_rate": args.rate,
            "achieved_rate": round(len(results) / elapsed, 2),
            "p50_ms": round(1000 * p50, 1), "p95_ms": round(1000 * p95, 1), "p99_ms": round(1000 * p99, 1),
            "max_ms": round(1000 * float(latencies.max()), 1),
            "max_send_lag_ms": round(1000 * max(r[2] for r in results), 1),
            "identities": args.identities, "k": args.k, "duration_s": args.duration,
        }
        print(f"requests {summary['requests']}  errors {errors}  achieved {summary['achieved_rate']} req/s "
              f"(offered {args.rate:g})")
        print(f"latency p50 {summary['p50_ms']} ms  p95 {summary['p95_ms']} ms  p99 {summary['p99_ms']} ms  "
              f"max {summary['max_ms']} ms  (client send lag max {summary['max_send_lag_ms']} ms)")
        print(server_side(url))
        if args.json:
            args.json.write_text(json.dumps(summary, indent=2) + "\n")
        return 0 if errors == 0 else 1
    except KeyboardInterrupt:
        print("interrupted: cleaning up", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if api is not None and api.poll() is None:
            api.terminate()
            try:
                api.wait(timeout=10)
            except subprocess.TimeoutExpired:
                api.kill()
                api.wait()
        with psycopg.connect(**connection("AIRFLOW_CONN_STAGING_DB_ADMIN"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        print(f"dropped {database}; API stopped (its log: {log_path})", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
