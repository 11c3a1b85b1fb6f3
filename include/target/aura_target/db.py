"""Connection pool shared by the API's handlers, with the pgvector adapter on every connection."""
from __future__ import annotations

import psycopg
from pgvector.psycopg import register_vector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from psycopg_pool import ConnectionPool


def _configure(conn: psycopg.Connection) -> None:
    register_vector(conn)
    conn.commit()  # register_vector queries the catalog: do not leave the connection idle in a transaction


def make_pool(min_size: int, max_size: int) -> ConnectionPool:
    # conninfo "" = libpq environment (PGHOST, PGPASSWORD, ...): no DSN string exists to leak.
    # open=False: the service starts even if the database is down; /readyz reports it instead.
    return ConnectionPool("", min_size=min_size, max_size=max_size, configure=_configure, open=False,
                          timeout=10.0, name="aura-api")


def column_dimension(conn: psycopg.Connection, table: str, column: str) -> int | None:
    """The n of a vector(n) column (pgvector keeps it in atttypmod), or None if it does not exist."""
    row = conn.execute(
        "SELECT a.atttypmod FROM pg_attribute a"
        " WHERE a.attrelid = to_regclass(%s) AND a.attname = %s AND NOT a.attisdropped",
        (table, column)).fetchone()
    return row[0] if row and row[0] > 0 else None


class PoolCollector(Collector):
    """Pool gauges read at scrape time, so they are never stale."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def collect(self):
        stats = self.pool.get_stats()
        for name, key, doc in (
            ("db_pool_size", "pool_size", "Connections currently in the pool (busy or idle)"),
            ("db_pool_available", "pool_available", "Idle connections ready for a request"),
            ("db_pool_requests_waiting", "requests_waiting", "Requests waiting for a connection"),
        ):
            yield GaugeMetricFamily(name, doc, value=stats.get(key, 0))
        yield GaugeMetricFamily("db_pool_max_size", "Configured pool maximum", value=self.pool.max_size)
        yield GaugeMetricFamily("db_pool_connection_errors", "Failed connection attempts so far",
                                value=stats.get("connections_errors", 0))
