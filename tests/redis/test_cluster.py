"""Redis Cluster: the settings, the link, keys and scripts spread over the slots, and a primary killed under load.

The cluster is three primaries with a replica each on loopback ports (``tests/support/cluster.py``),
shared by the session where nothing fails it over. The cache, breaker, stats, invalidation and
scale-out end-to-end suites also run on it (``shared_redis``); the failover case here runs a 2-worker
gunicorn gateway, kills the primary of a breaker's and some cache entries' slots under load, and
counts every answer.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from redis.crc import key_slot

from gateway.breaker.registry import BreakerRegistry
from gateway.breaker.rules import Outcome
from gateway.cache.store import RedisStore
from gateway.clock import FakeClock
from gateway.config.settings import ConfigError, load_settings
from gateway.errors import RateLimited
from gateway.observe.inventory import describe_services
from gateway.redis.link import RedisLink, StoreUnavailable
from gateway.redis.slots import hash_tag
from gateway.traffic.ratelimit import RateLimiter
from tests.breaker.test_core import Harness, Recorder, breaker_settings
from tests.breaker.test_core import TestBreakerScenarios as _Scenarios
from tests.support.chaos import Answer, Load, fetch, kinds, report, wait_for
from tests.support.cluster import ClusterSet, start_cluster
from tests.support.failover import (
    RECOVERY_BOUND_S,
    assert_cache_recovers,
    assert_write_reaches_every_worker,
    gateway_env,
    new_order,
    x_cache,
)
from tests.support.processes import SampleServices, start_gateway
from tests.support.tcp_proxy import TcpProxy
from tests.support.topology import assert_refused_but_open, gevent_burst
from tests.traffic.test_ratelimit import call, limited

TOKEN = "cluster-admin-token"
CACHED = ["/restaurants/1", "/restaurants/2", "/restaurants/3", "/orders/1", "/orders/2"]
FAILING = "/delivery/_debug/status/200"  # its service fails every call: its breaker opens and must stay so
TARGETS = [*CACHED, "/tracking/_debug/status/200", FAILING]
PROMOTION_BOUND_S = 15.0  # node timeout 1 s, then the replica's election: about 2-3 s on loopback


# --- settings -------------------------------------------------------------------------------------

def test_cluster_settings_in_the_usual_form() -> None:
    s = load_settings({"REDIS_CLUSTER_NODES": "c1.internal:7000, c2.internal ,[::1]:7001",
                       "REDIS_PASSWORD": "pw", "REDIS_USERNAME": "gw", "REDIS_TLS": "yes"})
    assert s.redis_url is None and s.redis_sentinel is None and s.web_concurrency == 2
    cluster = s.redis_cluster
    assert cluster is not None
    assert cluster.nodes == (("c1.internal", 7000), ("c2.internal", 6379), ("::1", 7001))
    assert (cluster.password, cluster.username, cluster.tls) == ("pw", "gw", True)
    listed = json.dumps(describe_services(s))
    assert "rediss+cluster://c1.internal:7000,c2.internal:6379,::1:7001" in listed
    assert '"pw"' not in listed and "pw@" not in listed


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"REDIS_CLUSTER_NODES": "c1:7000", "REDIS_URL": "redis://x"}, "REDIS_CLUSTER_NODES"),
        ({"REDIS_CLUSTER_NODES": "c1:7000", "REDIS_SENTINELS": "s1", "REDIS_SENTINEL_MASTER": "m"},
         "REDIS_CLUSTER_NODES"),
        ({"REDIS_CLUSTER_NODES": "c1:7000,,c2"}, "REDIS_CLUSTER_NODES"),
        ({"REDIS_CLUSTER_NODES": "redis://c1:7000"}, "REDIS_CLUSTER_NODES"),
        ({"REDIS_CLUSTER_NODES": "c1:0"}, "REDIS_CLUSTER_NODES"),
        ({"REDIS_CLUSTER_NODES": "c1", "REDIS_DB": "1"}, "REDIS_DB"),
        ({"REDIS_CLUSTER_NODES": "c1", "REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINEL_MASTER"),
        ({"REDIS_CLUSTER_NODES": "c1", "REDIS_USERNAME": "u"}, "REDIS_USERNAME"),
        ({"REDIS_CLUSTER_NODES": "c1", "REDIS_TLS": "maybe"}, "REDIS_TLS"),
        ({"REDIS_CLUSTER_NODES": "c1", "REDIS_KEY_PREFIX": "{gw}:"}, "REDIS_KEY_PREFIX"),
        ({"REDIS_CLUSTER_NODES": "c1", "services": {"a}b": {"prefix": "/ab", "url": "http://x"}}},
         "GATEWAY_CONFIG services.a}b"),
        ({"REDIS_TLS": "true"}, "REDIS_TLS"),
    ],
)
def test_bad_cluster_settings_name_themselves(env: dict[str, Any], setting: str) -> None:
    services = env.pop("services", None)
    with pytest.raises(ConfigError) as raised:
        load_settings(env, {"services": services} if services else None)
    assert raised.value.setting == setting
    assert "\n" not in str(raised.value)


# --- the link -------------------------------------------------------------------------------------

def cluster_link(topology: ClusterSet, prefix: str, **options: Any) -> RedisLink:
    settings = load_settings(topology.env())
    return RedisLink(None, prefix, cluster=settings.redis_cluster, **options)


def test_link_reaches_every_primary_with_the_password(cluster_session: ClusterSet) -> None:
    link = cluster_link(cluster_session, "gwcl:")
    try:
        assert link.ping() and link.status == "up" and link.cluster
        for n in range(30):
            link.run(lambda client: client.set(link.key(f"probe{n}"), b"1", ex=30))  # noqa: B023
        assert len({key_slot(k) for k in cluster_session.keys("gwcl:probe*")}) == 30
        assert all(node.client().dbsize() for node in cluster_session.primaries())  # every primary holds some
        assert link.url is not None and link.url.startswith("redis+cluster://127.0.0.1:")
    finally:
        link.close()
    wrong = load_settings({**cluster_session.env(), "REDIS_PASSWORD": "nope"}).redis_cluster
    assert_refused_but_open(RedisLink(None, "gwcl:", cluster=wrong))


def test_an_unreachable_cluster_at_start_up_is_used_once_it_answers(cluster_session: ClusterSet) -> None:
    """redis-py's client asks for the slots as it is made; the link makes it when a seed first answers."""
    with TcpProxy(cluster_session.nodes[0].port) as seed:
        seed.stalled = True
        settings = load_settings({"REDIS_CLUSTER_NODES": f"127.0.0.1:{seed.port}",
                                  "REDIS_PASSWORD": "cluster-secret"})
        link = RedisLink(None, "gwcu:", cluster=settings.redis_cluster, skip_seconds=0.05)
        script = link.client.register_script("return 7")  # no connection needed
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            link.run(lambda client: client.ping())
        assert time.monotonic() - started < 2.0 and not link.is_up
        seed.stalled = False
        assert wait_for(link.ping, 2.0)
        assert link.run(lambda client: script(keys=["gwcu:x"], args=[], client=client)) == 7
        link.close()


def test_a_burst_of_greenlets_past_the_pool_size_all_get_redis(cluster_session: ClusterSet) -> None:
    """Under gevent, 200 greenlets on 4 connections per node: all wait their turn."""
    assert gevent_burst({**cluster_session.env(), "REDIS_KEY_PREFIX": "gwcg:"}) == "0 []"


# --- keys and scripts spread over the slots -------------------------------------------------------

def test_cache_entries_spread_and_purges_reach_every_primary(cluster_session: ClusterSet) -> None:
    link = cluster_link(cluster_session, "gwcc:")
    store = RedisStore(link)
    paths = [f"/restaurants/{n}" for n in range(24)] + [f"/orders/{n}" for n in range(24)]
    try:
        for path in paths:
            key = _tagged(path)
            store.put(key, path, "v", b"blob", 60.0)
            lock = store.try_lock(key, 5.0)
            assert lock is not None
            store.put(key, path, "w", b"blob2", 60.0, release=(key, lock))  # one script: entry, index, lock
            assert not store.is_locked(key)
        entries = cluster_session.keys("gwcc:cache:e:*")
        assert len(entries) == len(paths)
        holders = [node for node in cluster_session.primaries() if any(node.client().scan_iter("gwcc:cache:e:*"))]
        assert len(holders) == 3  # paths spread over every primary
        snapshot = store.snapshot()
        assert snapshot["keys"] == len(paths) and snapshot["memory_used_bytes"] > 0
        # An invalidation of several paths (several slots) drops each of them.
        assert store.drop_groups(["/orders/1", "/orders/2", "/restaurants/3"]) == 3
        assert store.get_variants(_tagged("/orders/1")) == []
        assert sorted(store.get_variants(_tagged("/orders/3"))) == [b"blob", b"blob2"]
        assert store.purge(prefix="/orders") == 22  # the subtree, on every primary
        assert len(cluster_session.keys("gwcc:cache:e:*")) == 23
        assert store.purge() == 23
        assert cluster_session.keys("gwcc:*") == []
    finally:
        link.close()


def _tagged(path: str) -> str:
    """A cache key as ``ResponseCache`` makes them: starting with its path's hash tag."""
    return hash_tag(path) + "k" + path


def test_breaker_keys_share_a_slot_per_service_and_expire(cluster_session: ClusterSet) -> None:
    link = cluster_link(cluster_session, "gwcb:")
    services = [f"svc{n}" for n in range(12)]
    try:
        settings = load_settings({}, {"services": {name: {"prefix": f"/{name}", "url": "http://127.0.0.1:9"}
                                                   for name in services}})
        registry = BreakerRegistry(settings, link)
        for name in services:
            breaker = registry[name]
            for _ in range(3):
                breaker.after_call(breaker.before_call(), Outcome.FAILURE, 0.01)
            assert breaker.state == "OPEN"
        keys = cluster_session.keys("gwcb:cb:*")
        by_service: dict[str, set[int]] = {}
        for key in keys:
            by_service.setdefault(key.decode().split("{")[1].split("}")[0], set()).add(key_slot(key))
        assert set(by_service) == set(services) and all(len(slots) == 1 for slots in by_service.values())
        assert {k.decode().rsplit(":", 1)[-1] for k in keys} == {"state", "totals", "lat", "w"}
        assert len({slot for slots in by_service.values() for slot in slots}) == len(services)
        assert all(node.client().pttl(k) > 0 for node in cluster_session.primaries()
                   for k in node.client().scan_iter("gwcb:*"))
    finally:
        link.close()


def test_two_instances_share_rate_limits_on_the_cluster(cluster_session: ClusterSet) -> None:
    """Each client's limits are one script call on one slot; clients spread over the slots."""
    links = [cluster_link(cluster_session, "gwcr:") for _ in range(2)]
    try:
        first, second = (RateLimiter(link) for link in links)
        service = limited({"limits": ["4/m", "100/h"]})
        for n in range(4):
            (first, second)[n % 2].check(call(service))
        for limiter in (first, second):
            with pytest.raises(RateLimited):
                limiter.check(call(service))
        for n in range(2, 12):
            assert first.check(call(service, ip=f"10.0.0.{n}"))
        keys = cluster_session.keys("gwcr:rl:*")
        assert len(keys) == 22  # eleven clients, two limits each
        slots: dict[str, set[int]] = {}
        for key in keys:
            slots.setdefault(key.decode().split("{")[1], set()).add(key_slot(key))
        assert all(len(s) == 1 for s in slots.values()) and len({s for v in slots.values() for s in v}) == 11
    finally:
        for link in links:
            link.close()


@pytest.fixture
def make(cluster_session: ClusterSet) -> Any:
    """A breaker harness on the cluster whose scripts run on a FakeClock (the in-process scenarios' ``make``)."""
    opened: list[RedisLink] = []

    def build(timeout: float = 10.0, **breaker: Any) -> Harness:
        clock, recorder = FakeClock(), Recorder()
        link = cluster_link(cluster_session, f"gwcs{len(opened)}-{time.monotonic_ns()}:")
        opened.append(link)
        registry = BreakerRegistry(breaker_settings(timeout, **breaker), link, clock, [recorder], shared_clock=clock)
        return Harness(registry, clock, recorder)

    yield build
    for link in opened:
        link.close()


class TestClusterScenarios(_Scenarios):
    """Every in-process breaker scenario, against the Redis scripts on a cluster."""


# --- a primary killed under load ------------------------------------------------------------------

def failed_answers(answers: list[Answer]) -> list[Answer]:
    """Answers the gateway failed: a lost one, an error of its own, or not a 2xx from a healthy target.

    The failing service's answers are its own 500s passed on, or 503s of its open circuit.
    """
    return [a for a in answers if a.status is None
            or (a.target == FAILING and not (a.status == 500 and a.code is None or a.code == "circuit_open"))
            or (a.target != FAILING and not 200 <= a.status < 300)]


@pytest.mark.e2e
def test_primary_killed_under_load_fails_no_answer(clean_samples: SampleServices, tmp_path: Path,
                                                   request: pytest.FixtureRequest) -> None:
    prefix = "gwcf:"
    channel = prefix + "cache:invalidate"
    with start_cluster(tmp_path / "cluster", node_timeout_ms=1000) as topology, \
            start_gateway(gateway_env(clean_samples, topology.env(), prefix, TOKEN), 2, log_dir=tmp_path / "gw") as gw:
        clean_samples.faults("delivery-service", error_rate=1.0, status=500)
        breaker_key = f"{prefix}cb:{{delivery-service}}:state"
        owner_port = topology.client().get_node_from_key(breaker_key).port
        victim = next(node for node in topology.nodes if node.port == owner_port)
        heir = topology.replica_of(victim)
        with Load(gw.port, TARGETS, threads=3, pause=0.005) as load:
            assert wait_for(lambda: {a.target for a in load.answers if a.x_cache == "HIT"} >= set(CACHED), 5.0)
            assert wait_for(lambda: any(a.code == "circuit_open" for a in load.answers), 5.0)
            assert wait_for(lambda: topology.listeners(channel) >= 2, 5.0)  # both workers listen for invalidations
            before = topology.listeners(channel)
            delivery_calls = clean_samples.stats("delivery-service")["requests"]
            killed = time.monotonic()
            victim.kill()
            promoted = topology.wait_for_promotion(heir, PROMOTION_BOUND_S)
            since = time.monotonic()
            assert wait_for(lambda: topology.listeners(channel) >= before, RECOVERY_BOUND_S)
            assert wait_for(lambda: {a.target for a in load.between(since, float("inf"), lambda a: a.x_cache == "HIT")}
                            >= set(CACHED), RECOVERY_BOUND_S), "no HIT on every path after the promotion"
            first_hit = min(a.started for a in load.between(since, float("inf"), lambda a: a.x_cache == "HIT"))
            time.sleep(0.3)
        answers = load.answers
        failed = failed_answers(answers)
        assert not failed, (kinds(failed), failed[:3])
        # The breaker's state moved with its slot: still open after the promotion, and the failing
        # service saw a handful of calls (each worker's local breaker opens on its own while Redis
        # moves), not the hundreds sent to it.
        sent_to_failing = sum(a.target == FAILING for a in answers)
        extra_calls = clean_samples.stats("delivery-service")["requests"] - delivery_calls
        assert extra_calls < sent_to_failing / 4, (extra_calls, sent_to_failing)
        assert fetch(gw.port, FAILING).code == "circuit_open"
        # Recovered by itself: a new entry is a MISS then HITs on both workers, writes reach every worker,
        # no key lacks a TTL. (Within the bound, not at once: on a busy machine a node may miss a ping.)
        assert_cache_recovers(gw, "/restaurants/4", hits=6)
        order = new_order(gw)
        assert [x_cache(gw, order) for _ in range(8)].count("MISS") == 1
        assert_write_reaches_every_worker(gw, order)
        keys = topology.keys(prefix + "*")
        assert keys
        client = topology.client()
        without_ttl = [k for k in keys if client.ttl(k) == -1]
        assert not without_ttl, without_ttl[:5]
    report(request, "cluster-failover", requests=len(answers), answers=kinds(answers),
           x_cache={c: sum(a.x_cache == c for a in answers) for c in ("HIT", "MISS", "BYPASS")},
           failed=len(failed), promoted_after_s=round(promoted, 3),
           hit_again_after_promotion_s=round(first_hit - since, 3), hit_again_after_kill_s=round(first_hit - killed, 3),
           slowest_answer_s=round(max(a.ended - a.started for a in answers), 3),
           failing_service_calls_while_moving=extra_calls, failing_service_requests=sent_to_failing)



MOVED_SCRIPT = r"""
from gevent import monkey; monkey.patch_all()
import json, sys
from gateway.cache.store import RedisStore
from gateway.config.settings import load_settings
from gateway.redis.link import RedisLink
from gateway.redis.slots import hash_tag

s = load_settings(json.loads(sys.argv[1]))
key = hash_tag("/moved") + "k"  # an entry's key carries its path's hash tag (policy.keys)
link = RedisLink(None, "gwcm:", cluster=s.redis_cluster)
store = RedisStore(link)
link.ping()  # redis-py's client made: the link multiplexes from here on
store.put(key, "/moved", "v", b"one", 30.0)
channel = next(iter(link._by_slot.values()))
manager = link.client.made.nodes_manager
slot = next(iter(link._by_slot))
right = manager.get_node_from_slot(slot)
wrong = next(n for n in link.client.made.get_primaries() if n.name != right.name)
manager.slots_cache[slot] = [wrong]  # as if the slot had moved under the link's feet
link._by_slot = {}
store.put(key, "/moved", "v", b"two", 30.0)  # the wrong primary answers MOVED; redis-py follows it
print(store.get_variants(key) == [b"two"], manager.get_node_from_slot(slot).name == right.name,
      link._by_slot.get(slot) is channel, link.is_up)
"""


def test_a_multiplexed_command_a_primary_moves_goes_again_through_redis_py(cluster_session: ClusterSet) -> None:
    """Under gevent the cache's scripts are multiplexed per primary; a MOVED reply is followed, not an error."""
    done = subprocess.run([sys.executable, "-c", MOVED_SCRIPT, json.dumps(cluster_session.env())],
                          capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["True", "True", "True", "True"]
