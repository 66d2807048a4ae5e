"""Hostile input: generated and hand-written requests that try to break, escape or desynchronise the gateway.

Properties: no 500 and no traceback from the application, no crash, no request that leaves its
service (the echo endpoint reports the raw target the upstream received), no smuggled request
reaching a service, and bounded memory. The property-based part runs the WSGI application in
process (many examples, fast); the wire-level part runs against one real gunicorn gateway.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from typing import Any
from urllib.parse import unquote_to_bytes

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import run_wsgi_app

from app import create_app
from gateway.config.settings import load_settings
from gateway.http.inbound import build_call
from tests.support.chaos import fetch, report, rss_kib
from tests.support.processes import GatewayProcess, SampleServices, start_gateway

MAX_BODY = 4096
ECHO = "/tracking/_debug/echo"

# Pieces of paths that have broken proxies: dot segments, encoded separators, bad escapes, NUL,
# unicode, parameters, doubled slashes.
SEGMENTS = st.sampled_from([
    "a", "x.json", "..", ".", "%2e", "%2E%2e", ".%2e", "%2e.", "%2f", "%2F", "%5c", "%5C", "\\", "%00", "%",
    "%zz", "%%", "%2", "é", "%c3%a9", "%ff", "~", "%7e", ";", ";x=..", "", "%252e%252e", "%u002e", "..;",
    "a%20b", "%0d%0aX-Injected:%201", "\u2025", "%e2%80%a5", "\uff0e\uff0e", "*", "@", ":", "%3f", "%23",
])
PATHS = st.builds(lambda prefix, parts: prefix + "/" + "/".join(parts),
                  st.sampled_from([ECHO, "/tracking", "/orders", "/nothing", "/admin", "/stats"]),
                  st.lists(SEGMENTS, max_size=6))
QUERIES = st.one_of(st.just(""), st.text(st.characters(codec="latin-1", exclude_characters="#\r\n "), max_size=30)
                    .map(lambda q: "?" + q.replace("status=", "")))
METHODS = st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND",
                           "CONNECT", "get", "FOO"])
HEADER_NAMES = st.sampled_from([
    "Content-Type", "Transfer-Encoding", "Connection", "Upgrade", "Cookie", "Authorization", "X-Request-ID",
    "X-Forwarded-For", "X-Forwarded-Host", "X-Original-URL", "X-HTTP-Method-Override", "Cache-Control",
    "If-None-Match", "Range", "Expect", "Content-Encoding", "Via", "Host", "X-Custom",
])
HEADER_VALUES = st.one_of(
    st.sampled_from(["application/json", "application/x+json", "text/plain", "chunked", "close, X-Custom",
                     "websocket", "only-if-cached", "no-store, max-age=-1", "*", "bytes=0-0", "100-continue",
                     "gzip", "", " "]),
    st.text(st.characters(codec="latin-1", exclude_characters="\r\n\x00"), max_size=40),
)
BODIES = st.one_of(st.just(b""), st.binary(max_size=64), st.sampled_from([b"{", b'{"a": 1}', b"[1,", b"\xff\xfe",
                                                                         b"x" * (MAX_BODY + 1)]))


def wsgi_environ(method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> dict[str, Any]:
    """The environ gunicorn builds for this request line, headers and body."""
    path, _, query = target.partition("?")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
        "QUERY_STRING": query, "RAW_URI": target, "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "40000",
        "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr, "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0), "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
        "HTTP_HOST": "gw.test",
    }
    if body:
        environ["CONTENT_LENGTH"] = str(len(body))
    for name, value in headers:
        key = name.upper().replace("-", "_")
        if key == "CONTENT_TYPE":
            environ["CONTENT_TYPE"] = value
        elif key not in ("CONTENT_LENGTH", "TRANSFER_ENCODING"):  # framing is gunicorn's, fixed above
            environ["HTTP_" + key] = value
    return environ


class Records(logging.Handler):
    """Keeps the gateway's log records so a test can look for errors and tracebacks."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def app(samples: SampleServices) -> Iterator[tuple[Flask, Records]]:
    """The gateway application in process, pointed at the sample services."""
    application = create_app({**samples.env(), "HEALTH_CHECK_INTERVAL": 0, "MAX_BODY_BYTES": MAX_BODY,
                              "CB_TIMEOUT": 2, "CB_VOLUME_THRESHOLD": 100000, "LOG_LEVEL": "WARNING"})
    records = Records()
    logging.getLogger("gateway").addHandler(records)
    yield application, records
    logging.getLogger("gateway").removeHandler(records)


def assert_stays_in_service(target: str, answer: dict[str, Any]) -> None:
    """The upstream got a target under the service, without dot segments once decoded."""
    assert answer["service"] == "tracking-service"
    raw_path = answer["raw_target"].partition("?")[0]
    assert raw_path.startswith("/_debug/echo"), (target, raw_path)
    segments = unquote_to_bytes(raw_path).split(b"/")
    assert b".." not in segments and b"." not in segments, (target, raw_path)
    assert b"\\" not in unquote_to_bytes(raw_path)


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=METHODS, path=PATHS, query=QUERIES, headers=st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES),
                                                                    max_size=5), body=BODIES)
def test_no_input_makes_a_500_a_traceback_or_an_escape(app: tuple[Flask, Records], method: str, path: str,
                                                       query: str, headers: list[tuple[str, str]],
                                                       body: bytes) -> None:
    application, records = app
    before = len(records.records)
    target = path + query
    iterable, status_line, response_headers = run_wsgi_app(application, wsgi_environ(method, target, headers, body),
                                                           buffered=True)
    data = b"".join(iterable)
    status = int(status_line.split()[0])
    assert b"Traceback" not in data
    problems = [r for r in records.records[before:] if r.exc_info or r.getMessage() == "unhandled error"]
    assert not problems, [r.getMessage() for r in problems]
    if status >= 500:
        # Only the designed upstream failures, always as the JSON envelope.
        assert status in (501, 502, 503, 504), (target, status, data[:300])
        if method.upper() != "HEAD":
            assert json.loads(data)["error"]["code"]
    if status == 200 and method.upper() not in ("HEAD",) and path.startswith(ECHO):
        assert_stays_in_service(target, json.loads(data))
    if status == 200 and not path.startswith(("/tracking", "/orders")):
        assert path.startswith(("/stats",)), (target, status)  # nothing else answers 200


# -- wire level: one real gunicorn gateway -------------------------------------------------------


@pytest.fixture(scope="module")
def gateway(samples: SampleServices, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    env = {**samples.env(), "HEALTH_CHECK_INTERVAL": "0", "MAX_BODY_BYTES": str(MAX_BODY), "CB_TIMEOUT": "2",
           "CB_VOLUME_THRESHOLD": "100000"}
    with start_gateway(env, 1, log_dir=tmp_path_factory.mktemp("gw-hostile")) as gw:
        yield gw


def exchange(gw: GatewayProcess, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, half-close, and return everything the gateway answers until it closes."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=timeout) as sock:
        chunks = []
        with suppress(OSError):  # the server may answer and close before all of it is sent
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
    return b"".join(chunks)


def statuses(answer: bytes) -> list[int]:
    """The status codes of every response in a raw answer."""
    return [int(line.split()[1]) for line in answer.split(b"\r\n") if line.startswith(b"HTTP/1.")]


def body_of(answer: bytes) -> bytes:
    return answer.partition(b"\r\n\r\n")[2]


def head(target: bytes, *headers: bytes, body: bytes = b"") -> bytes:
    lines = [b"GET " + target + b" HTTP/1.1", b"Host: gw.test", *headers, b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def echoed_headers(answer: bytes) -> dict[str, list[str]]:
    received: dict[str, list[str]] = {}
    for name, value in json.loads(body_of(answer))["headers"]:
        received.setdefault(name.lower(), []).append(value)
    return received


@pytest.mark.e2e
@pytest.mark.parametrize("raw", [
    b"X-A: a\rX-Injected: 1",        # bare CR inside a value
    b"X-A: a\nX-Injected: 1",        # bare LF line end
    b"X-A: a\r\n X-Injected: 1",     # obsolete line folding
    b"X-A: a%0d%0aX-Injected: 1",    # encoded CRLF in a value
    b"X-Injected : 1",               # whitespace before the colon
])
def test_crlf_injection_never_adds_a_header_upstream(gateway: GatewayProcess, raw: bytes) -> None:
    answer = exchange(gateway, head(ECHO.encode(), raw))
    status = statuses(answer)[0]
    assert status < 500, answer[:200]
    if status == 200:
        assert "x-injected" not in echoed_headers(answer)


@pytest.mark.e2e
def test_crlf_in_the_target_stays_in_the_target(gateway: GatewayProcess) -> None:
    answer = exchange(gateway, head(ECHO.encode() + b"?x=%0d%0aX-Injected:%201"))
    assert statuses(answer) == [200]
    assert "x-injected" not in echoed_headers(answer)
    assert json.loads(body_of(answer))["raw_target"] == "/_debug/echo?x=%0d%0aX-Injected:%201"


@pytest.mark.e2e
@pytest.mark.parametrize("request_bytes", [
    head(b"/tracking/_debug/echo/" + b"a" * 10_000),                 # overlong target
    head(ECHO.encode(), b"X-Big: " + b"b" * 70_000),                  # huge header
    head(ECHO.encode(), *[b"X-H%d: v" % i for i in range(300)]),       # too many headers
    head(b"/tracking/_debug/echo/a\x00b"),                            # raw NUL
    head(b"/tracking/_debug/echo/a%00b"),                             # encoded NUL
    head("/tracking/_debug/echo/ünï/\u2025".encode()),                 # raw UTF-8
    head(b"/tracking/_debug/echo/\xff\xfe"),                          # not UTF-8
    b"GET /tracking/_debug/echo HTTP/9.9\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"G\x00T / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET\t/tracking/_debug/echo\tHTTP/1.1\r\nHost: x\r\n\r\n",
    b"\r\n\r\n\r\n",
])
def test_malformed_requests_get_short_answers(gateway: GatewayProcess, request_bytes: bytes) -> None:
    answer = exchange(gateway, request_bytes)
    for status in statuses(answer):
        assert status < 500, answer[:300]
    assert b"Traceback" not in answer
    assert fetch(gateway.port, "/health").status == 200


@pytest.mark.e2e
def test_underscore_headers_never_stand_in_for_dashed_ones(gateway: GatewayProcess) -> None:
    answer = exchange(gateway, head(ECHO.encode(), b"X_Request_ID: underscore-id", b"X_Forwarded_Host: evil.example"))
    assert statuses(answer) == [200]
    received = echoed_headers(answer)
    assert received["x-request-id"] != ["underscore-id"]
    assert received["x-forwarded-host"] == ["gw.test"]


@pytest.mark.e2e
@pytest.mark.parametrize("framing", [
    [b"Content-Length: 4", b"Transfer-Encoding: chunked"],
    [b"Transfer-Encoding: chunked", b"Content-Length: 4"],
    [b"Content-Length: 4", b"Content-Length: 60"],
    [b"Content-Length: 4", b"Transfer-Encoding: chunked, identity"],
    [b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"],
    [b"Content-Length: 4", b"Transfer-Encoding: xchunked"],
    [b"Content-Length: +4"],
    [b"Content-Length: 4 4"],
])
def test_ambiguous_framing_smuggles_nothing(gateway: GatewayProcess, samples: SampleServices,
                                            framing: list[bytes]) -> None:
    smuggled = b"GET /tracking/_debug/echo/smuggled HTTP/1.1\r\nHost: gw.test\r\n\r\n"
    request_bytes = (b"POST /tracking/_debug/echo HTTP/1.1\r\nHost: gw.test\r\n" + b"\r\n".join(framing)
                     + b"\r\n\r\n0\r\n\r\n" + smuggled)
    before = samples.stats("tracking-service")["by_path"].get("/_debug/echo/smuggled", 0)
    answer = exchange(gateway, request_bytes)
    assert statuses(answer) and statuses(answer)[0] in (400, 501), answer[:300]  # the server refuses it
    time.sleep(0.1)
    assert samples.stats("tracking-service")["by_path"].get("/_debug/echo/smuggled", 0) == before


@pytest.mark.e2e
def test_upstream_framing_is_the_gateways_own(gateway: GatewayProcess) -> None:
    chunks = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    answer = exchange(gateway, b"POST /tracking/_debug/echo HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked"
                               b"\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n" + chunks)
    assert statuses(answer) == [200]
    echo = json.loads(body_of(answer))
    assert echo["body_len"] == len(b"hello world")
    received = echoed_headers(answer)
    assert "transfer-encoding" not in received and received["content-length"] == ["11"]


@pytest.mark.e2e
def test_bodies_malformed_oversize_chunked_and_abandoned(gateway: GatewayProcess, samples: SampleServices,
                                                         request: pytest.FixtureRequest) -> None:
    worker = gateway.worker_pids()[0]
    rss_before = rss_kib(worker)
    # Declared oversize: refused before any body byte is read.
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(b"POST /tracking/_debug/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 413")
    # Chunked, far over the limit: refused after the limit, memory stays small.
    chunk = b"y" * 65536
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(b"POST /tracking/_debug/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        answer = b""
        try:
            for _ in range(200):  # up to 13 MB, stopping as soon as the gateway answers
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sock.setblocking(False)
                try:
                    answer += sock.recv(4096)
                except BlockingIOError:
                    pass
                sock.setblocking(True)
                if answer:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        sock.settimeout(5)
        if not answer:
            answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
    # Malformed JSON.
    bad = exchange(gateway, b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                            b"Content-Length: 5\r\nConnection: close\r\n\r\n{nope")
    assert statuses(bad) == [400] and json.loads(body_of(bad))["error"]["code"] == "invalid_json"
    # Abandoned halfway: the client goes away with the body unfinished.
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
            sock.sendall(b"POST /tracking/_debug/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"z" * 10)
    # A slow sender dribbles its body while others are served at once.
    slow = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    slow.sendall(b"POST /tracking/_debug/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nConnection: close\r\n\r\n")
    quick: list[float] = []

    def others() -> None:
        for _ in range(10):
            answer = fetch(gateway.port, "/tracking/_debug/status/200")
            assert answer.status == 200
            quick.append(answer.ended - answer.started)

    helper = threading.Thread(target=others)
    helper.start()
    for byte in b"0123456789":
        slow.sendall(bytes([byte]))
        time.sleep(0.05)
    helper.join(10)
    slow_answer = b""
    while chunk_in := slow.recv(65536):
        slow_answer += chunk_in
    slow.close()
    assert statuses(slow_answer) == [200] and json.loads(body_of(slow_answer))["body_len"] == 10
    assert len(quick) == 10 and max(quick) < 0.5, quick
    assert gateway.worker_pids() == [worker], "the worker was replaced"
    growth_mib = (rss_kib(worker) - rss_before) / 1024
    assert growth_mib < 32, growth_mib
    report(request, "hostile-bodies", rss_growth_mib=round(growth_mib, 1), slowest_other_s=round(max(quick), 3))


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=PATHS, query=QUERIES)
@pytest.mark.e2e
def test_generated_targets_on_the_wire(gateway: GatewayProcess, path: str, query: str) -> None:
    target = (path + query).encode("utf-8").replace(b" ", b"%20")
    answer = exchange(gateway, head(target))
    found = statuses(answer)
    assert found, answer[:200]
    assert found[0] < 500 or found[0] in (502, 504), (target, answer[:300])
    assert b"Traceback" not in answer
    if found[0] == 200 and path.startswith(ECHO):
        assert_stays_in_service(target.decode("latin-1"), json.loads(body_of(answer)))


@pytest.mark.e2e
def test_no_traceback_and_no_crash_after_all_that(gateway: GatewayProcess, request: pytest.FixtureRequest) -> None:
    assert fetch(gateway.port, "/health").status == 200
    logs = gateway.stdout_text() + gateway.stderr_text()
    assert "Traceback" not in logs and "unhandled error" not in logs
    lines = [e for e in gateway.json_logs() if e.get("message") == "request"]
    assert not [e for e in lines if e.get("status") == 500], "the application answered 500"
    worker = gateway.worker_pids()
    assert len(worker) == 1
    report(request, "hostile-wire", requests_logged=len(lines), worker_rss_mib=round(rss_kib(worker[0]) / 1024, 1))




@pytest.mark.e2e
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_an_upstream_closing_its_connection_is_answered(gateway: GatewayProcess, method: str) -> None:
    # Found by the generated inputs: a "Connection: close" answer used to turn into a 500.
    for _ in range(3):
        answer = fetch(gateway.port, ECHO + "?hdr=Connection:close&cc=no-store", method,
                       body=b"{}" if method == "POST" else None)
        assert answer.status == 200, answer.body[:200]


@pytest.mark.parametrize(("peer", "kept"), [("127.0.0.1", True), ("203.0.113.9", False)])
def test_forwarding_facts_are_kept_only_from_trusted_peers(peer: str, kept: bool) -> None:
    settings = load_settings(environ={}, overrides={"FORWARDED_ALLOW_IPS": "127.0.0.1"})
    forged = [("Forwarded", "host=evil.example;proto=https"), ("X-Forwarded-Port", "8443"),
              ("X-Forwarded-Scheme", "https"), ("X-Forwarded-Prefix", "/evil"), ("X-Forwarded-Server", "evil"),
              ("X-Forwarded-Ssl", "on"), ("X-Forwarded-Host", "evil.example"), ("X-Forwarded-Proto", "https")]
    environ = wsgi_environ("GET", "/tracking/x", forged, b"")
    environ["REMOTE_ADDR"] = peer
    call = build_call(environ, settings.services["tracking-service"], settings, "rid")
    sent = json.dumps(call.upstream_headers)
    assert ("evil" in sent) is kept
    assert ("8443" in sent) is kept


@pytest.mark.e2e
@pytest.mark.parametrize(("request_bytes", "status", "code"), [
    (b"POST /tracking/_debug/echo HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0x2\r\nab\r\n0\r\n\r\n", 400, "bad_request"),
    (b"POST /tracking/_debug/echo HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
     501, "not_implemented"),
    (b"POST /tracking/_debug/echo HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n", 400, "bad_request"),
    (b"GET /tracking/_debug/echo HTTP/1.1\r\nHost: gw.test\r\nX-A: a\r\n folded\r\n\r\n", 400, "bad_request"),
    (head(b"/tracking/_debug/echo/" + b"a" * 10_000), 414, "uri_too_long"),
    (head(ECHO.encode(), b"X-Big: " + b"b" * 70_000), 431, "headers_too_large"),
    (head(ECHO.encode(), *[b"X-H%d: v" % i for i in range(300)]), 431, "headers_too_large"),
])
def test_what_the_server_refuses_is_the_json_envelope(gateway: GatewayProcess, request_bytes: bytes, status: int,
                                                      code: str) -> None:
    answer = exchange(gateway, request_bytes)
    assert statuses(answer) == [status], answer[:300]
    error = json.loads(body_of(answer))["error"]
    assert error["status"] == status and error["code"] == code and error["request_id"]
    assert b"Content-Type: application/json" in answer


@pytest.mark.e2e
def test_pipelined_requests_are_answered_in_order(gateway: GatewayProcess) -> None:
    one = b"GET /tracking/_debug/echo/1 HTTP/1.1\r\nHost: gw.test\r\n\r\n"
    two = b"GET /tracking/_debug/echo/2 HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n"
    answer = exchange(gateway, one + two)
    assert answer.count(b"HTTP/1.1 200 OK\r\n") == 2, answer  # the second starts right after the first body
    assert answer.index(b"/_debug/echo/1") < answer.index(b"/_debug/echo/2")
