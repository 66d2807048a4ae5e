"""Writing one answer (gateway/http/writer.py): the head, the framing, interim answers and the 500 envelope."""

from __future__ import annotations

import json
import re
import socket
import sys
from collections.abc import Iterator

import pytest

from gateway.http.parsed import Request
from gateway.http.writer import Writer, http_date
from tests.support.raw_socket import read_until_closed


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """The server's end (written by the Writer) and the client's end (read by the test)."""
    server, client = socket.socketpair()
    client.settimeout(2)
    yield server, client
    server.close()
    client.close()


def request(method: str = "GET", version: str = "1.1", keep_alive: bool = True) -> Request:
    parsed = Request()
    parsed.method, parsed.version, parsed.keep_alive, parsed.complete = method, version, keep_alive, True
    return parsed


def received(server: socket.socket, client: socket.socket) -> bytes:
    server.shutdown(socket.SHUT_WR)
    return read_until_closed(client)


def answer(pair: tuple[socket.socket, socket.socket], result: list[bytes] | Iterator[bytes],
           headers: list[tuple[str, str]] | None = None, status: str = "200 OK",
           parsed: Request | None = None) -> tuple[bytes, bool]:
    """What the client reads for the app's ``result``, and whether the connection may be kept."""
    server, client = pair
    writer = Writer(server, parsed or request())
    writer.start_response(status, headers or [])
    kept = writer.send(result)
    return received(server, client), kept


def test_a_whole_body_gets_its_length_a_date_and_is_kept(pair: tuple[socket.socket, socket.socket]) -> None:
    data, kept = answer(pair, [b"hello"], [("Content-Type", "text/plain")])
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n")
    assert b"\r\nContent-Length: 5" in head and re.search(rb"\r\nDate: \w{3}, \d\d \w{3} \d{4} ", head)
    assert body == b"hello" and kept


def test_a_streamed_body_is_chunked_on_http11(pair: tuple[socket.socket, socket.socket]) -> None:
    data, kept = answer(pair, iter([b"ab", b"", b"cde"]))
    assert b"Transfer-Encoding: chunked\r\n" in data
    assert data.endswith(b"\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n") and kept


def test_a_streamed_body_on_http10_ends_with_the_connection(pair: tuple[socket.socket, socket.socket]) -> None:
    data, kept = answer(pair, iter([b"ab", b"cd"]), parsed=request(version="1.0"))
    assert b"Connection: close\r\n" in data and b"chunked" not in data
    assert data.endswith(b"\r\n\r\nabcd") and not kept


def test_http10_kept_alive_says_so(pair: tuple[socket.socket, socket.socket]) -> None:
    data, kept = answer(pair, [b"x"], parsed=request(version="1.0"))
    assert b"Connection: keep-alive\r\n" in data and kept


def test_head_carries_no_body(pair: tuple[socket.socket, socket.socket]) -> None:
    data, kept = answer(pair, [b"ignored"], [("Content-Length", "7")], parsed=request("HEAD"))
    assert re.fullmatch(rb"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nDate: [^\r]+\r\n\r\n", data) and kept


def test_a_304_carries_no_body_nor_framing(pair: tuple[socket.socket, socket.socket]) -> None:
    data, kept = answer(pair, [b"ignored"], status="304 Not Modified")
    assert data.endswith(b"\r\n\r\n") and b"Content-Length" not in data and b"chunked" not in data and kept


def test_the_date_is_an_http_date() -> None:
    assert re.fullmatch(rb"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", http_date())


def test_the_apps_hop_by_hop_headers_are_dropped_and_its_close_is_kept(
        pair: tuple[socket.socket, socket.socket]) -> None:
    data, kept = answer(pair, [b"x"], [("Connection", "close"), ("Transfer-Encoding", "chunked"),
                                       ("Keep-Alive", "timeout=5"), ("Date", "then")])
    head = data.partition(b"\r\n\r\n")[0]
    assert b"chunked" not in head and b"Keep-Alive" not in head
    assert head.count(b"Date:") == 1 and b"Date: then" in head  # the app's own Date stays
    assert head.endswith(b"Connection: close") and not kept


def test_a_body_shorter_than_its_length_ends_the_connection(pair: tuple[socket.socket, socket.socket]) -> None:
    _, kept = answer(pair, iter([b"abc"]), [("Content-Length", "10")])
    assert not kept


def test_a_header_holding_a_line_break_is_refused_before_sending(pair: tuple[socket.socket, socket.socket]) -> None:
    server, _ = pair
    writer = Writer(server, request())
    writer.start_response("200 OK", [("X-Bad", "a\r\nX-Injected: 1")])
    with pytest.raises(ValueError, match="line break"):
        writer.send([b"x"])
    assert not writer.sent_head


def test_interim_answers_go_before_the_final_one_on_http11_only(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    writer = Writer(server, request())
    writer.interim(103, "Early Hints", [("Link", "</a.css>; rel=preload"), ("X-Bad", "a\rb")])
    writer.interim(101, "Switching Protocols", [])  # never an upgrade
    writer.interim(200, "OK", [])  # not interim
    writer.start_response("200 OK", [])
    writer.send([b"ok"])
    writer.interim(102, "Processing", [])  # too late: the final answer is out
    data = received(server, client)
    assert data.startswith(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\n")
    assert data.count(b"HTTP/1.1 ") == 2
    old = Writer(server, request(version="1.0"))
    old.interim(103, "Early Hints", [])
    assert not old.sent_head


def test_exc_info_after_the_head_re_raises(pair: tuple[socket.socket, socket.socket]) -> None:
    server, _ = pair
    writer = Writer(server, request())
    writer.start_response("200 OK", [])
    writer.send([b"x"])
    try:
        raise KeyError("late")
    except KeyError:
        with pytest.raises(KeyError):
            writer.start_response("500 Oops", [], sys.exc_info())


def test_an_app_that_fails_before_answering_gets_the_500_envelope(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    writer = Writer(server, request())
    assert writer.fail({"HTTP_X_REQUEST_ID": "rid-7"}) is False
    data = received(server, client)
    assert data.startswith(b"HTTP/1.1 500 INTERNAL SERVER ERROR\r\n") and b"Connection: close\r\n" in data
    error = json.loads(data.partition(b"\r\n\r\n")[2])["error"]
    assert error["status"] == 500 and error["request_id"] == "rid-7"


def test_a_failure_after_the_head_sends_nothing_more(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    writer = Writer(server, request())
    writer.start_response("200 OK", [("Content-Length", "10")])
    writer.write(b"abc")
    assert writer.fail({}) is False
    assert received(server, client).endswith(b"\r\n\r\nabc")
