"""Fixtures that run real servers on free ports: redis-server (alone, as a Sentinel set, as a cluster), the sample
services and the gateway.

Their processes are stopped at the end of the fixture's scope even when a test
fails, and a failed test's report carries the tail of their logs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import ClusterSet, start_cluster
from tests.support.processes import (
    GatewayProcess,
    RedisServer,
    SampleServices,
    start_gateway,
    start_redis,
    start_samples,
)
from tests.support.sentinel import SentinelSet, start_sentinel_set
from tests.support.topology import TOPOLOGIES, SharedRedis


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Attach the logs of the servers a failed test used to its report."""
    report = yield
    if report.failed and report.when == "call":
        for name, value in getattr(item, "funcargs", {}).items():
            sections = getattr(value, "log_sections", None)
            if callable(sections):
                for title, text in sections():
                    report.sections.append((f"{name}: {title}", text))
    return report


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A throwaway redis-server for one test (``.url``, ``.client()``, ``.kill()``, ``.restart()``, ``.pause(s)``)."""
    with start_redis(tmp_path / "redis") as server:
        yield server


@pytest.fixture(scope="session")
def redis_server_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A throwaway redis-server shared by the whole session: use distinct key prefixes, never kill it."""
    with start_redis(tmp_path_factory.mktemp("redis-session")) as server:
        yield server


@pytest.fixture(scope="session")
def sentinel_set_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSet]:
    """One primary, one replica and three sentinels shared by the session: distinct key prefixes, no failovers."""
    with start_sentinel_set(tmp_path_factory.mktemp("sentinel-session")) as topology:
        yield topology


@pytest.fixture(scope="session")
def cluster_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterSet]:
    """A Redis Cluster (three primaries, a replica each, a password) shared by the session: distinct key
    prefixes, never failed over."""
    with start_cluster(tmp_path_factory.mktemp("cluster-session"), password="cluster-secret") as topology:
        yield topology


@pytest.fixture(params=TOPOLOGIES)
def shared_redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SharedRedis]:
    """The test once on each form of Redis: a redis-server of its own, the session's Sentinel set, its cluster."""
    if request.param == "single":
        with start_redis(tmp_path / "redis") as server:
            yield SharedRedis.single(server)
    elif request.param == "sentinel":
        yield SharedRedis.sentinel(request.getfixturevalue("sentinel_set_session"))
    else:
        yield SharedRedis.cluster(request.getfixturevalue("cluster_session"))


class RedisFactory:
    """Starts redis-servers with extra arguments for one test: ``redis_server_factory("--maxmemory", "1mb")``."""

    def __init__(self, stack: ExitStack, log_dir: Path) -> None:
        self.stack = stack
        self.log_dir = log_dir
        self.started: list[RedisServer] = []

    def __call__(self, *extra_args: str) -> RedisServer:
        server = self.stack.enter_context(start_redis(self.log_dir / f"redis{len(self.started)}", extra_args))
        self.started.append(server)
        return server

    def log_sections(self) -> list[tuple[str, str]]:
        """Return the logs of every server started."""
        return [section for server in self.started for section in server.log_sections()]


@pytest.fixture
def redis_server_factory(tmp_path: Path) -> Iterator[RedisFactory]:
    """Start redis-servers with extra arguments (e.g. ``"--rename-command", "KEYS", ""``)."""
    with ExitStack() as stack:
        yield RedisFactory(stack, tmp_path)


@pytest.fixture(scope="session")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SampleServices]:
    """The five sample services on free ports, shared by the session (``.urls``, ``.env()``, ``.faults()``...)."""
    with start_samples(tmp_path_factory.mktemp("samples")) as services:
        yield services


@pytest.fixture
def clean_samples(samples: SampleServices) -> Iterator[SampleServices]:
    """The session's sample services with no faults and zeroed counters, reset again afterwards."""
    samples.reset()
    yield samples
    samples.reset()


class GatewayFactory:
    """Starts gateways for one test: ``gateway_factory(env, workers=1, extra_args=(), wait=True, **options)``."""

    def __init__(self, stack: ExitStack, log_dir: Path) -> None:
        self.stack = stack
        self.log_dir = log_dir
        self.started: list[GatewayProcess] = []

    def __call__(self, env: Mapping[str, str] | None = None, workers: int = 1, extra_args: Sequence[str] = (),
                 **options: Any) -> GatewayProcess:
        log_dir = self.log_dir / f"gateway{len(self.started)}"
        gateway = self.stack.enter_context(start_gateway(env or {}, workers, extra_args, log_dir=log_dir,
                                                         **options))
        self.started.append(gateway)
        return gateway

    def log_sections(self) -> list[tuple[str, str]]:
        """Return the logs of every gateway started."""
        return [section for gateway in self.started for section in gateway.log_sections()]


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[GatewayFactory]:
    """Start real gunicorn gateways on free ports; all are stopped when the test ends."""
    with ExitStack() as stack:
        yield GatewayFactory(stack, tmp_path)

