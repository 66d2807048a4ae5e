"""Answers from stored entries: headers as stored with a new Age, 304s, ranges cut from whole and partial entries."""

from __future__ import annotations

import pytest

from gateway.cache import answers
from gateway.cache.entry import Entry
from gateway.cache.policy.ranges import Cut
from tests.support.cache import DATE, T0, Gateway, Reply, h, make_call, partial_reply


def test_hit_headers(gw: Gateway) -> None:
    miss = gw.request()
    assert (miss.status, miss.body, miss.source) == (200, b'{"id": 1}', gw.expected_source)
    assert miss.header("Cache-Control") == "max-age=300"
    gw.clock.advance(42.7)
    hit = gw.request()
    assert hit.header("Age") == "42" and hit.header("Cache-Control") == "max-age=300"
    assert (hit.body, hit.cache, hit.source) == (b'{"id": 1}', "HIT", gw.expected_source)
    assert gw.done == [True] and gw.connection_log == ["release"]


def test_upstream_cache_control_is_not_rewritten(gw: Gateway) -> None:
    gw.handler = lambda call, cond: Reply(headers=[("Cache-Control", "public, max-age=30")])
    gw.request()
    hit = gw.request()
    assert [v for k, v in hit.headers if k == "Cache-Control"] == ["public, max-age=30"]
    gw.clock.advance(31)
    assert gw.request().cache == "MISS"


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


def test_head_answered_from_get_entry(gw: Gateway) -> None:
    gw.handler = lambda call, cond: Reply(headers=[("Content-Length", "9")])
    head_miss = gw.request(method="HEAD")
    assert head_miss.cache == "BYPASS" and gw.upstream_calls[-1][0].method == "HEAD"
    assert gw.request().cache == "MISS"
    head = gw.request(method="HEAD")
    assert (head.cache, head.body, head.header("Content-Length")) == ("HIT", b"", "9")
    assert len(gw.upstream_calls) == 2


def test_client_conditional_answered_304(gw: Gateway) -> None:
    gw.handler = lambda call, cond: Reply(headers=[("ETag", '"v1"'), ("Cache-Control", "max-age=60"),
                                                   ("Content-Type", "application/json")])
    gw.request()
    not_modified = gw.request(headers=[("If-None-Match", 'W/"v1"')])
    assert (not_modified.status, not_modified.body, not_modified.cache) == (304, b"", "HIT")
    assert not_modified.header("ETag") == '"v1"' and not_modified.header("Content-Type") is None
    assert gw.request(headers=[("If-None-Match", '"v2"')]).status == 200
    assert len(gw.upstream_calls) == 1


def stored(status: int = 200, headers: list | None = None, body: bytes = b"0123456789", **kw: object) -> Entry:
    fields: dict = dict(status=status, headers=h("Cache-Control: max-age=60", "Date: " + DATE, 'ETag: "v1"')
                        if headers is None else headers, body=body, request_time=T0, response_time=T0,
                        lifetime=60.0, heuristic=False, personal=False)
    fields.update(kw)
    return Entry(**fields)


def test_an_answer_carries_the_stored_headers_with_a_new_age_and_not_the_gateways_field() -> None:
    entry = stored(headers=h("Age: 5", "Gateway-Cache-Control: max-age=60", "X-A: 1"))
    answer = answers.answer(make_call(), entry, "HIT", T0 + 10.9, "memory")
    assert answer.headers == h("X-A: 1", "Age: 15")
    assert (answer.status, answer.body, answer.cache, answer.cache_source) == (200, b"0123456789", "HIT", "memory")


def test_the_gateways_ttl_is_told_where_it_applied() -> None:
    entry = stored(headers=[], heuristic=True, lifetime=300.0, personal=True)
    assert ("Cache-Control", "private, max-age=300") in answers.answer(make_call(), entry, "HIT", T0, "m").headers
    shared = stored(headers=[], heuristic=True, lifetime=300.0)
    assert answers.gateway_ttl_header(shared) == h("Cache-Control: max-age=300")


def test_a_matching_conditional_gets_a_304_with_only_its_headers_unless_told_not_to() -> None:
    entry = stored(headers=h('ETag: "v1"', "Content-Type: text/plain", "Cache-Control: max-age=60"))
    call = make_call(headers=h('If-None-Match: "v1"'))
    answer = answers.answer(call, entry, "HIT", T0, "m")
    assert (answer.status, answer.body) == (304, b"")
    assert answer.headers == h('ETag: "v1"', "Cache-Control: max-age=60", "Age: 0")
    assert answers.answer(call, entry, "STALE", T0, "m", conditional=False).status == 200
    assert answers.answer(call, stored(status=404, headers=h('ETag: "v1"')), "HIT", T0, "m").status == 404


def test_head_gets_the_headers_without_the_body() -> None:
    answer = answers.answer(make_call(method="HEAD"), stored(), "HIT", T0, "m")
    assert (answer.status, answer.body) == (200, b"")
    ranged = make_call(method="HEAD", headers=h("Range: bytes=0-1"))
    assert answers.answer(ranged, stored(), "HIT", T0, "m").status == 200


@pytest.mark.parametrize("range_header, status, body, content_range", [
    ("bytes=2-4", 206, b"234", "bytes 2-4/10"),
    ("bytes=10-", 416, b"", "bytes */10"),
    ("bytes=0-1, 3-4", 200, b"0123456789", None),
])
def test_one_range_is_cut_from_a_whole_entry(range_header: str, status: int, body: bytes,
                                             content_range: str | None) -> None:
    entry = stored(headers=h("Content-Length: 10", "Cache-Control: max-age=60"))
    answer = answers.answer(make_call(headers=[("Range", range_header)]), entry, "HIT", T0, "m")
    assert (answer.status, answer.body, answer.header("Content-Range")) == (status, body, content_range)
    assert (answer.header("Content-Length") is None) is (status != 200)


def test_a_partial_entry_answers_the_bytes_of_its_cut() -> None:
    entry = stored(status=206, body=b"456789", headers=h("Content-Range: bytes 4-9/10", "Content-Length: 6",
                                                         "Age: 3", "X-A: 1"))
    answer = answers.from_partial(entry, Cut(6, 8, 10, 2), T0 + 1, "Redis")
    assert (answer.status, answer.body, answer.cache, answer.cache_source) == (206, b"678", "HIT", "Redis")
    assert answer.headers == h("X-A: 1", "Content-Range: bytes 6-8/10", "Age: 4")
