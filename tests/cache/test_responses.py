"""ResponseCache on every store: keys, credentials, what is stored, Vary, invalidation, purge, coalescing, refresh."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from gateway.cache.entry import arrived
from gateway.clock import FakeClock
from tests.cache.conftest import Factory
from tests.support.cache import Gateway, Reply, h, make_call, memory_cache, partial_reply


def test_twenty_request_timeline(gw: Gateway) -> None:
    labels = [gw.request().cache for _ in range(19)]
    assert labels == ["MISS"] + ["HIT"] * 18
    gw.clock.advance(300.5)
    assert gw.request().cache == "MISS"
    assert len(gw.upstream_calls) == 2


def test_query_order_and_host_in_key(gw: Gateway) -> None:
    gw.request(query="a=1&b=2")
    assert gw.request(query="b=2&a=1").cache == "HIT"
    assert gw.request(query="a=1").cache == "MISS"


def test_cross_user_isolation(gw: Gateway) -> None:
    gw.handler = lambda call, cond: Reply(headers=[("Cache-Control", "public, max-age=60")],
                                          chunks=[(call.header("Authorization") or "anon").encode()])
    alice, bob = [("Authorization", "Bearer alice")], [("Authorization", "Bearer bob")]
    assert gw.request(headers=alice).body == b"Bearer alice"
    assert gw.request(headers=bob).body == b"Bearer bob"
    hit = gw.request(headers=alice)
    assert (hit.cache, hit.body) == ("HIT", b"Bearer alice")
    assert gw.request(headers=bob).body == b"Bearer bob"
    assert gw.request().cache == "MISS"  # anonymous: its own entry
    assert len(gw.upstream_calls) == 3


def test_credentials_without_permission_never_stored(gw: Gateway) -> None:
    gw.handler = lambda call, cond: Reply(headers=[("Cache-Control", "max-age=60")])
    cookie = [("Cookie", "s=1")]
    assert [gw.request(headers=cookie).cache for _ in range(2)] == ["BYPASS", "BYPASS"]


def test_share_public_across_users(make: Factory) -> None:
    from dataclasses import replace

    from tests.support.cache import SERVICE
    gw = make()
    shared = replace(SERVICE, share_public_across_users=True)
    gw.handler = lambda call, cond: Reply(headers=[("Cache-Control", "public, max-age=60")])
    assert gw.request(headers=[("Authorization", "a")], service=shared).cache == "MISS"
    assert gw.request(headers=[("Authorization", "b")], service=shared).cache == "HIT"
    gw.handler = lambda call, cond: Reply(headers=[("Cache-Control", "s-maxage=60")])
    assert gw.request("/orders/2", headers=[("Authorization", "a")], service=shared).cache == "MISS"
    assert gw.request("/orders/2", headers=[("Authorization", "b")], service=shared).cache == "MISS"


def test_heuristic_header_is_private_for_credential_keyed_entries(gw: Gateway) -> None:
    # must-revalidate gives explicit permission but no lifetime: the heuristic TTL applies.
    gw.handler = lambda call, cond: Reply(headers=[("Cache-Control", "must-revalidate")])
    assert gw.request(headers=[("Cookie", "a")]).cache == "MISS"
    assert gw.request(headers=[("Cookie", "a")]).cache == "HIT"


@pytest.mark.parametrize("reply", [
    Reply(headers=[("Cache-Control", "no-store")]),
    Reply(headers=[("Cache-Control", "private, max-age=60")]),
    Reply(headers=[("Vary", "*")]),
    Reply(headers=[("Set-Cookie", "a=1")]),
    Reply(status=206, headers=[("Cache-Control", "max-age=60")]),
    Reply(status=404),
    Reply(status=503),
    Reply(headers=[("Content-Type", "text/event-stream")], chunks=[b"data: 1\n\n", b"data: 2\n\n"]),
    Reply(headers=[("Cache-Control", "max-age=60"), ("CDN-Cache-Control", "no-store")]),
    Reply(headers=[("Cache-Control", "max-age=60"), ("CDN-Cache-Control", "private")]),
    Reply(headers=[("Expires", "Thu, 18 Aug 2050 02:01:18 UTC")]),
], ids=["no-store", "private", "vary-star", "set-cookie", "206", "404-no-freshness", "503-no-freshness", "sse",
        "cdn-no-store", "cdn-private", "invalid-expires"])
def test_never_stored(gw: Gateway, reply: Reply) -> None:
    gw.handler = lambda call, cond: reply
    first, second = gw.request(), gw.request()
    assert (first.cache, second.cache) == ("BYPASS", "BYPASS")
    assert first.body == b"".join(reply.chunks) and len(gw.upstream_calls) == 2


@pytest.mark.parametrize("status", [404, 500, 502, 503, 504, 599])
def test_explicit_freshness_stores_other_statuses(gw: Gateway, status: int) -> None:
    gw.handler = lambda call, cond: Reply(status=status, headers=[("Cache-Control", "max-age=5")])
    results = [gw.request() for _ in range(2)]
    assert [r.cache for r in results] == ["MISS", "HIT"] and results[1].status == status


LAST_MODIFIED = "Tue, 14 Nov 2023 22:13:20 GMT"
A_DAY_LATER = "Wed, 15 Nov 2023 22:13:20 GMT"  # as Date: a heuristic lifetime of 8640 s


@pytest.mark.parametrize(("headers", "labels"), [
    # reusable
    ([("Cache-Control", "max-age=1"), ("CDN-Cache-Control", "max-age=3600")], ["MISS", "HIT"]),
    ([("Cache-Control", "no-store"), ("CDN-Cache-Control", "max-age=3600")], ["MISS", "HIT"]),
    ([("Cache-Control", "max-age=3600, no-store, must-understand")], ["MISS", "HIT"]),
    ([("Last-Modified", LAST_MODIFIED), ("Date", A_DAY_LATER)], ["MISS", "HIT"]),  # heuristic: a tenth of its age
    ([("Expires", "Thu, 18 Aug 2050 02:01:18 GMT"), ("Date", "yesterday")], ["MISS", "HIT"]),
    ([("Cache-Control", "max-age=3600"), ("Age", "0, 7200")], ["MISS", "HIT"]),
    # not reusable: stale on arrival
    ([("Cache-Control", "max-age=3600"), ("Age", "7200, 0"), ("ETag", '"a"')], ["MISS", "REVALIDATED"]),
    ([("Cache-Control", "max-age=3600"), ("CDN-Cache-Control", "max-age=0"), ("ETag", '"a"')],
     ["MISS", "REVALIDATED"]),
    ([("Cache-Control", "max-age=3600"), ("CDN-Cache-Control", "no-cache"), ("ETag", '"a"')],
     ["MISS", "REVALIDATED"]),
], ids=["cdn-longer", "cdn-over-no-store", "must-understand", "heuristic-lm", "invalid-date", "age-prefix",
        "age-suffix", "cdn-max-age-0", "cdn-no-cache"])
def test_freshness_rules_end_to_end(gw: Gateway, headers: list, labels: list) -> None:
    gw.handler = lambda call, cond: Reply(status=304 if cond else 200, headers=list(headers))
    assert [gw.request().cache for _ in labels] == labels


@pytest.mark.parametrize("status", [204, 404, 405, 410, 414, 501])
def test_last_modified_heuristic_covers_every_heuristically_cacheable_status(gw: Gateway, status: int) -> None:
    gw.handler = lambda call, cond: Reply(status=status, headers=[("Last-Modified", LAST_MODIFIED),
                                                                  ("Date", A_DAY_LATER)],
                                          chunks=[] if status == 204 else [b"x"])
    assert [gw.request().cache for _ in range(2)] == ["MISS", "HIT"]
    gw.clock.advance(8641)
    assert gw.request().cache != "HIT"  # a tenth of the day between Last-Modified and Date


@pytest.mark.parametrize(("first", "second"), [
    ([("Accept-Language", "en, de")], [("Accept-Language", "de, en")]),
    ([("Accept-Language", "en, de")], [("Accept-Language", "eN, De")]),
    ([("Accept-Language", "en, de")], [("Accept-Language", " en ,   de")]),
    ([("Foo", "1, 2")], [("Foo", "1"), ("Foo", "2")]),
    ([("Foo", "1,2")], [("Foo", " 1, 2 ")]),
])
def test_vary_matching_is_normalised(gw: Gateway, first: list, second: list) -> None:
    names = ", ".join(sorted({k for k, _ in first}))
    gw.handler = lambda call, cond: Reply(headers=[("Cache-Control", "max-age=60"), ("Vary", names)])
    assert gw.request(headers=first).cache == "MISS"
    assert gw.request(headers=second).cache == "HIT"


def test_a_partial_answer_whose_body_is_not_its_range_is_not_stored(gw: Gateway) -> None:
    gw.handler = lambda call, cond: partial_reply(body=b"01234")  # claims 6 bytes, carries 5
    assert gw.request(headers=[("Range", "bytes=-5")]).cache == "BYPASS"
    assert gw.request(headers=[("Range", "bytes=-5")]).cache == "BYPASS"


def test_a_write_drops_partial_entries_too(gw: Gateway) -> None:
    gw.handler = lambda call, cond: partial_reply()
    gw.request(headers=[("Range", "bytes=-6")])
    gw.handler = lambda call, cond: Reply(status=204, chunks=[])
    gw.request(method="DELETE")
    gw.handler = lambda call, cond: partial_reply()
    assert gw.request(headers=[("Range", "bytes=-6")]).cache == "MISS"


def test_an_entry_with_a_validator_outlives_its_freshness_to_be_revalidated(make: Factory) -> None:
    gw = make(cache_stale_grace=0.0)
    gw.handler = lambda call, cond: Reply(status=304 if cond else 200,
                                          headers=[("Cache-Control", "max-age=1"), ("ETag", '"v1"')])
    gw.request()
    gw.clock.advance(120)
    assert gw.request().cache == "REVALIDATED"
    assert gw.upstream_calls[1][1] == [("If-None-Match", '"v1"')]


def test_vary(gw: Gateway) -> None:
    gw.handler = lambda call, cond: Reply(headers=[("Vary", "Accept-Encoding")],
                                          chunks=[(call.header("Accept-Encoding") or "none").encode()])
    gzip = [("Accept-Encoding", "gzip")]
    assert gw.request(headers=gzip).body == b"gzip"
    assert gw.request().body == b"none"
    hit_gzip, hit_plain = gw.request(headers=gzip), gw.request()
    assert (hit_gzip.cache, hit_gzip.body, hit_plain.cache, hit_plain.body) == ("HIT", b"gzip", "HIT", b"none")
    assert gw.request(headers=[("Accept-Encoding", "br")]).cache == "MISS"


@pytest.mark.parametrize("method, status, location, dropped, kept", [
    ("POST", 201, "/orders/7", ["/orders", "/orders/1", "/orders/7"], ["/orders/2"]),
    ("PUT", 200, None, ["/orders/1", "/orders"], ["/orders/2", "/orders/7"]),
    ("DELETE", 204, None, ["/orders/1", "/orders"], ["/orders/2"]),
    ("PATCH", 500, None, [], ["/orders/1", "/orders"]),
    ("POST", 404, None, [], ["/orders/1", "/orders"]),
    ("POST", 303, "http://gw.test/orders/2", ["/orders/2", "/orders/1"], ["/orders/7"]),
    ("POST", 201, "/7", ["/orders/7"], ["/orders/2"]),  # the service's own path, prefix stripped
])
def test_invalidation_after_writes(gw: Gateway, method: str, status: int, location: str | None,
                                   dropped: list[str], kept: list[str]) -> None:
    public = lambda call, cond: Reply(headers=[("Cache-Control", "public, max-age=60")])  # noqa: E731
    for path in ["/orders", "/orders/1", "/orders/2", "/orders/7"]:
        gw.request(path)
        gw.request(path, query="page=2")
    gw.handler = public
    gw.request("/orders/1", query="page=2", headers=[("Authorization", "x")])
    gw.handler = lambda call, cond: Reply(status=status, headers=[("Location", location)] if location else [])
    write = gw.request("/orders/1", method=method)
    assert write.cache == "BYPASS"
    gw.handler = lambda call, cond: Reply()
    for path in dropped:
        assert gw.request(path).cache == "MISS", path
    for path in kept:
        assert gw.request(path).cache == "HIT", path
    if "/orders/1" in dropped:  # every query and user of the path went too
        assert gw.request("/orders/1", query="page=2").cache == "MISS"
        gw.handler = public
        assert gw.request("/orders/1", query="page=2", headers=[("Authorization", "x")]).cache == "MISS"


def test_stale_while_revalidate_refreshes_once(gw: Gateway) -> None:
    refreshed: list[Any] = []
    gate = threading.Event()

    def refresher(call: Any) -> None:
        refreshed.append(call)
        gate.wait(2)
    gw.cache.refresher = refresher
    gw.handler = lambda call, cond: Reply(headers=[("Cache-Control", "max-age=10, stale-while-revalidate=30")])
    gw.request()
    gw.clock.advance(15)
    assert [gw.request().cache for _ in range(3)] == ["STALE"] * 3
    gate.set()
    assert len(refreshed) == 1 and ("Cache-Control", "no-cache") in refreshed[0].headers
    gw.clock.advance(30)
    assert gw.request().cache == "MISS"


def test_uncached_service_bypasses(gw: Gateway) -> None:
    from dataclasses import replace

    from tests.support.cache import SERVICE
    off = replace(SERVICE, cache=False)
    assert [gw.request(service=off).cache for _ in range(2)] == ["BYPASS", "BYPASS"]


def test_purge(gw: Gateway) -> None:
    for path in ["/orders/1", "/orders/2", "/orders/2/items", "/ordersx"]:
        gw.request(path)
        gw.request(path, query="q=1")
    assert gw.cache.purge(path="/orders/1")["purged"] == 2
    assert gw.request("/orders/1").cache == "MISS"
    assert gw.request("/orders/2").cache == "HIT"
    assert gw.cache.purge(prefix="/orders/")["purged"] == 5
    assert gw.request("/orders/2/items", query="q=1").cache == "MISS"
    assert gw.request("/ordersx").cache == "HIT"
    assert gw.cache.purge()["purged"] >= 2
    assert gw.request("/ordersx").cache == "MISS"


def test_snapshot(gw: Gateway) -> None:
    gw.request("/orders/1")
    gw.request("/orders/2")
    snap = gw.cache.snapshot()
    assert snap["keys"] == 2 and snap["memory_used_bytes"] > 0


def test_coalescing_in_process(gw: Gateway) -> None:
    class Stats:
        events: list[str] = []

        def record_cache(self, event: str) -> None:
            self.events.append(event)
    gw.cache.stats = Stats()
    release = threading.Event()

    def slow(call: Any, cond: Any) -> Reply:
        release.wait(2)
        return Reply()
    gw.handler = slow
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(gw.request())) for _ in range(20)]
    for thread in threads:
        thread.start()
    while not gw.upstream_calls:
        threading.Event().wait(0.005)
    threading.Event().wait(0.05)
    release.set()
    for thread in threads:
        thread.join(5)
    assert len(gw.upstream_calls) == 1
    assert sorted(r.cache for r in results) == ["HIT"] * 19 + ["MISS"]
    assert Stats.events == ["coalesced"] * 19


def test_coalesced_waiters_go_upstream_when_nothing_stored(gw: Gateway) -> None:
    release = threading.Event()

    def slow(call: Any, cond: Any) -> Reply:
        release.wait(2)
        return Reply(headers=[("Cache-Control", "no-store")])
    gw.handler = slow
    threads = [threading.Thread(target=gw.request) for _ in range(5)]
    for thread in threads:
        thread.start()
    threading.Event().wait(0.1)
    release.set()
    for thread in threads:
        thread.join(5)
    assert len(gw.upstream_calls) == 5


# -- the cache's own operations, on the per-worker store --------------------------------------------

def entry_for(call: Any, *headers: str, status: int = 200, body: bytes = b"x", now: float = 1_700_000_000.0) -> Any:
    return arrived(call, status, h(*headers), body, 0.0, now)


def test_save_puts_an_answer_where_lookup_finds_it_and_nowhere_else() -> None:
    cache = memory_cache(FakeClock())
    anonymous, alice = make_call(), make_call(headers=h("Cookie: a"))
    assert cache.save(anonymous, entry_for(anonymous, "Cache-Control: public, max-age=60", body=b"all"))
    assert cache.save(alice, entry_for(alice, "Cache-Control: public, max-age=60", body=b"alice"))
    assert cache.lookup(anonymous).entry.body == b"all"  # type: ignore[union-attr]
    mine = cache.lookup(alice)
    assert mine is not None and mine.entry.body == b"alice" and mine.entry.personal
    assert cache.lookup(make_call(headers=h("Cookie: b"))) is None
    assert cache.lookup(anonymous, partial=True) is None


def test_a_partial_answer_is_saved_apart_and_only_when_whole() -> None:
    cache = memory_cache(FakeClock())
    call = make_call(headers=h("Range: bytes=4-9"))
    headers = ("Cache-Control: max-age=60", "Content-Range: bytes 4-9/10")
    assert not cache.save(call, entry_for(call, *headers, status=206, body=b"45678"))
    assert cache.save(call, entry_for(call, *headers, status=206, body=b"456789"))
    assert cache.lookup(call) is None
    partial = cache.lookup(call, partial=True)
    assert partial is not None and partial.entry.body == b"456789"


def test_lookup_answers_the_newest_matching_variant() -> None:
    clock = FakeClock()
    cache = memory_cache(clock)
    call = make_call(headers=h("Accept: a"))
    cache.save(call, entry_for(call, "Cache-Control: max-age=60", "Vary: Accept", body=b"old", now=clock.now))
    cache.save(call, entry_for(call, "Cache-Control: max-age=60", "Vary: Accept", body=b"new", now=clock.now + 1))
    other = make_call(headers=h("Accept: b"))
    cache.save(other, entry_for(other, "Cache-Control: max-age=60", "Vary: Accept", body=b"b", now=clock.now + 2))
    assert cache.lookup(call).entry.body == b"new"  # type: ignore[union-attr]


def test_an_entry_stale_on_arrival_without_anything_to_keep_it_for_is_not_saved() -> None:
    cache = memory_cache(FakeClock(), cache_stale_grace=0.0)
    call = make_call()
    assert not cache.save(call, entry_for(call, "Cache-Control: max-age=0"))


def test_save_releases_the_leads_store_lock_and_release_wakes_the_waiters() -> None:
    cache = memory_cache(FakeClock())
    call = make_call()
    waited = cache.coalesce(call, {})
    lead = waited.lead
    assert lead is not None and lead.token == "local" and waited.found is None
    waiter = threading.Thread(target=lambda: seen.append(cache.coalesce(call, {})))
    seen: list[Any] = []
    waiter.start()
    assert cache.save(call, entry_for(call, "Cache-Control: max-age=60"), lead=lead)
    assert lead.token is None  # released by the store call
    cache.release(lead)
    waiter.join(2)
    assert seen[0].fresh and seen[0].lead is None and seen[0].found.entry.body == b"x"


def test_start_refresh_needs_a_refresher_and_runs_one_per_entry() -> None:
    cache = memory_cache(FakeClock())
    call = make_call()
    cache.save(call, entry_for(call, "Cache-Control: max-age=60"))
    found = cache.lookup(call)
    assert found is not None and not cache.start_refresh(call, found)
    gate, calls = threading.Event(), []

    def refresher(refresh: Any) -> None:
        calls.append(refresh)
        gate.wait(2)
    cache.refresher = refresher
    assert cache.start_refresh(call, found) and cache.start_refresh(call, found)
    gate.set()
    assert len(calls) == 1


def test_purge_says_what_it_did() -> None:
    cache = memory_cache(FakeClock())
    assert cache.purge() == {"purged": 0, "store": "memory"}
    assert cache.purge(prefix="/orders") == {"purged": 0, "store": "memory", "prefix": "/orders"}
    assert cache.purge(path="/orders/1") == {"purged": 0, "store": "memory", "path": "/orders/1"}
    assert cache.source == "memory"


def test_each_key_has_its_own_lead() -> None:
    cache = memory_cache(FakeClock())
    alice, anonymous = cache.coalesce(make_call(headers=h("Cookie: a")), {}), cache.coalesce(make_call(), {})
    assert alice.lead is not None and anonymous.lead is not None and alice.lead.name != anonymous.lead.name
    cache.release(alice.lead)
    cache.release(anonymous.lead)



def test_a_service_is_asked_for_stored_parts_only_once_it_has_one() -> None:
    cache = memory_cache(FakeClock())
    call, ranged = make_call(), make_call(headers=h("Range: bytes=0-4"))
    assert cache.may_hold_parts(call) is False  # a GET miss then looks for no part
    headers = ("Cache-Control: max-age=60", "Content-Range: bytes 0-4/10", 'ETag: "v1"')
    assert cache.save(ranged, entry_for(ranged, *headers, status=206, body=b"01234"))
    assert cache.may_hold_parts(call) is True  # this worker stored it: known at once
    other = memory_cache(FakeClock())
    other.store = cache.store  # another worker on the same store reads the marker the part left
    assert other.may_hold_parts(call) is True
