"""ReadExchange and WriteExchange: alone against a fake cache, then through the harness on every store."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.cache.coalescing import Coalesced, Lead
from gateway.cache.entry import Entry, Found, arrived
from gateway.cache.exchange import ReadExchange, WriteExchange, begin_read
from gateway.cache.passthrough import BodyStream, Exchange
from gateway.clock import FakeClock
from gateway.errors import BadGateway, CircuitOpen, GatewayTimeout, NotFound, OnlyIfCached, UpstreamError
from gateway.messages import ProxyCall
from gateway.redis.link import StoreUnavailable
from tests.cache.conftest import Factory
from tests.support.cache import Gateway, Reply, h, make_call, make_settings, upstream_of


class FakeCache:
    """The cache as an exchange sees it, answering what a test sets and recording what it is asked."""

    source = "fake"

    def __init__(self, found: Found | None = None, partial: Found | None = None,
                 coalesced: Coalesced | None = None, refresh: bool = False, **settings: Any) -> None:
        self.settings = make_settings(**settings)
        self.clock = FakeClock()
        self.found, self.partial, self.coalesced, self.refresh = found, partial, coalesced, refresh
        self.failing: str | None = None  # the method that raises StoreUnavailable
        self.asked: list[tuple[str, Any]] = []

    def _ask(self, name: str, detail: Any) -> None:
        self.asked.append((name, detail))
        if self.failing == name:
            raise StoreUnavailable(name)

    def lookup(self, call: ProxyCall, *, partial: bool = False) -> Found | None:
        self._ask("lookup", partial)
        return self.partial if partial else self.found

    def lookup_or_lead(self, call: ProxyCall) -> tuple[Found | None, Lead | None]:
        return self.lookup(call), None  # the lead is left to coalesce, which these tests drive

    def may_hold_parts(self, call: ProxyCall) -> bool:
        return self.partial is not None  # a store without parts is not asked for one

    def coalesce(self, call: ProxyCall, request_cc: dict) -> Coalesced:
        self._ask("coalesce", None)
        return self.coalesced or Coalesced(Lead("k"))

    def start_refresh(self, call: ProxyCall, found: Found) -> bool:
        self._ask("start_refresh", found)
        return self.refresh

    def save(self, call: ProxyCall, entry: Entry, *, lead: Lead | None = None, key: str | None = None) -> bool:
        self._ask("save", (entry, lead, key))
        return True

    def release(self, lead: Lead | None) -> None:
        self.asked.append(("release", lead))

    def invalidate(self, call: ProxyCall, response_headers: list) -> int:
        self._ask("invalidate", response_headers)
        return 1

    def names(self) -> list[str]:
        return [name for name, _ in self.asked]


def found(*headers: str, age: float = 0.0, key: str = "k", status: int = 200, body: bytes = b"body") -> Found:
    """A stored entry as the fake cache finds it, ``age`` seconds old at the fake clock's start."""
    entry = arrived(make_call(), status, h(*headers), body, 0.0, FakeClock().now - age)
    return Found(entry, key)


def read(cache: FakeCache, coalesce: bool = True, **call: Any) -> Exchange:
    return begin_read(make_call(**call), cache, coalesce)  # type: ignore[arg-type]


def test_a_fresh_entry_answers_without_coalescing() -> None:
    cache = FakeCache(found("Cache-Control: max-age=60", age=10))
    exchange = read(cache)
    assert exchange.response is not None and exchange.response.cache == "HIT"
    assert exchange.response.header("Age") == "10" and exchange.response.cache_source == "fake"
    assert cache.names() == ["lookup"]


def test_stale_while_revalidate_answers_stale_only_when_a_refresh_starts() -> None:
    stale = found("Cache-Control: max-age=10, stale-while-revalidate=30", 'ETag: "v1"', age=15)
    started = read(FakeCache(stale, refresh=True))
    assert started.response is not None and started.response.cache == "STALE"
    refused = FakeCache(stale, refresh=False)
    exchange = read(refused)
    assert exchange.response is None and refused.names() == ["lookup", "start_refresh", "coalesce"]
    assert exchange.conditional_headers() == h('If-None-Match: "v1"')


def test_a_waiter_takes_a_leaders_fresh_answer_or_keeps_it_to_revalidate() -> None:
    fresh = found("Cache-Control: max-age=60")
    hit = read(FakeCache(coalesced=Coalesced(None, fresh, fresh=True)))
    assert hit.response is not None and hit.response.cache == "HIT"
    newer = found("Cache-Control: no-cache", 'ETag: "v2"')
    kept = read(FakeCache(found("Cache-Control: max-age=1", 'ETag: "v1"', age=5),
                          coalesced=Coalesced(Lead("k"), newer)))
    assert kept.response is None and kept.conditional_headers() == h('If-None-Match: "v2"')


@pytest.mark.parametrize("headers, method, coalesce", [
    (h("Cache-Control: no-cache"), "GET", True),
    (h("Cache-Control: no-store"), "GET", True),
    ([], "HEAD", True),
    ([], "GET", False),
])
def test_no_coalescing_where_no_answer_may_be_shared(headers: list, method: str, coalesce: bool) -> None:
    cache = FakeCache()
    read(cache, coalesce, headers=headers, method=method)
    assert "coalesce" not in cache.names()


def test_only_if_cached_with_nothing_stored_or_the_store_down() -> None:
    with pytest.raises(OnlyIfCached):
        read(FakeCache(), headers=h("Cache-Control: only-if-cached"))
    down = FakeCache()
    down.failing = "lookup"
    with pytest.raises(OnlyIfCached):
        read(down, headers=h("Cache-Control: only-if-cached"))


def test_a_store_down_at_lookup_bypasses_and_lets_go_of_the_lead() -> None:
    cache = FakeCache()
    cache.failing = "coalesce"
    exchange = read(cache)
    assert type(exchange) is Exchange and exchange.cache_status == "BYPASS"
    assert cache.names()[-1] == "release"


def test_a_stored_partial_answer_serves_a_range_unless_the_request_is_conditional() -> None:
    partial = found("Cache-Control: max-age=60", "Content-Range: bytes 4-9/10", status=206, body=b"456789")
    exchange = read(FakeCache(partial=partial), headers=h("Range: bytes=5-6"))
    assert exchange.response is not None and (exchange.response.status, exchange.response.body) == (206, b"56")
    conditional = FakeCache(partial=partial)
    assert read(conditional, headers=h("Range: bytes=5-6", "If-Range: x")).response is None
    assert ("lookup", True) not in conditional.asked


def answer_with(exchange: Exchange, reply: Reply) -> tuple[Any, list[str], list[bool]]:
    log: list[str] = []
    done: list[bool] = []
    return exchange.on_response(upstream_of(reply, log), done.append), log, done


def test_a_304_refreshes_the_stale_entry_under_its_key_and_lets_go_of_the_lead() -> None:
    cache = FakeCache(found("Cache-Control: max-age=10", 'ETag: "v1"', "X-A: 1", age=20, key="where"))
    exchange = read(cache)
    assert exchange.conditional_headers() == h('If-None-Match: "v1"')
    response, log, done = answer_with(exchange, Reply(304, h("Cache-Control: max-age=99"), []))
    assert (response.status, response.cache, response.body) == (200, "REVALIDATED", b"body")
    assert response.header("X-A") == "1" and response.header("Cache-Control") == "max-age=99"
    ((entry, lead, key),) = [detail for name, detail in cache.asked if name == "save"]
    assert (entry.lifetime, lead, key) == (99.0, None, "where")
    assert log == ["discard"] and done == [True] and cache.names()[-1] == "release"


def test_a_304_without_revalidating_is_passed_through() -> None:
    exchange = read(FakeCache(found("Cache-Control: max-age=10", age=20)))  # no validator: nothing sent
    assert exchange.conditional_headers() == []
    response, _, _ = answer_with(exchange, Reply(304, [], []))
    assert (response.status, response.cache) == (304, "BYPASS")


def test_a_new_answer_is_saved_with_the_lead_and_answers_miss() -> None:
    cache = FakeCache()
    exchange = read(cache)
    response, log, done = answer_with(exchange, Reply(200, h("Cache-Control: max-age=60"), [b"a", b"b"]))
    assert (response.cache, response.body, response.cache_source) == ("MISS", b"ab", "fake")
    ((entry, lead, key),) = [detail for name, detail in cache.asked if name == "save"]
    assert (entry.body, lead, key) == (b"ab", Lead("k"), None)
    assert log == ["release"] and done == [True]


def test_an_answer_the_store_refuses_is_a_bypass() -> None:
    cache = FakeCache()
    cache.failing = "save"
    response, _, _ = answer_with(read(cache), Reply(200, h("Cache-Control: max-age=60")))
    assert (response.cache, response.cache_source) == ("BYPASS", None)


def test_what_may_not_be_stored_streams_through_and_lets_go_of_the_lead() -> None:
    cache = FakeCache()
    response, _, _ = answer_with(read(cache), Reply(200, h("Cache-Control: no-store")))
    assert isinstance(response.body, BodyStream) and response.cache == "BYPASS"
    assert "save" not in cache.names() and cache.names()[-1] == "release"


def test_a_body_over_the_limit_streams_whole_and_a_cut_one_fails() -> None:
    big = read(FakeCache(cache_max_object_bytes=3))
    response, _, _ = answer_with(big, Reply(200, [], [b"ab", b"cd", b"ef"]))
    assert response.cache == "BYPASS" and b"".join(response.body) == b"abcdef"
    cut, log, done = answer_with(read(FakeCache()), Reply(200, [], [b"ab"], cut=BadGateway()))
    with pytest.raises(UpstreamError):
        list(cut.body)
    assert log == ["discard"] and done == [False]


@pytest.mark.parametrize("error, age, served", [
    (BadGateway(), 100, True),
    (GatewayTimeout(), 100, True),
    (CircuitOpen(service="s"), 100, True),
    (BadGateway(), 311, False),          # past max-age plus the stale grace
    (NotFound(), 100, False),            # not a failure a stored answer stands in for
])
def test_on_error_serves_the_stale_entry_within_its_window(error: Exception, age: float, served: bool) -> None:
    exchange = read(FakeCache(found("Cache-Control: max-age=10", age=age)))
    if served:
        assert exchange.on_error(error).cache == "STALE"  # type: ignore[arg-type]
    else:
        with pytest.raises(type(error)):
            exchange.on_error(error)  # type: ignore[arg-type]


def test_an_upstream_5xx_is_answered_stale_where_allowed() -> None:
    cache = FakeCache(found("Cache-Control: max-age=10", age=20))
    response, log, done = answer_with(read(cache), Reply(503, [], [b"down"]))
    assert response.cache == "STALE" and log == ["discard"] and done == [True]
    forbidden = FakeCache(found("Cache-Control: max-age=10, must-revalidate", age=20))
    response, _, _ = answer_with(read(forbidden), Reply(503, [], [b"down"]))
    assert (response.status, response.cache) == (503, "BYPASS")


def test_close_lets_go_of_the_lead_once() -> None:
    cache = FakeCache()
    exchange = read(cache)
    assert isinstance(exchange, ReadExchange) and exchange.lead == Lead("k")
    exchange.close()
    exchange.close()
    assert [detail for name, detail in cache.asked if name == "release"] == [Lead("k"), None]


@pytest.mark.parametrize("status, invalidated", [(200, True), (201, True), (303, True), (404, False), (500, False)])
def test_a_write_invalidates_unless_it_failed(status: int, invalidated: bool) -> None:
    cache = FakeCache()
    response, _, _ = answer_with(WriteExchange(make_call(method="POST"), cache),  # type: ignore[arg-type]
                                 Reply(status, h("Location: /orders/9")))
    assert (cache.names() == ["invalidate"]) is invalidated and response.cache == "BYPASS"


def test_a_write_still_answers_when_the_store_is_down() -> None:
    cache = FakeCache()
    cache.failing = "invalidate"
    response, _, _ = answer_with(WriteExchange(make_call(method="DELETE"), cache),  # type: ignore[arg-type]
                                 Reply(204, [], []))
    assert response.status == 204


# -- through the harness, on every store ---------------------------------------------------------


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


def test_client_validator_we_cannot_replace_disables_revalidation(gw: Gateway) -> None:
    gw.handler = lambda call, cond: Reply(headers=[("Last-Modified", "Tue, 14 Nov 2023 22:00:00 GMT"),
                                                   ("Cache-Control", "max-age=10")])
    gw.request()
    gw.clock.advance(11)
    gw.handler = lambda call, cond: Reply(status=304, chunks=[])
    answer = gw.request(headers=[("If-None-Match", '"theirs"')])
    assert gw.upstream_calls[-1][1] == [] and (answer.status, answer.cache) == (304, "BYPASS")


def stored_part(*headers: str) -> Found:
    """Bytes 0-4 of a 10-byte representation, stored from an earlier 206."""
    return found("Cache-Control: max-age=60", "Content-Range: bytes 0-4/10", *(headers or ('ETag: "v1"',)),
                 status=206, body=b"01234", key="k:partial")


def rest_reply(etag: str = '"v1"', content_range: str = "bytes 5-9/10", body: bytes = b"56789") -> Reply:
    return Reply(206, h("Cache-Control: max-age=60", "Content-Range: " + content_range, "ETag: " + etag, "A: 2"),
                 [body])


def test_a_whole_get_completes_the_stored_part_with_a_range_for_the_rest() -> None:
    cache = FakeCache(partial=stored_part())
    exchange = read(cache)
    assert exchange.conditional_headers() == h("Range: bytes=5-", 'If-Range: "v1"')
    response, log, done = answer_with(exchange, rest_reply())
    assert (response.status, response.body, response.cache) == (200, b"0123456789", "MISS")
    assert response.header("Content-Range") is None and response.header("A") == "2"
    ((entry, lead, key),) = [detail for name, detail in cache.asked if name == "save"]
    assert (entry.status, entry.body, lead, key) == (200, b"0123456789", Lead("k"), None)
    assert log == ["release"] and done == [True] and cache.names()[-1] == "release"


def test_a_range_the_part_lacks_is_cut_from_the_completed_whole() -> None:
    cache = FakeCache(partial=stored_part())
    exchange = read(cache, headers=h("Range: bytes=3-7"))
    assert exchange.response is None and exchange.conditional_headers() == h("Range: bytes=5-", 'If-Range: "v1"')
    response, _, _ = answer_with(exchange, rest_reply())
    assert (response.status, response.body, response.header("Content-Range")) == (206, b"34567", "bytes 3-7/10")


def test_a_whole_answer_to_the_completing_range_is_used_as_it_is() -> None:
    cache = FakeCache(partial=stored_part())
    exchange = read(cache)
    exchange.conditional_headers()
    response, _, _ = answer_with(exchange, Reply(200, h("Cache-Control: max-age=60", 'ETag: "v2"'), [b"new"]))
    assert (response.status, response.body, response.cache) == (200, b"new", "MISS")


@pytest.mark.parametrize("reply", [rest_reply(etag='"v2"'), rest_reply(content_range="bytes 6-9/10", body=b"6789"),
                                   Reply(416, h("Content-Range: bytes */4"), [])])
def test_an_answer_that_does_not_complete_the_part_is_a_502_never_stored(reply: Reply) -> None:
    cache = FakeCache(partial=stored_part())
    exchange = read(cache)
    exchange.conditional_headers()
    with pytest.raises(BadGateway):
        answer_with(exchange, reply)
    assert "save" not in cache.names() and cache.names()[-1] == "release"


def test_a_cut_short_rest_fails_the_call() -> None:
    exchange = read(FakeCache(partial=stored_part()))
    exchange.conditional_headers()
    done: list[bool] = []
    with pytest.raises(BadGateway):
        exchange.on_response(upstream_of(Reply(206, rest_reply().headers, [b"56"], cut=BadGateway()), []), done.append)
    assert done == [False]


def test_no_completion_without_a_strong_validator_or_for_head() -> None:
    weak = FakeCache(partial=stored_part('ETag: W/"v1"'))
    assert read(weak).conditional_headers() == []
    head = FakeCache(partial=stored_part())
    assert read(head, method="HEAD").conditional_headers() == [] and ("lookup", True) not in head.asked


def test_a_stored_part_is_completed_stored_whole_and_then_hit(gw: Gateway) -> None:
    part = h("Cache-Control: max-age=60", 'ETag: "v1"', "Content-Range: bytes 0-4/10")
    gw.handler = lambda call, cond: Reply(206, part, [b"01234"])
    assert gw.request(headers=h("Range: bytes=0-4")).status == 206
    gw.handler = lambda call, cond: Reply(206, [*part[:2], ("Content-Range", "bytes 5-9/10")], [b"56789"])
    whole = gw.request()
    assert gw.upstream_calls[-1][1] == h("Range: bytes=5-", 'If-Range: "v1"')
    assert (whole.status, whole.cache, whole.body) == (200, "MISS", b"0123456789")
    assert (gw.request().cache, gw.request(headers=h("Range: bytes=-2")).body) == ("HIT", b"89")
    assert len(gw.upstream_calls) == 2
