"""Configuration from environment variables only (never argv: secrets must not show in `ps`).

The database connection is libpq's own environment (PGHOST PGPORT PGUSER PGPASSWORD PGDATABASE):
psycopg reads it directly, so no DSN string is ever built, printed or logged here.
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

VERSION_FILE = Path(__file__).resolve().parents[1] / "VERSION"
DEFAULT_VERSION = "0.0.0+dev"  # a working tree that is not a built release has no VERSION file


class ConfigError(ValueError):
    pass


def release_version() -> str:
    if VERSION_FILE.is_file():
        return VERSION_FILE.read_text().strip() or DEFAULT_VERSION
    return DEFAULT_VERSION


def env_int(name: str, default: int, low: int = 0, high: int = 65535) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: not an integer") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={raw!r}: must be between {low} and {high}")
    return value


def env_float(name: str, default: float, low: float = 0.0) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: not a number") from None
    if not value >= low:
        raise ConfigError(f"{name}={raw!r}: must be >= {low}")
    return value


@dataclass(frozen=True)
class ServiceConfig:
    host: str
    api_port: int
    worker_port: int
    web_port: int
    api_base_url: str
    hnsw_ef_search: int
    embedding_dimension: int  # fallback only: the API reads the real one from identity.ai_embedding
    pool_min_size: int
    pool_max_size: int
    trustmath_interval_seconds: float
    version: str

    @classmethod
    def from_environment(cls) -> ServiceConfig:
        api_port = env_int("API_PORT", 3000)
        return cls(
            host=os.environ.get("TARGET_HOST", "127.0.0.1"),
            api_port=api_port,
            worker_port=env_int("WORKER_PORT", 3001),
            web_port=env_int("WEB_PORT", 3002),
            api_base_url=os.environ.get("API_BASE_URL", f"http://127.0.0.1:{api_port}").rstrip("/"),
            hnsw_ef_search=env_int("HNSW_EF_SEARCH", 100, low=1, high=1000),
            embedding_dimension=env_int("EMBEDDING_DIMENSION", 1536, low=1, high=16000),
            pool_min_size=env_int("DB_POOL_MIN_SIZE", 1, low=0, high=100),
            pool_max_size=env_int("DB_POOL_MAX_SIZE", 10, low=1, high=100),
            trustmath_interval_seconds=env_float("TRUSTMATH_INTERVAL_SECONDS", 5.0, low=0.01),
            version=release_version(),
        )


def configure_logging(service: str) -> logging.Logger:
    """Log to TARGET_LOG_FILE if set (the rehearsal greps it for ERROR/WARN), else stderr.

    With a log file, warnings and errors also go to stderr: a refusal to start must be seen by
    whoever launched the service, not only by whoever reads the file.
    """
    log_file = os.environ.get("TARGET_LOG_FILE")
    formatter = logging.Formatter(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers[0].setLevel(logging.WARNING)
        handlers.append(logging.FileHandler(log_file))
    for handler in handlers:
        handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(os.environ.get("TARGET_LOG_LEVEL", "INFO").upper())
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per proxied request is noise
    return logging.getLogger(f"aura_target.{service}")


def database_summary() -> str:
    """Where we connect, for logs: host/port/database only, never the user's password."""
    return (f"host={os.environ.get('PGHOST', '(libpq default)')} port={os.environ.get('PGPORT', '5432')} "
            f"dbname={os.environ.get('PGDATABASE', '(libpq default)')}")
