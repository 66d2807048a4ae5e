"""A throwaway Redis Sentinel set on loopback ports: one primary, one replica, three sentinels.

``start_sentinel_set(folder)`` yields a :class:`SentinelSet` once every sentinel monitors the primary,
sees the replica and the two other sentinels, so a failover can start as soon as the primary dies.
Sentinels rewrite their configuration file, so each gets its own writable copy in its own folder.
"""

from __future__ import annotations

import secrets
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

    def __init__(self, folder: Path, port: int, myid: str, primary_port: int, replica_port: int,
                 peers: list[tuple[int, str]], password: str | None = None,
                 sentinel_password: str | None = None) -> None:
        self.password = sentinel_password
        self.port = port
        folder.mkdir(parents=True, exist_ok=True)
        self.config = folder / "sentinel.conf"
        # The replica and the other sentinels are written in, as a running sentinel would have recorded
        # them, so the set is ready at once instead of after a few rounds of discovery.
        self.config.write_text("\n".join([
            f"port {self.port}",
            "bind 127.0.0.1",
            f"dir {folder}",
            "sentinel resolve-hostnames no",
            f"sentinel myid {myid}",
            f"sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2",
            f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {MASTER} 1",
            f"sentinel known-replica {MASTER} 127.0.0.1 {replica_port}",
            *([f"sentinel auth-pass {MASTER} {password}"] if password else []),
            *([f"requirepass {sentinel_password}", f"sentinel sentinel-pass {sentinel_password}"]
              if sentinel_password else []),
            *(f"sentinel known-sentinel {MASTER} 127.0.0.1 {peer_port} {peer_id}" for peer_port, peer_id in peers),
            "",
        ]))
        super().__init__(f"sentinel-{self.port}", ["redis-server", str(self.config), "--sentinel"],
                         log_dir=folder, env=base_env(), cwd=folder)

    def client(self) -> redis.Redis:
        """A short-lived client of this sentinel."""
        return redis.Redis(port=self.port, password=self.password, socket_timeout=0.5, socket_connect_timeout=0.5)

    def master_state(self) -> dict[str, object] | None:
        """What this sentinel says of the master (``SENTINEL MASTER``), or None when it does not answer."""
        client = self.client()
        try:
            state: dict[str, object] = client.sentinel_master(MASTER)  # type: ignore[assignment]
            return state
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


class DataNode(RedisServer):
    """A redis-server of the set, which may require a password (also for the readiness PING)."""

    def __init__(self, log_dir: Path, extra_args: list[str], password: str | None) -> None:
        super().__init__(log_dir, extra_args)
        self.password = password

    def client(self, **options: object) -> redis.Redis:
        """A client of this node, with its password."""
        return super().client(**{"password": self.password, **options})


class SentinelSet:
    """The primary, the replica and the three sentinels; ``env()`` points a gateway at them."""

    def __init__(self, primary: RedisServer, replica: RedisServer, sentinels: list[SentinelProcess],
                 password: str | None = None, sentinel_password: str | None = None) -> None:
        self.password = password
        self.sentinel_password = sentinel_password
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
        env = {"REDIS_SENTINELS": self.addresses, "REDIS_SENTINEL_MASTER": MASTER}
        if self.password:
            env["REDIS_PASSWORD"] = self.password
        if self.sentinel_password:
            env["REDIS_SENTINEL_PASSWORD"] = self.sentinel_password
        return env


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
            if self.master_port() == port and _role(port, self.password) == "master":
                return time.monotonic() - started
            time.sleep(0.1)
        raise AssertionError(f"the sentinels did not promote 127.0.0.1:{port} within {timeout} s\n"
                             + "\n".join(s.log_text()[-3000:] for s in self.sentinels))

    def ready(self) -> bool:
        """Every sentinel sees the first primary up, the replica linked and the two other sentinels."""
        return self._settled(self.primary, self.replica)

    def ready_for_failover(self) -> bool:
        """Like :meth:`ready` for whichever node is master now (after a failover and a restart)."""
        port = self.master_port()
        masters = [s for s in self.servers if s.port == port]
        replicas = [s for s in self.servers if s.port != port and s.running()]
        if not masters or not replicas:
            return False
        return _linked(replicas[0], masters[0].port, self.password) and self._settled(masters[0], replicas[0])

    def _settled(self, master: RedisServer, replica: RedisServer) -> bool:
        for sentinel in self.sentinels:
            state = sentinel.master_state()
            if state is None or int(str(state.get("port"))) != master.port:
                return False
            if "down" in str(state.get("flags", "")) or int(str(state.get("num-other-sentinels", 0))) < 2:
                return False
            if not any(int(str(r.get("port"))) == replica.port and "down" not in str(r.get("flags", ""))
                       for r in sentinel.replicas()):
                return False
        return True

    def log_sections(self) -> list[tuple[str, str]]:
        """The logs of every process of the set."""
        return [section for process in (*self.servers, *self.sentinels) for section in process.log_sections()]


def _replication(port: int, password: str | None) -> dict[str, object]:
    client = redis.Redis(port=port, password=password, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        return dict(client.info("replication"))
    except redis.RedisError:
        return {}
    finally:
        client.close()


def _role(port: int, password: str | None) -> object:
    return _replication(port, password).get("role")


def _linked(replica: RedisServer, master_port: int, password: str | None) -> bool:
    """Whether ``replica`` says it is in sync with the master on ``master_port``."""
    info = _replication(replica.port, password)
    return info.get("master_link_status") == "up" and int(str(info.get("master_port", 0))) == master_port


@contextmanager
def start_sentinel_set(folder: Path, timeout: float = 20.0, password: str | None = None,
                       sentinel_password: str | None = None) -> Iterator[SentinelSet]:
    """Run a primary, a replica and three sentinels for the duration of the block (stopped by pid).

    ``password``: the data nodes' ``requirepass`` (and ``masterauth``); ``sentinel_password``: the sentinels'.
    """
    with ExitStack() as stack:
        # No 5 s wait before a full sync (redis' default for diskless sync), on either side of a failover.
        quick_sync = ["--repl-diskless-sync-delay", "0",
                      *(["--requirepass", password, "--masterauth", password] if password else [])]
        primary = DataNode(folder / "primary", quick_sync, password)
        stack.callback(primary.stop)
        primary.start()
        replica = DataNode(folder / "replica", [*quick_sync, "--replicaof", "127.0.0.1", str(primary.port)], password)
        stack.callback(replica.stop)
        replica.start()
        # Linked before the sentinels start, so their first look at the replica finds it in sync.
        replica.wait_until(lambda: _linked(replica, primary.port, password), timeout, "link to the primary")
        sentinels = []
        ports = [free_port() for _ in range(3)]
        ids = [secrets.token_hex(20) for _ in ports]
        for index, (port, myid) in enumerate(zip(ports, ids, strict=True)):
            peers = [(p, i) for p, i in zip(ports, ids, strict=True) if p != port]
            sentinel = SentinelProcess(folder / f"sentinel{index}", port, myid, primary.port, replica.port, peers,
                                       password, sentinel_password)
            stack.callback(sentinel.stop)
            sentinel.start()
            sentinels.append(sentinel)
        topology = SentinelSet(primary, replica, sentinels, password, sentinel_password)
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
