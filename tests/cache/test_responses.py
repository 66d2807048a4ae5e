"""ResponseCache on both stores: the 20-request timeline, credentials, invalidation, validation, stale, purge."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gateway.clock import FakeClock
from gateway.errors import BadGateway, CircuitOpen, GatewayTimeout, OnlyIfCached
from gateway.redis.link import RedisLink
from tests.support.cache import Gateway, Reply, memory_cache, redis_cache

Factory = Callable[..., Gateway]


@pytest.fixture
def links() -> Iterator[list[RedisLink]]:
    opened: list[RedisLink] = []
    yield opened
    for link in opened:
        link.close()


@pytest.fixture(params=["memory", "redis", "redis-tier"])
def make(request: pytest.FixtureRequest, links: list[RedisLink]) -> Factory:
    """Build a Gateway harness on the store under test; settings as keyword overrides."""

    def build(**settings: Any) -> Gateway:
        clock = FakeClock()
        if request.param == "memory":
            cache = memory_cache(clock, **settings)
        else:
            # The tier's copies age with the test's clock too, so no answer depends on real time.
            tier = 0.5 if request.param == "redis-tier" else 0.0
            cache = redis_cache(request.getfixturevalue("redis_server_session"), clock, links, tier_seconds=tier,
                                tier_monotonic=clock, **settings)
        gw = Gateway(cache, clock)
        gw.expected_source = "memory" if request.param == "memory" else "Redis"  # type: ignore[attr-defined]
        return gw

    return build


@pytest.fixture
def gw(make: Factory) -> Gateway:
    return make()


def source_of(gw: Gateway) -> str:
    """The store an answer must name, from the parameter the harness was built for (not the store's own label)."""
    return gw.expected_source  # type: ignore[attr-defined, no-any-return]


def test_twenty_request_timeline(gw: Gateway) -> None:
    labels = [gw.request().cache for _ in range(19)]
    assert labels == ["MISS"] + ["HIT"] * 18
    gw.clock.advance(300.5)
    assert gw.request().cache == "MISS"
    assert len(gw.upstream_calls) == 2


def test_hit_headers(gw: Gateway) -> None:
    miss = gw.request()
    assert (miss.status, miss.body, miss.source) == (200, b'{"id": 1}', source_of(gw))
    assert miss.header("Cache-Control") == "max-age=300"
    gw.clock.advance(42.7)
    hit = gw.request()
    assert hit.header("Age") == "42" and hit.header("Cache-Control") == "max-age=300"
    assert (hit.body, hit.cache, hit.source) == (b'{"id": 1}', "HIT", source_of(gw))
    assert gw.done == [True] and gw.connection_log == ["release"]


def test_upstream_cache_control_is_not_rewritten(gw: Gateway) -> None:
    gw.handler = lambda call, cond: Reply(headers=[("Cache-Control", "public, max-age=30")])
    gw.request()
    hit = gw.request()
    assert [v for k, v in hit.headers if k == "Cache-Control"] == ["public, max-age=30"]
    gw.clock.advance(31)
    assert gw.request().cache == "MISS"


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


def test_a_hit_carries_the_stored_date(gw: Gateway) -> None:
    stored = "Wed, 01 Jan 2025 00:00:00 GMT"
    gw.handler = lambda call, cond: Reply(headers=[("Cache-Control", "max-age=600"), ("Date", stored)])
    gw.request()
    gw.clock.advance(30)
    hit = gw.request()
    assert hit.cache == "HIT" and [v for k, v in hit.headers if k == "Date"] == [stored]


def test_a_response_without_date_is_stored_with_the_time_it_arrived(gw: Gateway) -> None:
    gw.handler = lambda call, cond: Reply(headers=[("Cache-Control", "max-age=600")])
    miss = gw.request()
    gw.clock.advance(30)
    hit = gw.request()
    dates = [v for k, v in hit.headers if k == "Date"]
    assert len(dates) == 1 and dates == [v for k, v in miss.headers if k == "Date"]


def test_gateway_targeted_field_is_obeyed_and_kept_from_the_client(gw: Gateway) -> None:
    gw.handler = lambda call, cond: Reply(headers=[("Cache-Control", "no-store"),
                                                   ("Gateway-Cache-Control", "max-age=60"),
                                                   ("CDN-Cache-Control", "max-age=5")])
    miss, hit = gw.request(), gw.request()
    assert (miss.cache, hit.cache) == ("MISS", "HIT")
    for answer in (miss, hit):
        assert answer.header("Gateway-Cache-Control") is None
        assert answer.header("CDN-Cache-Control") == "max-age=5"  # forwarded: a CDN in front obeys it too


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


@pytest.mark.parametrize(("range_header", "status", "body", "content_range"), [
    ("bytes=0-1", 206, b"01", "bytes 0-1/11"),
    ("bytes=5-", 206, b"567890", "bytes 5-10/11"),
    ("bytes=-3", 206, b"890", "bytes 8-10/11"),
    ("bytes=20-", 416, b"", "bytes */11"),
    ("bytes=0-1, 4-5", 200, b"01234567890", None),
])
def test_ranges_are_cut_from_a_stored_complete_answer(gw: Gateway, range_header: str, status: int, body: bytes,
                                                      content_range: str | None) -> None:
    gw.handler = lambda call, cond: Reply(headers=[("Cache-Control", "max-age=60"), ("A", "1"),
                                                   ("Content-Length", "11")], chunks=[b"01234567890"])
    gw.request()
    answer = gw.request(headers=[("Range", range_header)])
    assert (answer.cache, answer.status, answer.body) == ("HIT", status, body)
    assert answer.header("Content-Range") == content_range and answer.header("A") == "1"
    if status == 206:
        assert answer.header("Content-Length") is None  # the server sets it from the body cut
    assert len(gw.upstream_calls) == 1


def partial_reply(content_range: str = "bytes 4-9/10", body: bytes = b"456789") -> Reply:
    return Reply(status=206, headers=[("Cache-Control", "max-age=60"), ("Content-Range", content_range),
                                      ("Content-Length", str(len(body)))], chunks=[body])


@pytest.mark.parametrize(("range_header", "body", "content_range"), [
    ("bytes=4-9", b"456789", "bytes 4-9/10"),
    ("bytes=6-8", b"678", "bytes 6-8/10"),
    ("bytes=6-", b"6789", "bytes 6-9/10"),
    ("bytes=-1", b"9", "bytes 9-9/10"),
])
def test_a_stored_partial_answer_serves_the_ranges_it_holds(gw: Gateway, range_header: str, body: bytes,
                                                            content_range: str) -> None:
    gw.handler = lambda call, cond: partial_reply()
    first = gw.request(headers=[("Range", "bytes=-6")])
    assert (first.cache, first.status, first.body) == ("MISS", 206, b"456789")
    answer = gw.request(headers=[("Range", range_header)])
    assert (answer.cache, answer.status, answer.body) == ("HIT", 206, body)
    assert answer.header("Content-Range") == content_range and answer.header("Content-Length") is None
    assert len(gw.upstream_calls) == 1


@pytest.mark.parametrize("headers", [
    [],                                           # the whole answer: never from a partial entry
    [("Range", "bytes=0-4")],                     # bytes it does not hold
    [("Range", "bytes=3-5")],
    [("Range", "bytes=5-6"), ("If-None-Match", '"x"')],
])
def test_a_stored_partial_answer_never_stands_in_for_what_it_lacks(gw: Gateway, headers: list) -> None:
    gw.handler = lambda call, cond: partial_reply()
    gw.request(headers=[("Range", "bytes=-6")])
    gw.handler = lambda call, cond: Reply(headers=[("Cache-Control", "max-age=60")], chunks=[b"0123456789"])
    assert gw.request(headers=headers).cache != "HIT"
    assert len(gw.upstream_calls) == 2


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


def test_request_directives(gw: Gateway) -> None:
    gw.request()
    gw.clock.advance(100)
    assert gw.request(headers=[("Cache-Control", "max-age=50")]).cache == "MISS"
    gw.clock.advance(100)
    assert gw.request(headers=[("Cache-Control", "min-fresh=250")]).cache == "MISS"
    assert gw.request(headers=[("Cache-Control", "no-cache")]).cache == "MISS"
    assert gw.request(headers=[("Cache-Control", "no-store")]).cache == "HIT"  # reuse is allowed, storing is not
    gw.clock.advance(400)
    assert gw.request(headers=[("Cache-Control", "max-stale")]).cache == "STALE"
    assert len(gw.upstream_calls) == 4


def test_request_no_store_prevents_storing(gw: Gateway) -> None:
    assert gw.request(headers=[("Cache-Control", "no-store")]).cache == "BYPASS"
    assert gw.request().cache == "MISS"


def test_only_if_cached(gw: Gateway) -> None:
    with pytest.raises(OnlyIfCached) as info:
        gw.request(headers=[("Cache-Control", "only-if-cached")])
    assert info.value.service == "order-service" and info.value.status == 504
    gw.request()
    assert gw.request(headers=[("Cache-Control", "only-if-cached")]).cache == "HIT"
    assert len(gw.upstream_calls) == 1


def test_vary(gw: Gateway) -> None:
    gw.handler = lambda call, cond: Reply(headers=[("Vary", "Accept-Encoding")],
                                          chunks=[(call.header("Accept-Encoding") or "none").encode()])
    gzip = [("Accept-Encoding", "gzip")]
    assert gw.request(headers=gzip).body == b"gzip"
    assert gw.request().body == b"none"
    hit_gzip, hit_plain = gw.request(headers=gzip), gw.request()
    assert (hit_gzip.cache, hit_gzip.body, hit_plain.cache, hit_plain.body) == ("HIT", b"gzip", "HIT", b"none")
    assert gw.request(headers=[("Accept-Encoding", "br")]).cache == "MISS"


def test_head_answered_from_get_entry(gw: Gateway) -> None:
    gw.handler = lambda call, cond: Reply(headers=[("Content-Length", "9")])
    head_miss = gw.request(method="HEAD")
    assert head_miss.cache == "BYPASS" and gw.upstream_calls[-1][0].method == "HEAD"
    assert gw.request().cache == "MISS"
    head = gw.request(method="HEAD")
    assert (head.cache, head.body, head.header("Content-Length")) == ("HIT", b"", "9")
    assert len(gw.upstream_calls) == 2


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


def test_revalidation_refreshes_the_entry(gw: Gateway) -> None:
    gw.handler = lambda call, cond: Reply(headers=[("ETag", '"v1"'), ("Cache-Control", "max-age=10"),
                                                   ("X-Version", "1")])
    gw.request()
    gw.clock.advance(11)
    gw.handler = lambda call, cond: Reply(status=304, headers=[("Cache-Control", "max-age=20"), ("ETag", '"v1"')],
                                          chunks=[])
    again = gw.request()
    assert gw.upstream_calls[-1][1] == [("If-None-Match", '"v1"')]
    assert (again.status, again.cache, again.body) == (200, "REVALIDATED", b'{"id": 1}')
    assert again.header("Cache-Control") == "max-age=20" and again.header("X-Version") == "1"
    assert again.header("Age") == "0"
    gw.clock.advance(15)
    assert gw.request().cache == "HIT"
    assert len(gw.upstream_calls) == 2


def test_revalidation_with_a_new_body_stores_it(gw: Gateway) -> None:
    gw.handler = lambda call, cond: Reply(headers=[("Last-Modified", "Tue, 14 Nov 2023 22:00:00 GMT"),
                                                   ("Cache-Control", "max-age=10")])
    gw.request()
    gw.clock.advance(11)
    gw.handler = lambda call, cond: Reply(headers=[("Cache-Control", "max-age=10")], chunks=[b"new"])
    assert gw.request().cache == "MISS"
    assert gw.upstream_calls[-1][1] == [("If-Modified-Since", "Tue, 14 Nov 2023 22:00:00 GMT")]
    assert gw.request().body == b"new"


def test_response_no_cache_revalidates_every_time(gw: Gateway) -> None:
    gw.handler = lambda call, cond: Reply(headers=[("ETag", '"v1"'), ("Cache-Control", "no-cache")])
    gw.request()
    gw.handler = lambda call, cond: Reply(status=304, headers=[("ETag", '"v1"')], chunks=[])
    assert [gw.request().cache for _ in range(2)] == ["REVALIDATED", "REVALIDATED"]


def test_client_conditional_answered_304(gw: Gateway) -> None:
    gw.handler = lambda call, cond: Reply(headers=[("ETag", '"v1"'), ("Cache-Control", "max-age=60"),
                                                   ("Content-Type", "application/json")])
    gw.request()
    not_modified = gw.request(headers=[("If-None-Match", 'W/"v1"')])
    assert (not_modified.status, not_modified.body, not_modified.cache) == (304, b"", "HIT")
    assert not_modified.header("ETag") == '"v1"' and not_modified.header("Content-Type") is None
    assert gw.request(headers=[("If-None-Match", '"v2"')]).status == 200
    assert len(gw.upstream_calls) == 1


@pytest.mark.parametrize("error", [BadGateway(), GatewayTimeout(), CircuitOpen(service="order-service")])
def test_stale_on_error(gw: Gateway, error: Exception) -> None:
    gw.handler = lambda call, cond: Reply(headers=[("Cache-Control", "max-age=10")])
    gw.request()
    gw.clock.advance(100)
    gw.error = error
    stale = gw.request()
    assert (stale.cache, stale.body, stale.header("Age")) == ("STALE", b'{"id": 1}', "100")
    gw.clock.advance(300)  # past max-age + CACHE_STALE_GRACE
    with pytest.raises(type(error)):
        gw.request()


def test_stale_on_upstream_5xx(gw: Gateway) -> None:
    gw.handler = lambda call, cond: Reply(headers=[("Cache-Control", "max-age=10")])
    gw.request()
    gw.clock.advance(20)
    gw.handler = lambda call, cond: Reply(status=503, chunks=[b"down"])
    assert gw.request().cache == "STALE"
    assert gw.connection_log[-1] == "discard" and gw.done[-1] is True


@pytest.mark.parametrize("directives", ["max-age=10, must-revalidate", "max-age=10, proxy-revalidate",
                                        "no-cache", "s-maxage=10", "s-maxage=10, stale-if-error=999"])
def test_stale_forbidden(gw: Gateway, directives: str) -> None:
    gw.handler = lambda call, cond: Reply(headers=[("Cache-Control", directives), ("ETag", '"x"')])
    gw.request()
    gw.clock.advance(20)
    gw.error = BadGateway()
    with pytest.raises(BadGateway):
        gw.request()
    gw.error = None
    gw.handler = lambda call, cond: Reply(status=502, chunks=[b"bad"])
    assert gw.request().status == 502


def test_stale_if_error_extends_and_grace_zero(make: Factory) -> None:
    gw = make(cache_stale_grace=0.0)
    gw.handler = lambda call, cond: Reply(headers=[("Cache-Control", "max-age=10")])
    gw.request("/orders/1")
    gw.handler = lambda call, cond: Reply(headers=[("Cache-Control", "max-age=10, stale-if-error=60")])
    gw.request("/orders/2")
    gw.clock.advance(30)
    gw.error = GatewayTimeout()
    with pytest.raises(GatewayTimeout):
        gw.request("/orders/1")
    assert gw.request("/orders/2").cache == "STALE"


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


def test_oversize_streams_without_storing(make: Factory) -> None:
    gw = make(cache_max_object_bytes=10)
    gw.handler = lambda call, cond: Reply(chunks=[b"0123456", b"789abc", b"def"])
    first = gw.request()
    assert (first.cache, first.body) == ("BYPASS", b"0123456789abcdef")
    assert gw.request().cache == "BYPASS" and gw.done == [True, True]


def test_truncated_body_is_aborted_and_not_stored(gw: Gateway) -> None:
    gw.handler = lambda call, cond: Reply(chunks=[b"part"], cut=BadGateway())
    cut = gw.request()
    assert isinstance(cut.aborted, BadGateway) and cut.body == b"part"
    assert gw.done == [False] and gw.connection_log == ["discard"]
    gw.handler = lambda call, cond: Reply()
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


def test_client_validator_we_cannot_replace_disables_revalidation(gw: Gateway) -> None:
    gw.handler = lambda call, cond: Reply(headers=[("Last-Modified", "Tue, 14 Nov 2023 22:00:00 GMT"),
                                                   ("Cache-Control", "max-age=10")])
    gw.request()
    gw.clock.advance(11)
    gw.handler = lambda call, cond: Reply(status=304, chunks=[])
    answer = gw.request(headers=[("If-None-Match", '"theirs"')])
    assert gw.upstream_calls[-1][1] == [] and (answer.status, answer.cache) == (304, "BYPASS")


@pytest.mark.parametrize("path, location, expected", [
    ("/orders/1", None, ["/orders", "/orders/", "/orders/1"]),
    ("/orders/1/", None, ["/orders", "/orders/", "/orders/1", "/orders/1/"]),
    ("/orders", "/orders/9", ["/", "/orders", "/orders/9", "/orders/orders/9"]),
    ("/orders/1", "/9/", ["/orders", "/orders/", "/orders/1", "/orders/9/"]),
    ("/orders/1", "http://elsewhere/orders/9", ["/orders", "/orders/", "/orders/1"]),
])
def test_invalidation_paths(path: str, location: str | None, expected: list[str]) -> None:
    from gateway.cache.responses import invalidation_paths
    from tests.support.cache import make_call
    headers = [("Location", location)] if location else []
    assert invalidation_paths(make_call(path, method="POST"), headers) == expected


def test_memory_store_is_a_bounded_lru() -> None:
    from gateway.cache.store import MemoryStore
    clock = FakeClock()
    store = MemoryStore(max_entries=3, max_bytes=10_000, clock=clock)
    for name in "abc":
        store.put(name, "/" + name, "v", b"x" * 100, ttl=10)
    assert store.get_variants("a") == [b"x" * 100]  # a is now the most recently used
    store.put("d", "/d", "v", b"x", ttl=10)
    assert store.get_variants("b") == [] and store.get_variants("a") != []
    store.put("big", "/big", "v", b"y" * 9_500, ttl=10)
    assert store.snapshot()["keys"] <= 3 and store.snapshot()["memory_used_bytes"] <= 10_000
    clock.advance(10.5)
    assert store.get_variants("big") == []
    assert store.purge(prefix="/") == 2  # a and d, expired but still held until looked up or purged
    assert store.snapshot() == {"keys": 0, "memory_used_bytes": 0}
