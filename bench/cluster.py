"""A throwaway Redis Cluster for the benchmark: three primaries with a replica each, on free loopback ports.

The gateway's cluster mode runs the hit, miss and open-circuit cases against it, beside one Redis.
Every node is a :class:`bench.servers.Server`, stopped by the context manager that started it.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from bench.servers import Server, StartError, base_env, free_port, running

NODES = 6
NODE_TIMEOUT_MS = 5000  # a benchmark loads the machine: no node is failed over for a slow ping


def cluster_node(log_dir: Path, index: int) -> Server:
    """One cluster-enabled redis-server without persistence, its bus on a free port of its own."""
    port, folder = free_port(), log_dir / f"cluster-node{index}"
    folder.mkdir(parents=True, exist_ok=True)
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(folder), "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-port", str(free_port()), "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            "--repl-diskless-sync-delay", "0"]
    return Server(f"cluster-node{index}", argv, base_env(), log_dir, port)


def _ready(nodes: list[Server]) -> bool:
    """Every node says the cluster is ok and every replica is in sync."""
    for node in nodes:
        info = subprocess.run(["redis-cli", "-p", str(node.port), "cluster", "info"], capture_output=True,
                              text=True, timeout=5, check=False).stdout
        if "cluster_state:ok" not in info:
            return False
        replication = subprocess.run(["redis-cli", "-p", str(node.port), "info", "replication"],
                                     capture_output=True, text=True, timeout=5, check=False).stdout
        if "role:slave" in replication and "master_link_status:up" not in replication:
            return False
    return True


@contextmanager
def running_cluster(log_dir: Path, timeout: float = 30.0) -> Iterator[str]:
    """Run the cluster for the duration of the block; yield its nodes as ``REDIS_CLUSTER_NODES`` takes them."""
    with ExitStack() as stack:
        nodes = [stack.enter_context(running(cluster_node(log_dir, index), None)) for index in range(NODES)]
        addresses = [f"127.0.0.1:{node.port}" for node in nodes]
        create = subprocess.run(["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "1",
                                 "--cluster-yes"], capture_output=True, text=True, timeout=timeout, check=False)
        if create.returncode != 0:
            raise StartError(f"redis-cli --cluster create failed\n{create.stdout[-2000:]}\n{create.stderr[-2000:]}")
        deadline = time.monotonic() + timeout
        while not _ready(nodes):
            if time.monotonic() > deadline:
                raise StartError(f"the Redis Cluster did not settle within {timeout} s\n{create.stdout[-2000:]}")
            time.sleep(0.1)
        yield ",".join(addresses)
