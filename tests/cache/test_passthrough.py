"""The pass-through exchange and the body stream: what every exchange does with an answer it does not store."""

from __future__ import annotations

import pytest

from gateway.cache.passthrough import BodyStream, Exchange, is_event_stream
from gateway.errors import BadGateway
from tests.support.cache import Reply, h, make_call, upstream_of


def test_an_answer_streams_through_less_the_gateways_own_field() -> None:
    log: list[str] = []
    done: list[bool] = []
    reply = Reply(201, h("Gateway-Cache-Control: max-age=9", "CDN-Cache-Control: max-age=5"), [b"a", b"", b"b"])
    response = Exchange(make_call()).on_response(upstream_of(reply, log), done.append)
    assert (response.status, response.cache, response.headers) == (201, "BYPASS", h("CDN-Cache-Control: max-age=5"))
    assert list(response.body) == [b"a", b"b"]  # empty chunks are not sent
    assert log == ["release"] and done == [True]


def test_a_cut_short_body_fails_the_stream_and_is_told_once() -> None:
    log: list[str] = []
    done: list[bool] = []
    body = BodyStream(upstream_of(Reply(chunks=[b"a"], cut=BadGateway()), log), done.append)
    with pytest.raises(BadGateway):
        list(body)
    body.close()
    assert log == ["discard"] and done == [False]


def test_a_client_that_goes_away_frees_the_connection_without_blaming_the_upstream() -> None:
    log: list[str] = []
    done: list[bool] = []
    body = BodyStream(upstream_of(Reply(chunks=[b"a", b"b"]), log), done.append)
    assert next(iter(body)) == b"a"
    body.close()
    body.close()
    assert log == ["discard"] and done == [True]


def test_an_event_stream_is_judged_at_its_headers() -> None:
    done: list[bool] = []
    upstream = upstream_of(Reply(headers=h("Content-Type: text/event-stream; charset=utf-8")), [])
    assert is_event_stream(upstream)
    response = Exchange(make_call(), None).on_response(upstream, done.append)
    assert done == [True] and response.cache is None
    list(response.body)
    assert done == [True]  # not told again when the stream ends
    failing: list[bool] = []
    Exchange(make_call()).on_response(upstream_of(Reply(503, h("Content-Type: text/event-stream")), []),
                                      failing.append)
    assert failing == [False]
    assert not is_event_stream(upstream_of(Reply(headers=h("Content-Type: text/plain")), []))


def test_the_pass_through_has_nothing_to_add_and_no_stand_in_for_errors() -> None:
    exchange = Exchange(make_call())
    assert exchange.response is None and exchange.conditional_headers() == []
    with pytest.raises(BadGateway):
        exchange.on_error(BadGateway())
    exchange.close()
