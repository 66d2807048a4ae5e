"""A throwaway Redis Sentinel set on loopback ports: one primary, one replica, three sentinels.

``start_sentinel_set(folder)`` yields a :class:`SentinelSet` once every sentinel monitors the primary,
sees the replica and the two other sentinels, so a failover can start as soon as the primary dies.
Sentinels rewrite their configuration file, so each gets its own writable copy in its own folder.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import redis

from tests.support.processes import ManagedProcess, ProcessStartError, RedisServer, base_env, free_port

MASTER = "mymaster"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000


class SentinelProcess(ManagedProcess):
    """One ``redis-server <conf> --sentinel`` on 127.0.0.1."""

    def __init__(self, folder: Path, primary_port: int) -> None:
        self.port = free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.config = folder / "sentinel.conf"
        self.config.write_text("\n".join([
            f"port {self.port}",
            "bind 127.0.0.1",
            f"dir {folder}",
            "sentinel resolve-hostnames no",
            f"sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2",
            f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {MASTER} 1",
            "",
        ]))
        super().__init__(f"sentinel-{self.port}", ["redis-server", str(self.config), "--sentinel"],
                         log_dir=folder, env=base_env(), cwd=folder)

    def client(self) -> redis.Redis:
        """A short-lived client of this sentinel."""
        return redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)

    def master_state(self) -> dict[str, object] | None:
        """What this sentinel says of the master (``SENTINEL MASTER``), or None when it does not answer."""
        client = self.client()
        try:
            return client.sentinel_master(MASTER)  # type: ignore[no-any-return]
        except redis.RedisError:
            return None
        finally:
            client.close()

    def replicas(self) -> list[dict[str, object]]:
        """The replicas this sentinel knows, or [] when it does not answer."""
        client = self.client()
        try:
            return list(client.sentinel_slaves(MASTER))
        except redis.RedisError:
            return []
        finally:
            client.close()


class SentinelSet:
    """The primary, the replica and the three sentinels; ``env()`` points a gateway at them."""

    def __init__(self, primary: RedisServer, replica: RedisServer, sentinels: list[SentinelProcess]) -> None:
        self.primary = primary
        self.replica = replica
        self.sentinels = sentinels

    @property
    def servers(self) -> list[RedisServer]:
        """The two data nodes, the primary first."""
        return [self.primary, self.replica]

    @property
    def addresses(self) -> str:
        """``127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3``, as ``REDIS_SENTINELS`` takes it."""
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def env(self) -> dict[str, str]:
        """The settings that point a gateway at this set."""
        return {"REDIS_SENTINELS": self.addresses, "REDIS_SENTINEL_MASTER": MASTER}

    def master_port(self) -> int | None:
        """The master's port as a majority of sentinels report it, or None without a majority."""
        votes: dict[int, int] = {}
        for sentinel in self.sentinels:
            state = sentinel.master_state()
            if state is not None and "s_down" not in str(state.get("flags", "")):
                port = int(str(state["port"]))
                votes[port] = votes.get(port, 0) + 1
        best = max(votes.items(), key=lambda item: item[1], default=None)
        return best[0] if best is not None and best[1] >= 2 else None

    def master(self) -> RedisServer:
        """The data node that is master now."""
        port = self.master_port()
        for server in self.servers:
            if server.port == port:
                return server
        raise AssertionError(f"no master agreed on by the sentinels (port {port})")

    def wait_for_master(self, port: int, timeout: float) -> float:
        """Wait until the sentinels name ``port`` the master and it accepts writes; return the seconds waited."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.master_port() == port and self._writable(port):
                return time.monotonic() - started
            time.sleep(0.1)
        raise AssertionError(f"the sentinels did not promote 127.0.0.1:{port} within {timeout} s\n"
                             + "\n".join(s.log_text()[-3000:] for s in self.sentinels))

    @staticmethod
    def _writable(port: int) -> bool:
        client = redis.Redis(port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            return client.info("replication").get("role") == "master"
        except redis.RedisError:
            return False
        finally:
            client.close()

    def ready(self) -> bool:
        """Every sentinel sees the master up, the replica linked and the two other sentinels."""
        for sentinel in self.sentinels:
            state = sentinel.master_state()
            if state is None or int(str(state.get("port"))) != self.primary.port:
                return False
            if "down" in str(state.get("flags", "")) or int(str(state.get("num-other-sentinels", 0))) < 2:
                return False
            linked = [r for r in sentinel.replicas() if int(str(r.get("port"))) == self.replica.port
                      and r.get("master-link-status") == "ok" and "down" not in str(r.get("flags", ""))]
            if not linked:
                return False
        return True

    def log_sections(self) -> list[tuple[str, str]]:
        """The logs of every process of the set."""
        return [section for process in (*self.servers, *self.sentinels) for section in process.log_sections()]


@contextmanager
def start_sentinel_set(folder: Path, timeout: float = 20.0) -> Iterator[SentinelSet]:
    """Run a primary, a replica and three sentinels for the duration of the block (stopped by pid)."""
    with ExitStack() as stack:
        primary = RedisServer(folder / "primary")
        stack.callback(primary.stop)
        primary.start()
        replica = RedisServer(folder / "replica", ["--replicaof", "127.0.0.1", str(primary.port)])
        stack.callback(replica.stop)
        replica.start()
        sentinels = []
        for index in range(3):
            sentinel = SentinelProcess(folder / f"sentinel{index}", primary.port)
            stack.callback(sentinel.stop)
            sentinel.start()
            sentinels.append(sentinel)
        topology = SentinelSet(primary, replica, sentinels)
        deadline = time.monotonic() + timeout
        while not topology.ready():
            for process in (*topology.servers, *sentinels):
                if not process.running():
                    raise ProcessStartError(f"{process.name} exited\n{process.log_text()}")
            if time.monotonic() > deadline:
                raise ProcessStartError("the sentinel set did not settle within "
                                        f"{timeout} s\n" + "\n".join(s.log_text() for s in sentinels))
            time.sleep(0.1)
        yield topology
