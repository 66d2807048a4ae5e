"""The three forms of the gateway's Redis for the end-to-end suites: one server, a Sentinel set, a cluster.

The ``shared_redis`` fixture (``tests/conftest.py``) runs a test once on each. One server is started
for the test alone; the Sentinel set and the cluster are shared by the session, so each test gets a
key prefix of its own (``env()`` sets it) and sees only its own keys (``keys()``).
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Callable

import pytest
import redis

from gateway.redis.link import RedisLink, StoreUnavailable
from tests.support.cluster import ClusterSet
from tests.support.processes import REPO_ROOT, RedisServer
from tests.support.sentinel import SentinelSet

TOPOLOGIES = ("single", "sentinel", "cluster")
_prefixes = itertools.count(1)


class SharedRedis:
    """Where one test's gateways keep their shared state, and a look at the keys they wrote."""

    def __init__(self, name: str, env: dict[str, str], primaries: Callable[[], list[redis.Redis]],
                 log_sections: Callable[[], list[tuple[str, str]]]) -> None:
        self.name = name
        self.prefix = f"gwt{next(_prefixes)}:"
        self._env = env
        self._primaries = primaries
        self._log_sections = log_sections

    @classmethod
    def single(cls, server: RedisServer) -> SharedRedis:
        return cls("single", {"REDIS_URL": server.url}, lambda: [server.client()], server.log_sections)

    @classmethod
    def sentinel(cls, topology: SentinelSet) -> SharedRedis:
        return cls("sentinel", topology.env(), lambda: [topology.master().client()], topology.log_sections)

    @classmethod
    def cluster(cls, topology: ClusterSet) -> SharedRedis:
        return cls("cluster", topology.env(), lambda: [node.client() for node in topology.primaries()],
                   topology.log_sections)

    def env(self) -> dict[str, str]:
        """The settings that point a gateway at this Redis, under this test's key prefix."""
        return {**self._env, "REDIS_KEY_PREFIX": self.prefix}

    def keys(self, pattern: str = "*") -> list[bytes]:
        """This test's keys matching ``pattern`` (after the prefix), on every primary."""
        return [key for client in self._primaries() for key in client.scan_iter(self.prefix + pattern, count=1000)]

    def keys_without_ttl(self) -> list[bytes]:
        """This test's keys that would never expire."""
        return [key for client in self._primaries() for key in client.scan_iter(self.prefix + "*", count=1000)
                if client.ttl(key) == -1]

    def log_sections(self) -> list[tuple[str, str]]:
        """The logs of the Redis processes."""
        return self._log_sections()


def gevent_burst(env: dict[str, str], greenlets: int = 200, connections: int = 4) -> str:
    """Run ``greenlets`` PINGs at once under gevent through a link of ``connections`` per node; print the failures.

    Returns ``"<failures> [<first error>]"``: ``"0 []"`` when every greenlet waited its turn. A turn is
    waited for at most the link's socket timeout; it is 5 s here, so a loaded machine (200 greenlets,
    50 turns per connection) still shows whether they wait rather than how fast the machine is.
    """
    script = f"""
from gevent import monkey; monkey.patch_all()
import json, sys, gevent
from gateway.config.settings import load_settings
from gateway.redis.link import RedisLink, StoreUnavailable
s = load_settings(json.loads(sys.argv[1]))
link = RedisLink(s.redis_url, s.redis_key_prefix, sentinel=s.redis_sentinel, cluster=s.redis_cluster,
                 max_connections={connections}, socket_timeout=5.0)
failed = []
def one(n):
    try:
        link.run(lambda client: client.get(link.key("burst", str(n))))
    except StoreUnavailable as exc:
        failed.append(str(exc))
gevent.joinall([gevent.spawn(one, n) for n in range({greenlets})])
print(len(failed), failed[:1])
"""
    done = subprocess.run([sys.executable, "-c", script, json.dumps(env)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def assert_refused_but_open(wrong: RedisLink) -> None:
    """A link Redis refuses (a wrong password): down, and its calls raise StoreUnavailable, nothing else."""
    try:
        assert not wrong.ping() and wrong.status == "down"
        with pytest.raises(StoreUnavailable):
            wrong.run(lambda client: client.get(wrong.key("probe")))
    finally:
        wrong.close()
