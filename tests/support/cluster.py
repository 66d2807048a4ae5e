"""A throwaway Redis Cluster on loopback ports: three primaries with one replica each.

``start_cluster(folder)`` runs six ``redis-server --cluster-enabled yes`` processes, joins them with
``redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes`` and yields a :class:`ClusterSet`
once every node agrees that all 16384 slots are served and every replica is in sync, so a failover
can start as soon as a primary dies. Each node keeps its ``nodes.conf`` in its own folder; every
process is stopped by its pid.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster

from tests.support.processes import ProcessStartError, RedisServer, base_env, free_port

NODE_TIMEOUT_MS = 3000  # a shared cluster: a node stalled by a busy machine is not failed over at once


class ClusterNodeServer(RedisServer):
    """One cluster-enabled redis-server (which may require a password, for the readiness PING too)."""

    def __init__(self, folder: Path, node_timeout_ms: int, password: str | None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        # The cluster bus gets a free port of its own (by default it is the port + 10000, maybe taken).
        args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(node_timeout_ms), "--cluster-port", str(free_port()),
                # A replica may take over however long it was cut off, and syncs without a 5 s wait.
                "--cluster-replica-validity-factor", "0", "--repl-diskless-sync-delay", "0",
                *(["--requirepass", password, "--masterauth", password] if password else [])]
        super().__init__(folder, args)
        self.password = password

    def client(self, **options: Any) -> redis.Redis:
        """A plain client of this one node, with its password."""
        return super().client(**{"password": self.password, **options})

    def info(self, section: str) -> dict[str, Any]:
        """``INFO <section>`` of this node, or {} when it does not answer."""
        probe = redis.Redis(port=self.port, password=self.password, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            return dict(probe.info(section))
        except redis.RedisError:
            return {}
        finally:
            probe.close()

    def role(self) -> str | None:
        """``master`` or ``slave`` as the node says now (None when it does not answer)."""
        role = self.info("replication").get("role")
        return None if role is None else str(role)


class ClusterSet:
    """The six nodes; ``env()`` points a gateway at them, ``client()`` inspects them."""

    def __init__(self, nodes: list[ClusterNodeServer], password: str | None) -> None:
        self.nodes = nodes
        self.password = password
        self._clients: list[RedisCluster] = []

    @property
    def seeds(self) -> str:
        """``127.0.0.1:p1,...`` of every node, as ``REDIS_CLUSTER_NODES`` takes it."""
        return ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def env(self) -> dict[str, str]:
        """The settings that point a gateway at this cluster."""
        return {"REDIS_CLUSTER_NODES": self.seeds, **({"REDIS_PASSWORD": self.password} if self.password else {})}

    def client(self) -> RedisCluster:
        """A cluster client of the running nodes (closed when the cluster stops)."""
        client = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", n.port) for n in self.nodes if n.running()],
                              password=self.password, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._clients.append(client)
        return client

    def primaries(self) -> list[ClusterNodeServer]:
        """The running nodes that are primaries now."""
        return [node for node in self.nodes if node.running() and node.role() == "master"]

    def replica_of(self, primary: ClusterNodeServer) -> ClusterNodeServer:
        """The running node that replicates ``primary``."""
        for node in self.nodes:
            info = node.info("replication") if node.running() else {}
            if info.get("role") == "slave" and int(info.get("master_port", 0)) == primary.port:
                return node
        raise AssertionError(f"no replica of 127.0.0.1:{primary.port}")

    def keys(self, pattern: str) -> list[bytes]:
        """Every key matching ``pattern`` on every primary (SCAN per node)."""
        return [key for node in self.primaries() for key in node.client().scan_iter(pattern, count=1000)]

    def listeners(self, channel: str) -> int:
        """Connections subscribed to ``channel`` on any node (a cluster broadcasts every message)."""
        total = 0
        for node in self.nodes:
            if node.running():
                total += int(node.client().pubsub_numsub(channel)[0][1])
        return total

    def settled(self) -> bool:
        """Every running node sees all slots served, and every primary has a replica in sync."""
        for node in self.nodes:
            if not node.running():
                continue
            if _cluster_state(node) != "ok":
                return False
        primaries = self.primaries()
        if len(primaries) != 3:
            return False
        for primary in primaries:
            try:
                replica = self.replica_of(primary)
            except AssertionError:
                return False
            if replica.info("replication").get("master_link_status") != "up":
                return False
        return True

    def wait_for_promotion(self, replica: ClusterNodeServer, timeout: float) -> float:
        """Wait until ``replica`` is a primary serving its slots (every node agrees); return the seconds waited."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            running = [n for n in self.nodes if n.running()]
            if replica.role() == "master" and all(_cluster_state(n) == "ok" for n in running):
                return time.monotonic() - started
            time.sleep(0.05)
        raise AssertionError(f"127.0.0.1:{replica.port} was not promoted within {timeout} s\n"
                             + "\n".join(n.log_text()[-2000:] for n in self.nodes))

    def close_clients(self) -> None:
        """Close the inspection clients."""
        for client in self._clients:
            client.close()
        self._clients = []

    def log_sections(self) -> list[tuple[str, str]]:
        """The logs of every node."""
        return [section for node in self.nodes for section in node.log_sections()]


def _cluster_state(node: ClusterNodeServer) -> str | None:
    probe = redis.Redis(port=node.port, password=node.password, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        state = probe.cluster("INFO").get("cluster_state")
        return None if state is None else str(state)
    except redis.RedisError:
        return None
    finally:
        probe.close()


@contextmanager
def start_cluster(folder: Path, timeout: float = 30.0, node_timeout_ms: int = NODE_TIMEOUT_MS,
                  password: str | None = None) -> Iterator[ClusterSet]:
    """Run three primaries and three replicas as one cluster for the duration of the block (stopped by pid)."""
    with ExitStack() as stack:
        nodes = []
        for index in range(6):
            node = ClusterNodeServer(folder / f"node{index}", node_timeout_ms, password)
            stack.callback(node.stop)
            node.start()
            nodes.append(node)
        topology = ClusterSet(nodes, password)
        stack.callback(topology.close_clients)
        create = subprocess.run(
            ["redis-cli", *(["-a", password, "--no-auth-warning"] if password else []), "--cluster", "create",
             *(f"127.0.0.1:{node.port}" for node in nodes), "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True, text=True, timeout=timeout, check=False, env=base_env(), cwd=folder)
        if create.returncode != 0:
            raise ProcessStartError(f"redis-cli --cluster create failed\n{create.stdout}\n{create.stderr}")
        deadline = time.monotonic() + timeout
        while not topology.settled():
            for node in nodes:
                if not node.running():
                    raise ProcessStartError(f"{node.name} exited\n{node.log_text()}")
            if time.monotonic() > deadline:
                raise ProcessStartError(f"the cluster did not settle within {timeout} s\n{create.stdout}\n"
                                        + "\n".join(n.log_text()[-2000:] for n in nodes))
            time.sleep(0.1)
        yield topology
