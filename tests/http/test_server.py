"""The gateway's HTTP/1.1 connections (gateway/http/server.py), on a socket pair with small WSGI apps.

Each test writes raw bytes on one end and reads what the server answers on the other, so framing,
keep-alive and pipelining are checked as a client sees them, without gunicorn or the network.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.http.server import Connection, Limits
from tests.support.raw_socket import read_until_closed

App = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Recorder:
    """A WSGI app that answers 200 with what it received, and remembers every request."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        body = environ["wsgi.input"].read()
        self.seen.append({"method": environ["REQUEST_METHOD"], "target": environ["RAW_URI"],
                          "path": environ["PATH_INFO"], "query": environ["QUERY_STRING"], "body": body,
                          "headers": {k: v for k, v in environ.items() if k.startswith("HTTP_")},
                          "content_length": environ.get("CONTENT_LENGTH")})
        payload = json.dumps({"n": len(self.seen), "body": body.decode("latin-1")}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
        return [payload]


@contextmanager
def served(app: App, limits: Limits | None = None) -> Iterator[socket.socket]:
    """A connected client socket whose other end a Connection serves in a thread."""
    client, server = socket.socketpair()
    client.settimeout(5)
    connection = Connection(server, ("127.0.0.1", 5000), app, {"SCRIPT_NAME": "", "wsgi.url_scheme": "http"},
                            limits or Limits(keepalive=2.0, read_timeout=2.0))
    thread = threading.Thread(target=connection.serve, daemon=True)
    thread.start()
    try:
        yield client
    finally:
        client.close()
        thread.join(5)
        assert not thread.is_alive()


def exchange(app: App, data: bytes, limits: Limits | None = None) -> bytes:
    """Send ``data``, half-close, and read everything until the server closes."""
    with served(app, limits) as client:
        client.sendall(data)
        client.shutdown(socket.SHUT_WR)
        return read_until_closed(client)


def responses(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Split a raw answer into (status, headers, body) per response (Content-Length or chunked bodies)."""
    found = []
    while raw:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            size = int(headers["content-length"])
            body, raw = rest[:size], rest[size:]
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line, 16)
                body, rest = body + rest[:size], rest[size + 2:]
                if size == 0:
                    break
            raw = rest
        else:
            body, raw = rest, b""
        found.append((status, headers, body))
    return found


def error_code(body: bytes) -> str:
    return str(json.loads(body)["error"]["code"])


GET = b"GET /a?x=1 HTTP/1.1\r\nHost: gw.test\r\n\r\n"


def test_keep_alive_and_pipelined_requests_are_answered_in_order() -> None:
    app = Recorder()
    raw = exchange(app, GET + b"POST /b HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 3\r\n\r\nabc" + GET)
    answers = responses(raw)
    assert [status for status, _, _ in answers] == [200, 200, 200]
    assert [json.loads(body)["n"] for _, _, body in answers] == [1, 2, 3]
    assert [seen["method"] for seen in app.seen] == ["GET", "POST", "GET"]
    assert app.seen[1]["body"] == b"abc" and app.seen[0]["query"] == "x=1"
    assert all("date" in headers for _, headers, _ in answers)


def test_environ_keeps_the_raw_target_and_joins_repeated_headers() -> None:
    app = Recorder()
    exchange(app, b"GET /caf%C3%A9/%7e?q=%2F HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nX-A: 2\r\nX_B: under\r\n\r\n")
    seen = app.seen[0]
    assert seen["target"] == "/caf%C3%A9/%7e?q=%2F" and seen["query"] == "q=%2F"
    assert seen["path"] == "/caf\xc3\xa9/~"  # decoded, as latin-1, like gunicorn's PATH_INFO
    assert seen["headers"]["HTTP_X_A"] == "1,2"
    assert "HTTP_X_B" not in seen["headers"]  # X_B must never stand in for X-B


def test_chunked_request_body_is_decoded() -> None:
    app = Recorder()
    raw = exchange(app, b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n" + GET)
    assert [status for status, _, _ in responses(raw)] == [200, 200]
    assert app.seen[0]["body"] == b"hello world"


def test_expect_100_continue_is_answered_before_the_body_is_read() -> None:
    app = Recorder()
    with served(app) as client:
        client.sendall(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        assert client.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"
        client.sendall(b"body")
        client.shutdown(socket.SHUT_WR)
        answers = responses(read_until_closed(client))
    assert answers[0][0] == 200 and app.seen[0]["body"] == b"body"


@pytest.mark.parametrize(("framing", "status", "code"), [
    (b"Transfer-Encoding: chunked\r\n\r\n0x2\r\nab\r\n0\r\n\r\n", 400, "bad_request"),
    (b"Transfer-Encoding: chunked\r\n\r\n-2\r\nab\r\n0\r\n\r\n", 400, "bad_request"),
    (b"Transfer-Encoding: chunked\r\n\r\n+2\r\nab\r\n0\r\n\r\n", 400, "bad_request"),
    (b"Transfer-Encoding: chunked\r\n\r\n 2\r\nab\r\n0\r\n\r\n", 400, "bad_request"),
    (b"Transfer-Encoding: chunked\r\n\r\n2 \r\nab\r\n0\r\n\r\n", 400, "bad_request"),
    (b"Transfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n", 400, "bad_request"),
    (b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n", 400, "bad_request"),
    (b"Transfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n2\r\nab\r\n0\r\n\r\n", 400, "bad_request"),
    (b"Content-Length: 2\r\nContent-Length: 3\r\n\r\nabc", 400, "bad_request"),
    (b"Content-Length: +2\r\n\r\nab", 400, "bad_request"),
    (b"Content-Length: 2 2\r\n\r\nab", 400, "bad_request"),
    (b"Content-Length: -1\r\n\r\n", 400, "bad_request"),
    (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "bad_request"),
    (b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400, "bad_request"),  # chunked not last
    (b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 501, "not_implemented"),
    (b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501, "not_implemented"),
    (b"Transfer-Encoding: identity\r\n\r\n", 501, "not_implemented"),
    (b"X-A: a\r\n folded\r\n\r\n", 400, "bad_request"),
    (b"X-A: a\rX-B: b\r\n\r\n", 400, "bad_request"),
    (b"X-A : a\r\n\r\n", 400, "bad_request"),
])
def test_framing_is_strict_and_every_refusal_is_json(framing: bytes, status: int, code: str) -> None:
    app = Recorder()
    raw = exchange(app, b"POST /a HTTP/1.1\r\nHost: h\r\n" + framing + GET)
    answers = responses(raw)
    assert [answer[0] for answer in answers] == [status], raw[:300]
    _, headers, body = answers[0]
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    assert error_code(body) == code
    assert app.seen == []  # neither the refused request nor the one behind it reached the app


@pytest.mark.parametrize(("request_bytes", "status", "code"), [
    (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: h\r\n\r\n", 414, "uri_too_long"),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431, "headers_too_large"),
    (b"GET / HTTP/1.1\r\nHost: h\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(120)) + b"\r\n",
     431, "headers_too_large"),
    (b"BREW /pot HTTP/1.1\r\nHost: h\r\n\r\n", 405, "method_not_allowed"),
    (b"G\x00T / HTTP/1.1\r\nHost: h\r\n\r\n", 400, "bad_request"),
    (b"GET / HTTP/9.9\r\nHost: h\r\n\r\n", 400, "bad_request"),
    (b"GET / HTTP/1.1\nHost: h\n\n", 400, "bad_request"),
    (b"GET /a\x00b HTTP/1.1\r\nHost: h\r\n\r\n", 400, "bad_request"),
])
def test_limits_and_malformed_heads_are_refused_in_json(request_bytes: bytes, status: int, code: str) -> None:
    app = Recorder()
    answers = responses(exchange(app, request_bytes, Limits(4094, 100, 8190, keepalive=2.0, read_timeout=2.0)))
    assert len(answers) == 1 and answers[0][0] == status
    assert error_code(answers[0][2]) == code
    assert app.seen == []


def test_a_refusal_behind_good_requests_waits_its_turn() -> None:
    app = Recorder()
    raw = exchange(app, GET + GET + b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: x\r\n\r\n")
    assert [status for status, _, _ in responses(raw)] == [200, 200, 400]
    assert len(app.seen) == 2


def test_a_bad_chunk_inside_a_body_the_app_reads_is_a_400_not_a_500() -> None:
    def reader(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        from gateway.errors import GatewayError, error_answer

        try:
            body = environ["wsgi.input"].read()
        except GatewayError as error:  # what the gateway's request flow does with it
            status, headers, payload = error_answer(error, "id")
            start_response(f"{status} ERROR", headers)
            return [payload]
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    with served(reader) as client:
        client.sendall(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n")
        client.sendall(b"0x2\r\nab\r\n0\r\n\r\n")
        answers = responses(read_until_closed(client))
    assert [status for status, _, _ in answers] == [400]
    assert error_code(answers[0][2]) == "bad_request"


def test_streamed_answers_are_chunked_and_head_has_no_body() -> None:
    def stream(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        return iter([b"data: 1\n\n", b"", b"data: 2\n\n"])

    answers = responses(exchange(stream, GET + b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n"))
    assert answers[0][1]["transfer-encoding"] == "chunked" and answers[0][2] == b"data: 1\n\ndata: 2\n\n"
    assert len(answers) == 2 and answers[1][2] == b"" and answers[1][0] == 200


def test_a_body_cut_short_by_the_app_closes_the_connection() -> None:
    def short(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Length", "10")])
        return iter([b"12345"])

    raw = exchange(short, GET + GET)
    assert raw.count(b"HTTP/1.1 200") == 1 and raw.endswith(b"12345")  # the client sees the connection end


def test_an_app_that_raises_gets_the_json_500_and_the_connection_closes() -> None:
    def broken(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        raise RuntimeError("bug")

    answers = responses(exchange(broken, GET + GET))
    assert len(answers) == 1 and answers[0][0] == 500 and error_code(answers[0][2]) == "internal_error"


def test_http_1_0_closes_unless_asked_to_keep_alive() -> None:
    app = Recorder()
    one = exchange(app, b"GET / HTTP/1.0\r\n\r\n" + GET)
    assert one.count(b"HTTP/1.1 200") == 1 and b"Connection: close" in one
    kept = exchange(app, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" + GET)
    assert kept.count(b"HTTP/1.1 200") == 2 and b"Connection: keep-alive" in kept


def test_an_idle_connection_is_closed_after_the_keepalive_timeout() -> None:
    with served(Recorder(), Limits(keepalive=0.2, read_timeout=0.2)) as client:
        client.sendall(GET)
        assert responses(client.recv(65536))[0][0] == 200
        assert client.recv(65536) == b""  # closed by the server, not by the test


def test_an_unread_body_is_skipped_so_the_next_request_starts_where_it_should() -> None:
    def ignores_body(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    raw = exchange(ignores_body, b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nGET /" + GET)
    assert raw.count(b"HTTP/1.1 200") == 2


# -- generated framing variants: never a 500, never a request the client did not send as one ------

SIZES = st.one_of(st.integers(0, 40).map(lambda n: b"%x" % n),
                  st.sampled_from([b"0x2", b"-1", b"+2", b" 2", b"2 ", b"", b"g", b"1_0", b"00000000000000000001"]))
CHUNK_LINES = st.lists(st.tuples(SIZES, st.binary(max_size=8)), max_size=3)
LENGTHS = st.lists(st.sampled_from([b"0", b"3", b"+3", b"3 3", b"-3", b"03", b"", b"3, 3"]), max_size=2)
CODINGS = st.lists(st.sampled_from([b"chunked", b"Chunked", b"gzip, chunked", b"chunked, identity", b"xchunked",
                                    b"chunked ", b"\tchunked", b""]), max_size=2)
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"


@settings(max_examples=200, deadline=None)
@given(lengths=LENGTHS, codings=CODINGS, chunks=CHUNK_LINES, fold=st.booleans(), tail=st.binary(max_size=6))
def test_generated_framing_never_fails_the_server(lengths: list[bytes], codings: list[bytes],
                                                  chunks: list[tuple[bytes, bytes]], fold: bool,
                                                  tail: bytes) -> None:
    app = Recorder()
    head = [b"POST /first HTTP/1.1", b"Host: h"]
    head += [b"Content-Length: " + value for value in lengths]
    head += [b"Transfer-Encoding: " + value for value in codings]
    if fold:
        head += [b"X-Folded: a", b" b"]
    body = b"".join(size + b"\r\n" + data + b"\r\n" for size, data in chunks) + b"0\r\n\r\n" + tail
    raw = exchange(app, b"\r\n".join(head) + b"\r\n\r\n" + body + SMUGGLED)
    answers = responses(raw)
    assert answers, raw[:200]
    for status, headers, payload in answers:
        if status >= 400:
            assert headers["content-type"] == "application/json"
        assert status < 500 or (status == 501 and error_code(payload) == "not_implemented"), raw[:300]
    assert len([seen for seen in app.seen if seen["path"] == "/first"]) <= 1  # one request is never seen as two
    one_length = len(lengths) == 1 and lengths[0] in (b"0", b"3", b"03") and not codings
    one_coding = len(codings) == 1 and codings[0].strip().lower() == b"chunked" and not lengths
    if fold or not (one_length or one_coding):
        # Only a request framed one clear way may carry another behind it.
        assert all(seen["path"] != "/smuggled" for seen in app.seen), (raw[:300], app.seen)


def test_a_body_the_gateway_cuts_short_ends_the_connection_without_a_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    from gateway.errors import BadGateway

    def cut(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Length", "10")])
        yield b"12345"
        raise BadGateway("the service stopped mid-body")

    raw = exchange(cut, GET + GET)
    assert raw.count(b"HTTP/1.1 200") == 1 and raw.endswith(b"12345")
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_interim_answers_go_out_before_the_final_one_to_http_1_1_clients() -> None:
    def hinting(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        environ["gateway.interim"](103, "Early Hints", [("Link", "</a.css>; rel=preload"), ("X-Bad", "a\r\nb")])
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    raw = exchange(hinting, GET)
    assert raw.startswith(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\n")
    assert b"X-Bad" not in raw
    old = exchange(hinting, b"GET / HTTP/1.0\r\n\r\n")
    assert old.startswith(b"HTTP/1.1 200 OK") and b" 103 " not in old  # HTTP/1.0 knows no interim answers


def test_a_stopping_worker_answers_a_kept_connection_once_more_and_says_close() -> None:
    state = {"alive": True}
    app = Recorder()
    client, server = socket.socketpair()
    client.settimeout(5)
    connection = Connection(server, ("127.0.0.1", 5000), app, {"SCRIPT_NAME": ""},
                            Limits(keepalive=2.0, read_timeout=2.0), alive=lambda: state["alive"])
    thread = threading.Thread(target=connection.serve, daemon=True)
    thread.start()
    client.sendall(GET)
    first = client.recv(65536)
    assert first.startswith(b"HTTP/1.1 200") and b"Connection: close" not in first
    state["alive"] = False  # SIGTERM arrives while the connection is kept alive
    client.sendall(GET)
    answer = read_until_closed(client)  # still answered (as gunicorn does), then the connection ends
    assert answer.startswith(b"HTTP/1.1 200") and b"Connection: close" in answer
    client.close()
    thread.join(5)
