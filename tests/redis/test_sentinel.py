"""Redis Sentinel: the settings, a link that waits for a free connection, and the gateway on a real Sentinel set.

The end-to-end cases run a 2-worker gunicorn gateway against one primary, one replica and three
sentinels on loopback ports (``tests/support/sentinel.py``); the failover case kills the primary
under load and counts every answer.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import redis

from gateway.config.settings import ConfigError, RedisSentinel, load_settings
from gateway.observe.inventory import describe_services
from gateway.redis.link import BlockingSentinelConnectionPool, RedisLink
from tests.support.chaos import Answer, Load, fetch, kinds, report, wait_for
from tests.support.failover import (
    RECOVERY_BOUND_S,
    assert_cache_recovers,
    assert_write_reaches_every_worker,
    gateway_env,
    new_order,
    x_cache,
)
from tests.support.processes import GatewayProcess, SampleServices, start_gateway
from tests.support.sentinel import SentinelSet, start_sentinel_set
from tests.support.topology import assert_refused_but_open, gevent_burst

TOKEN = "sentinel-admin-token"
CACHED = ["/restaurants/1", "/restaurants/2", "/orders/1"]
TARGETS = [*CACHED, "/tracking/_debug/status/200"]
PROMOTION_BOUND_S = 15.0  # down-after 1 s, then election and promotion: about 2-4 s on loopback


# --- settings -------------------------------------------------------------------------------------

def test_sentinel_settings_in_the_usual_form() -> None:
    s = load_settings({"REDIS_SENTINELS": "s1.internal:26379, s2.internal ,[::1]:26380",
                       "REDIS_SENTINEL_MASTER": "mymaster", "REDIS_PASSWORD": "pw", "REDIS_DB": "2",
                       "REDIS_TLS": "true", "REDIS_SENTINEL_PASSWORD": "spw"})
    assert s.redis_url is None and s.web_concurrency == 2
    assert s.redis_sentinel == RedisSentinel(addresses=(("s1.internal", 26379), ("s2.internal", 26379),
                                                        ("::1", 26380)),
                                             master="mymaster", password="pw", db=2, tls=True,
                                             sentinel_password="spw")
    listed = json.dumps(describe_services(s))
    assert "rediss+sentinel://s1.internal:26379,s2.internal:26379,::1:26380/mymaster/2" in listed
    assert "pw" not in listed.replace("/mymaster", "")  # no password reaches the listing


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"REDIS_SENTINELS": "s1:26379"}, "REDIS_SENTINEL_MASTER"),
        ({"REDIS_SENTINELS": "s1:26379", "REDIS_SENTINEL_MASTER": "m", "REDIS_URL": "redis://x"}, "REDIS_SENTINELS"),
        ({"REDIS_SENTINELS": "s1:abc", "REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINELS"),
        ({"REDIS_SENTINELS": "s1:26379,,s2", "REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINELS"),
        ({"REDIS_SENTINELS": "redis://s1:26379", "REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINELS"),
        ({"REDIS_SENTINELS": "s1:70000", "REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINELS"),
        ({"REDIS_SENTINELS": "s1", "REDIS_SENTINEL_MASTER": "my master"}, "REDIS_SENTINEL_MASTER"),
        ({"REDIS_SENTINELS": "s1", "REDIS_SENTINEL_MASTER": "m", "REDIS_DB": "-1"}, "REDIS_DB"),
        ({"REDIS_SENTINELS": "s1", "REDIS_SENTINEL_MASTER": "m", "REDIS_TLS": "maybe"}, "REDIS_TLS"),
        ({"REDIS_SENTINELS": "s1", "REDIS_SENTINEL_MASTER": "m", "REDIS_USERNAME": "u"}, "REDIS_USERNAME"),
        ({"REDIS_URL": "redis://x", "REDIS_PASSWORD": "pw"}, "REDIS_PASSWORD"),
        ({"REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINEL_MASTER"),
        ({"REDIS_DB": "1"}, "REDIS_DB"),
    ],
)
def test_bad_sentinel_settings_name_themselves(env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(env)
    assert raised.value.setting == setting
    assert "\n" not in str(raised.value)


# --- the link -------------------------------------------------------------------------------------

@pytest.fixture
def sentinel_set(sentinel_set_session: SentinelSet) -> SentinelSet:
    """The session's Sentinel set, for the cases that do not fail it over (distinct key prefixes per case)."""
    return sentinel_set_session


def sentinel_link(topology: SentinelSet, prefix: str, **options: object) -> RedisLink:
    settings = load_settings(topology.env())
    return RedisLink(None, prefix, sentinel=settings.redis_sentinel, **options)  # type: ignore[arg-type]


def test_link_reaches_the_master_the_sentinels_name(sentinel_set: SentinelSet) -> None:
    link = sentinel_link(sentinel_set, "gwsl:")
    try:
        assert link.ping() and link.status == "up"
        link.run(lambda client: client.set(link.key("probe"), b"1", ex=30))
        assert sentinel_set.primary.client().get("gwsl:probe") == b"1"
        assert link.url is not None and "mymaster" in link.url
    finally:
        link.close()


def test_passwords_for_the_master_and_for_the_sentinels(tmp_path: Path) -> None:
    with start_sentinel_set(tmp_path, password="data-secret", sentinel_password="sentinel-secret") as topology:
        env = topology.env()
        assert env["REDIS_PASSWORD"] == "data-secret" and env["REDIS_SENTINEL_PASSWORD"] == "sentinel-secret"
        link = RedisLink(None, "gwsa:", sentinel=load_settings(env).redis_sentinel)
        try:
            link.run(lambda client: client.set(link.key("probe"), b"1", ex=30))
            assert topology.primary.client().get("gwsa:probe") == b"1"
        finally:
            link.close()
        wrong = load_settings({**env, "REDIS_PASSWORD": "nope"}).redis_sentinel
        assert_refused_but_open(RedisLink(None, "gwsa:", sentinel=wrong))  # fail open, never raise


def test_a_full_pool_makes_callers_wait_instead_of_failing(sentinel_set: SentinelSet) -> None:
    """redis-py's Sentinel pool raises past max_connections; the link's waits for a free connection."""
    link = sentinel_link(sentinel_set, "gwsp:", max_connections=1)
    pool = link.client.connection_pool
    assert isinstance(pool, BlockingSentinelConnectionPool)
    held = pool.get_connection()
    results: list[object] = []
    waiter = threading.Thread(target=lambda: results.append(link.run(lambda client: client.ping())))
    try:
        waiter.start()
        time.sleep(0.03)
        assert results == []  # waiting, not failed
        pool.release(held)
        waiter.join(2)
        assert results == [True] and link.is_up
    finally:
        link.close()


def test_a_burst_of_greenlets_past_the_pool_size_all_get_redis(sentinel_set: SentinelSet) -> None:
    """Under gevent, 200 greenlets on 4 connections: all wait their turn (the plain Sentinel pool fails 196)."""
    assert gevent_burst({**sentinel_set.env(), "REDIS_KEY_PREFIX": "gwsg:"}) == "0 []"


# --- end to end -----------------------------------------------------------------------------------

def listeners(server_client: redis.Redis, prefix: str) -> int:
    """How many worker processes listen for invalidations on this Redis node."""
    return int(server_client.pubsub_numsub(prefix + "cache:invalidate")[0][1])


def entry_keys(server_client: redis.Redis, prefix: str) -> list[bytes]:
    return [k for k in server_client.scan_iter(prefix + "*", count=1000) if b":cb:" not in k]


@pytest.mark.e2e
def test_cache_breaker_and_stats_through_two_workers_on_sentinel(sentinel_set: SentinelSet,
                                                                 clean_samples: SampleServices,
                                                                 tmp_path: Path) -> None:
    prefix = "gwse:"
    with start_gateway(gateway_env(clean_samples, sentinel_set.env(), prefix, TOKEN), 2, log_dir=tmp_path) as gw:
        health = json.loads(fetch(gw.port, "/health").body)
        assert health["redis"] == "up", health

        # A HIT served from Redis: one upstream call, the entry on the master (with a TTL), HITs on both workers.
        assert x_cache(gw, "/restaurants/3") == "MISS"
        assert [x_cache(gw, "/restaurants/3") for _ in range(12)] == ["HIT"] * 12
        assert clean_samples.stats("restaurant-service")["by_path"] == {"/3": 1}
        master = sentinel_set.primary.client()
        assert entry_keys(master, prefix), "no cache entry on the master"

        # An invalidation reaches the other worker: no worker serves the old order after a write.
        order = new_order(gw)
        assert [x_cache(gw, order) for _ in range(8)].count("MISS") == 1
        assert_write_reaches_every_worker(gw, order)

        # A breaker opened by failures seen by both workers is one breaker, kept on the master.
        clean_samples.faults("tracking-service", error_rate=1.0, status=500)
        statuses = [fetch(gw.port, "/tracking/_debug/status/200").status for _ in range(12)]
        assert statuses == [500] * 3 + [503] * 9
        assert clean_samples.stats("tracking-service")["requests"] == 3
        assert any(b":cb:" in k for k in master.scan_iter(prefix + "*"))
        clean_samples.reset_faults("tracking-service")

        # /stats agrees with what was sent, whichever worker answers.
        def figures() -> tuple[int, int, int]:
            cache = json.loads(fetch(gw.port, "/stats/cache").body)
            fires = json.loads(fetch(gw.port, "/stats/circuit-breakers").body)["services"]["tracking-service"]
            return cache["misses"], cache["hits"], fires["fires"]
        # MISSes: /restaurants/3, and the new order before and after the write; HITs: 12 + 7 + 7 at
        # least (more if the write took a second round of reads); the 12 tracking calls are breaker
        # fires (3 failures, 9 rejects). A worker's own counts reach Redis at its next flush (0.5 s),
        # so the figures are awaited until six reads in a row, from either worker, give them alike.
        def settled() -> bool:
            seen = {figures() for _ in range(6)}
            misses, hits, fires = next(iter(seen))
            return len(seen) == 1 and misses == 3 and hits >= 26 and fires == 12

        assert wait_for(settled, 3.0), {figures() for _ in range(6)}
        assert len(gw.worker_pids()) == 2


def no_failed_answers(answers: list[Answer]) -> list[Answer]:
    """Answers the gateway failed: none at all, or not a 2xx from these healthy targets."""
    return [a for a in answers if a.status is None or not 200 <= a.status < 300]


def kill_primary_under_load(topology: SentinelSet, load: Load, prefix: str) -> dict[str, float]:
    """SIGKILL the master by its pid while ``load`` runs; return the promotion and recovery times."""
    old, new = topology.master(), next(s for s in topology.servers if s is not topology.master())
    before = listeners(old.client(), prefix)
    assert before >= 1
    killed = time.monotonic()
    old.kill()
    promoted = topology.wait_for_master(new.port, PROMOTION_BOUND_S)
    # The pub/sub listeners followed the master: every one is subscribed on the new master again.
    promoted_client = new.client()
    assert wait_for(lambda: listeners(promoted_client, prefix) >= before, RECOVERY_BOUND_S), \
        (before, listeners(promoted_client, prefix))
    since = time.monotonic()
    assert wait_for(lambda: {a.target for a in load.between(since, float("inf"), lambda a: a.x_cache == "HIT")}
                    >= set(CACHED), RECOVERY_BOUND_S), "no HIT after the promotion"
    first_hit = min(a.started for a in load.between(since, float("inf"), lambda a: a.x_cache == "HIT"))
    return {"listeners": before, "promoted_after_s": round(promoted, 3),
            "hit_again_after_promotion_s": round(first_hit - since, 3),
            "hit_again_after_kill_s": round(first_hit - killed, 3)}


def check_recovered(topology: SentinelSet, gw: GatewayProcess, prefix: str, fresh: str) -> None:
    """After a failover: a MISS then a HIT served from the new master, every gateway key with a TTL."""
    master = topology.master().client()
    assert_cache_recovers(gw, fresh)
    assert entry_keys(master, prefix)
    keys = list(master.scan_iter(prefix + "*", count=1000))
    assert keys
    without_ttl = [k for k in keys if master.ttl(k) == -1]
    assert not without_ttl, without_ttl[:5]


def run_failover(clean_samples: SampleServices, tmp_path: Path, request: pytest.FixtureRequest,
                 failovers: int, threads: int) -> None:
    prefix = "gwsf:"
    with start_sentinel_set(tmp_path / "sentinel") as topology, \
            start_gateway(gateway_env(clean_samples, topology.env(), prefix, TOKEN), 2, log_dir=tmp_path / "gw") as gw:
        figures: list[dict[str, float]] = []
        with Load(gw.port, TARGETS, threads=threads, pause=0.005) as load:
            assert wait_for(lambda: {a.target for a in load.answers if a.x_cache == "HIT"} >= set(CACHED), 5.0)
            for round_ in range(failovers):
                figures.append(kill_primary_under_load(topology, load, prefix))
                if round_ + 1 < failovers:
                    # The old primary comes back empty; the sentinels make it a replica of the new one.
                    old = next(s for s in topology.servers if not s.running())
                    old.start()
                    assert wait_for(topology.ready_for_failover, PROMOTION_BOUND_S), "old primary not re-linked"
            time.sleep(0.3)
        answers = load.answers
        failed = no_failed_answers(answers)
        assert not failed, (kinds(failed), failed[:3])
        check_recovered(topology, gw, prefix, "/restaurants/4")
        # A write through one worker still reaches the other.
        order = new_order(gw)
        assert [x_cache(gw, order) for _ in range(8)].count("MISS") == 1
        assert_write_reaches_every_worker(gw, order)
    report(request, "sentinel-failover", requests=len(answers), answers=kinds(answers),
           x_cache={c: sum(a.x_cache == c for a in answers) for c in ("HIT", "MISS", "BYPASS")},
           failed=len(failed), failovers=failovers, threads=threads,
           slowest_answer_s=round(max(a.ended - a.started for a in answers), 3),
           promoted_after_s=[f["promoted_after_s"] for f in figures],
           hit_again_after_promotion_s=[f["hit_again_after_promotion_s"] for f in figures],
           hit_again_after_kill_s=[f["hit_again_after_kill_s"] for f in figures],
           listeners_followed=[f["listeners"] for f in figures])


@pytest.mark.e2e
def test_primary_killed_under_load_fails_no_answer(clean_samples: SampleServices, tmp_path: Path,
                                                   request: pytest.FixtureRequest) -> None:
    run_failover(clean_samples, tmp_path, request, failovers=1, threads=3)


@pytest.mark.e2e
@pytest.mark.soak
def test_primary_killed_twice_under_load_fails_no_answer(clean_samples: SampleServices, tmp_path: Path,
                                                         request: pytest.FixtureRequest) -> None:
    run_failover(clean_samples, tmp_path, request, failovers=2, threads=6)
