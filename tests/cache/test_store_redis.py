"""The Redis store: TTLs and prefixes, fail-open, renamed commands, planted garbage, sharing between instances."""

from __future__ import annotations

import pickle
import threading
import time
from typing import Any

import pytest

from gateway.clock import FakeClock
from gateway.redis.link import RedisLink
from tests.support.cache import Gateway, Reply, make_call, new_prefix, redis_cache
from tests.support.chaos import wait_for


def gateway_on(server: Any, links: list[RedisLink], prefix: str | None = None, **settings: Any) -> Gateway:
    clock = FakeClock()
    return Gateway(redis_cache(server, clock, links, prefix, **settings), clock)


def test_every_key_has_the_prefix_and_a_ttl(redis_server_session: Any, links: list[RedisLink]) -> None:
    gw = gateway_on(redis_server_session, links)
    gw.handler = lambda call, cond: Reply(headers=[("Cache-Control", "max-age=60")])
    gw.request("/orders/1")
    gw.request("/orders/1", headers=[("Accept", "x")])
    client = redis_server_session.client()
    keys = list(client.scan_iter(match=gw.cache.store.link.prefix + "*"))
    assert len(keys) == 2  # one entry hash, one path index
    for key in keys:
        assert 0 < client.pttl(key) <= 360_000  # max-age + CACHE_STALE_GRACE


def test_redis_killed_then_back(redis_server: Any, links: list[RedisLink]) -> None:
    gw = gateway_on(redis_server, links)
    assert [gw.request().cache for _ in range(2)] == ["MISS", "HIT"]
    redis_server.kill()
    started = time.monotonic()
    down = [gw.request() for _ in range(5)]
    assert [r.cache for r in down] == ["BYPASS"] * 5 and all(r.status == 200 for r in down)
    assert gw.request(method="POST").status == 200  # invalidation skipped, request still answered
    assert gw.cache.snapshot() == {"keys": 0, "memory_used_bytes": 0}
    assert time.monotonic() - started < 2.0
    redis_server.start()
    time.sleep(0.1)  # past the link's skip period
    assert [gw.request().cache for _ in range(2)] == ["MISS", "HIT"]


def test_redis_paused_bypasses_quickly(redis_server: Any, links: list[RedisLink]) -> None:
    gw = gateway_on(redis_server, links)
    gw.request()
    redis_server.pause(1.0)
    started = time.monotonic()
    assert [gw.request().cache for _ in range(3)] == ["BYPASS"] * 3
    assert time.monotonic() - started < 1.0


def test_renamed_dangerous_commands(redis_server_factory: Any, links: list[RedisLink]) -> None:
    server = redis_server_factory("--rename-command", "KEYS", "", "--rename-command", "FLUSHDB", "",
                                  "--rename-command", "FLUSHALL", "")
    gw = gateway_on(server, links)
    gw.request("/orders/1")
    gw.request("/orders/2")
    assert gw.request("/orders/1").cache == "HIT"
    assert gw.cache.purge(prefix="/orders/")["purged"] == 2
    gw.request("/orders/1")
    assert gw.cache.purge()["purged"] == 1
    assert gw.cache.snapshot()["keys"] == 0
    gw.request("/orders/1")
    gw.request("/orders/1", method="PUT")
    assert gw.request("/orders/1").cache == "MISS"


def test_purge_leaves_foreign_keys(redis_server_session: Any, links: list[RedisLink]) -> None:
    prefix = new_prefix()
    gw = gateway_on(redis_server_session, links, prefix)
    client = redis_server_session.client()
    client.set("foreign:" + prefix, "keep")
    client.set(prefix + "breaker:order-service", "keep")  # the gateway's own non-cache keys too
    client.set(prefix + "cache-other", "keep")
    gw.request("/orders/1")
    gw.cache.purge(prefix="/orders/")
    gw.request("/orders/1")
    gw.cache.purge()
    for key in ["foreign:" + prefix, prefix + "breaker:order-service", prefix + "cache-other"]:
        assert client.get(key) == b"keep"


@pytest.mark.parametrize("planted", [
    pickle.dumps({"status": 200}),
    b"\x80\x04garbage",
    b"not msgpack at all",
    b"\x81\xa1f\x01",  # msgpack, right format number, missing fields
    b"\xc1",  # never-used msgpack byte
])
def test_planted_values_are_misses(redis_server_session: Any, links: list[RedisLink], planted: bytes) -> None:
    gw = gateway_on(redis_server_session, links)
    gw.request()
    client = redis_server_session.client()
    entry_keys = list(client.scan_iter(match=gw.cache.store.link.prefix + "cache:e:*"))
    for key in entry_keys:
        for field in client.hkeys(key):
            client.hset(key, field, planted)
    assert gw.request().cache == "MISS"
    assert gw.request().cache == "HIT"


def test_second_instance_sees_invalidation_and_purge(redis_server_session: Any, links: list[RedisLink]) -> None:
    prefix = new_prefix()
    first, second = gateway_on(redis_server_session, links, prefix), gateway_on(redis_server_session, links, prefix)
    first.request("/orders/1")
    assert second.request("/orders/1").cache == "HIT"
    second.request("/orders/1", method="DELETE")
    assert first.request("/orders/1").cache == "MISS"
    second.cache.purge(path="/orders/1")
    assert first.request("/orders/1").cache == "MISS"


def test_coalescing_across_instances(redis_server_session: Any, links: list[RedisLink]) -> None:
    prefix = new_prefix()
    instances = [gateway_on(redis_server_session, links, prefix) for _ in range(3)]
    calls: list[str] = []
    release = threading.Event()

    def slow(call: Any, cond: Any) -> Reply:
        calls.append(call.path)
        release.wait(2)
        return Reply()
    results: list[Any] = []
    threads = []
    for gw in instances:
        gw.handler = slow
        threads += [threading.Thread(target=lambda gw=gw: results.append(gw.request())) for _ in range(5)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    release.set()
    for thread in threads:
        thread.join(5)
    assert len(calls) == 1
    assert sorted(r.cache for r in results) == ["HIT"] * 14 + ["MISS"]


def test_waiters_give_up_after_the_timeout(redis_server_session: Any, links: list[RedisLink]) -> None:
    from dataclasses import replace

    from tests.support.cache import SERVICE, make_call
    prefix = new_prefix()
    leader, waiter = gateway_on(redis_server_session, links, prefix), gateway_on(redis_server_session, links, prefix)
    quick = replace(SERVICE, timeout=0.2)
    exchange = leader.cache.begin(leader_call := make_call(service=quick))
    assert exchange.response is None and leader_call.path == "/orders/1"
    started = time.monotonic()
    assert waiter.request(service=quick).cache == "MISS"  # went upstream itself after 0.2 s
    assert 0.15 < time.monotonic() - started < 1.0
    exchange.close()


def wait_listening(gw: Gateway) -> None:
    gw.request("/warm-up")  # the listener starts on first use
    deadline = time.monotonic() + 2
    while not gw.cache.store.listening and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gw.cache.store.listening


def test_tier_serves_recent_copies_within_its_bound(redis_server_session: Any, links: list[RedisLink]) -> None:
    ticks = FakeClock(0.0)  # the tier's monotonic clock: the copies age only when the test says so
    clock = FakeClock()
    gw = Gateway(redis_cache(redis_server_session, clock, links, tier_seconds=0.3, tier_monotonic=ticks), clock)
    wait_listening(gw)
    heard: list[bytes] = []  # announcements this worker has handled
    sent: list[bytes] = []  # announcements its stores made
    store = gw.cache.store
    handle, put = store.subscription.on_message, store.redis.put

    late = threading.Event()

    def handled(data: bytes) -> None:
        if data in sent:
            late.wait(2.0)  # the echo of our own store arrives late: after the copy below was taken
        handle(data)
        heard.append(data)

    def stored(*args: Any, announce: tuple[str, bytes], **kw: Any) -> bool:
        sent.append(announce[1])
        return put(*args, announce=announce, **kw)
    store.subscription.on_message = handled
    store.redis.put = stored  # type: ignore[method-assign]
    # A copy of the key's miss, noted in Redis: the store below announces itself (a new key stored by the
    # leader of its miss is announced only then).
    assert store.get_variants(gw.cache._lookup_keys(make_call())[0][0]) == []
    assert gw.request().cache == "MISS"  # stored; its announcement may reach this worker at any later time
    assert gw.request().cache == "HIT"  # read from Redis, copy kept
    late.set()
    client = redis_server_session.client()
    entries = gw.cache.store.link.prefix + "cache:e:*"
    for key in client.scan_iter(match=entries):
        client.unlink(key)  # behind the gateway's back: only the copy is left
    assert list(client.scan_iter(match=entries)) == []
    assert len(sent) == 1 and wait_for(lambda: sent[0] in heard, timeout=2.0, step=0.01)
    # The echo of our own store has been handled after the copy was taken: the copy stays.
    assert gw.request().cache == "HIT"  # Redis has no entry: only the per-worker copy can answer
    ticks.advance(0.29)
    assert gw.request().cache == "HIT"
    ticks.advance(0.02)  # past the bound
    assert gw.request().cache == "MISS"
    assert len(gw.upstream_calls) == 3  # warm-up, first request, and the one after the copy expired


def test_tier_copies_dropped_on_every_instance(redis_server_session: Any, links: list[RedisLink]) -> None:
    prefix = new_prefix()
    first = gateway_on(redis_server_session, links, prefix, tier_seconds=1.0)
    second = gateway_on(redis_server_session, links, prefix, tier_seconds=1.0)
    wait_listening(first)
    wait_listening(second)
    first.request()
    assert second.request().cache == "HIT" and second.request().cache == "HIT"  # second holds a copy
    first.request(method="PATCH")
    deadline = time.monotonic() + 0.5
    while second.request().cache == "HIT":
        assert time.monotonic() < deadline, "invalidation did not reach the other instance"
        time.sleep(0.01)
    second.request()
    assert first.request().cache == "HIT"
    second.cache.purge()
    deadline = time.monotonic() + 0.5
    while (answer := first.request().cache) == "HIT":  # the copy goes when the purge's message arrives
        assert time.monotonic() < deadline, "the purge did not reach the other instance"
        time.sleep(0.01)
    assert answer == "MISS"


def test_tier_off_while_redis_is_down(redis_server: Any, links: list[RedisLink]) -> None:
    gw = gateway_on(redis_server, links, tier_seconds=1.0)
    wait_listening(gw)
    gw.request()
    assert gw.request().cache == "HIT"
    redis_server.kill()
    assert wait_for(lambda: not gw.cache.store.listening, timeout=3.0, step=0.01)
    assert gw.request().cache == "BYPASS"  # no copy answers while changes could be missed
    redis_server.start()  # empty: what was stored before is gone
    labels: list[str | None] = []
    assert wait_for(lambda: gw.cache.store.listening and not labels.append(gw.request().cache)
                    and labels[-1] != "BYPASS", timeout=3.0)
    assert labels[-1] == "MISS"  # Redis came back empty, and no copy from before the outage answered
    assert gw.request().cache == "HIT"


GEVENT_SCRIPT = """
from gevent import monkey; monkey.patch_all()
import sys, gevent
from gateway.clock import FakeClock
from gateway.redis.link import RedisLink
from tests.support.cache import Gateway, Reply, redis_cache, memory_cache
links = []
clock = FakeClock()
caches = [redis_cache(type("S", (), {"url": sys.argv[1]}), clock, links, sys.argv[2]) for _ in range(2)] \\
    if sys.argv[1] != "-" else [memory_cache(clock)]
calls = []
def slow(call, cond):
    calls.append(1)
    gevent.sleep(0.2)
    return Reply()
gateways = [Gateway(cache, clock) for cache in caches]
for gw in gateways:
    gw.handler = slow
jobs = [gevent.spawn(gateways[i % len(gateways)].request) for i in range(100)]
gevent.joinall(jobs, timeout=5)
labels = sorted(job.value.cache for job in jobs)
print(len(calls), labels.count("MISS"), labels.count("HIT"))
"""


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_coalescing_with_gevent_greenlets(redis_server_session: Any, store: str) -> None:
    import subprocess
    import sys
    url = redis_server_session.url if store == "redis" else "-"
    out = subprocess.run([sys.executable, "-c", GEVENT_SCRIPT, url, new_prefix()], capture_output=True, text=True,
                         timeout=30, cwd=str(__import__("pathlib").Path(__file__).parents[2]))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "1", "99"]


def test_a_miss_costs_two_store_round_trips_and_leaves_no_lock(redis_server: Any, links: list[RedisLink]) -> None:
    gw = gateway_on(redis_server, links)
    gw.request("/orders/warm-up")  # loads the scripts (a first EVALSHA is retried after SCRIPT LOAD)
    client = redis_server.client()
    client.config_resetstat()
    assert gw.request("/orders/round-trips").cache == "MISS"
    stats = client.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(row["calls"]) for name, row in stats.items()}
    # The lookup that took the lock when it found nothing (its read is the leader's double-check);
    # the store that releases the lock. (Commands a script runs are counted too: HVALS and SET in
    # the lookup's; in the store's, GET and DEL, and EXISTS for an entry before it: none, and with no
    # tier in front nothing is announced anyway.) Whether the service has stored parts to complete was
    # read with the warm-up's miss, and is read again at most once a second.
    assert calls.get("evalsha") == 2 and calls.get("hvals") == 1 and calls.get("set") == 1, calls
    assert calls.get("get") == 1 and calls.get("del") == 1 and calls.get("exists") == 1, calls
    assert not calls.get("publish"), calls
    assert not list(client.scan_iter(match=gw.cache.store.link.prefix + "cache:l:*"))
    assert gw.request("/orders/round-trips").cache == "HIT"


def test_the_leader_finds_what_another_process_stored_while_it_took_the_lock(redis_server: Any,
                                                                            links: list[RedisLink]) -> None:
    prefix = new_prefix()
    first = gateway_on(redis_server, links, prefix)
    second = gateway_on(redis_server, links, prefix)
    original, read = first.cache.store.lock_and_read, first.cache.store.read_or_lock

    def read_while_another_leads(key: str, lease: float) -> Any:
        values, token = read(key, lease)
        if token is not None:
            first.cache.store.release(key, token)  # as if another process held the lock at our read
        return values, None

    def lock_after_the_other_stored(name: str, lease: float) -> Any:
        second.request("/orders/raced")  # stores the answer between our lookup and our lock
        return original(name, lease)

    first.cache.store.read_or_lock = read_while_another_leads  # type: ignore[method-assign]
    first.cache.store.lock_and_read = lock_after_the_other_stored  # type: ignore[method-assign]
    assert first.request("/orders/raced").cache == "HIT"  # the double-check read with the lock found it
    assert len(first.upstream_calls) == 0 and len(second.upstream_calls) == 1


def test_a_lead_begun_here_between_the_read_and_the_join_is_left_to_its_leader(redis_server_session: Any,
                                                                             links: list[RedisLink]) -> None:
    """With threads, another request of this worker may begin to lead right after our read took the lock."""
    cache = gateway_on(redis_server_session, links).cache
    read, leads = cache.store.read_or_lock, []

    def another_request_leads_meanwhile(key: str, lease: float) -> Any:
        values, token = read(key, lease)
        leads.append((key, cache._inflight.join(key)))  # None: that request now leads in this worker
        return values, token

    cache.store.read_or_lock = another_request_leads_meanwhile  # type: ignore[method-assign]
    assert cache.lookup_or_lead(make_call("/orders/raced-here")) == (None, None)
    [(name, event)] = leads
    assert event is None
    assert cache._inflight.led(name)  # still its lead: its waiters were not woken as if it were done
    assert not cache.store.is_locked(name)  # and the store lock was let go, for it to take


def test_a_leaders_lock_is_released_even_while_the_link_skips_redis(redis_server_session: Any,
                                                                   links: list[RedisLink]) -> None:
    gw = gateway_on(redis_server_session, links)
    store = gw.cache.store
    token, _ = store.lock_and_read("skipped", 10.0)
    assert token is not None
    store.link.mark_down()  # a failure a moment ago: other commands are skipped for a second
    store.release("skipped", token)
    assert not redis_server_session.client().exists(store.link.key("cache", "l", "skipped"))


def test_a_new_key_is_announced_only_where_a_copy_of_its_miss_may_be_held(redis_server_session: Any,
                                                                        links: list[RedisLink]) -> None:
    gw = gateway_on(redis_server_session, links, new_prefix(), tier_seconds=1.0)
    wait_listening(gw)
    store = gw.cache.store
    listener = redis_server_session.client().pubsub()
    listener.subscribe(store.channel)
    assert wait_for(lambda: listener.get_message(timeout=0.05) is not None, timeout=2.0)  # subscribed

    def announced() -> list[bytes]:
        """The keys announced since the last call (a store's message ends with its key)."""
        keys = []
        while (message := listener.get_message(timeout=0.2)) is not None:
            keys.append(message["data"].rsplit(b":", 1)[-1])
        return keys

    one, two = (gw.cache._lookup_keys(make_call(path))[0][0] for path in ("/orders/1", "/orders/2"))
    try:
        assert gw.request("/orders/1").cache == "MISS"  # its leader stores a new key nobody can hold a copy of
        assert announced() == []
        assert store.get_variants(two) == []  # a copy of the miss, noted in Redis for as long as it lives
        assert gw.request("/orders/2").cache == "MISS"
        assert announced() == [two.rsplit(":", 1)[-1].encode()]
        token = store.try_lock(one, 5.0)
        assert token is not None
        store.put(one, "/orders/1", "other", b"x", 60.0, release=(one, token))  # the key has an entry: copies may
        assert announced() == [one.rsplit(":", 1)[-1].encode()]
        store.put(one, "/orders/1", "other", b"y", 60.0)  # stored by no leader: always announced
        assert announced() == [one.rsplit(":", 1)[-1].encode()]
    finally:
        listener.close()
