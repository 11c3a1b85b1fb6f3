"""Fixtures for the reference target: services as real subprocesses, always stopped in teardown.

Helpers (scratch databases with the app schema, clustered data, metric parsing) are in targetlib.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from targetlib import Service, free_port


@contextmanager
def _service_starter(logs: Path) -> Iterator:
    started: list[Service] = []

    def start(module: str, env: dict[str, str], ready_path: str = "/healthz", **kwargs) -> Service:
        service = Service(module, env, free_port(), logs / f"{module}-{len(started)}.log", **kwargs)
        started.append(service)
        return service.wait_ready(ready_path)

    try:
        yield start
    finally:
        for service in started:
            service.stop()


@pytest.fixture
def services(tmp_path) -> Iterator:
    """start(module, env, ready_path) -> ready Service; stopped at the end of the test."""
    with _service_starter(tmp_path) as start:
        yield start


@pytest.fixture(scope="module")
def module_services(tmp_path_factory) -> Iterator:
    """Like `services`, but the processes live for the whole test module."""
    with _service_starter(tmp_path_factory.mktemp("service-logs")) as start:
        yield start
