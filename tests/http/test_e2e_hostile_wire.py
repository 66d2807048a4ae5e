"""Hostile input on the wire: raw requests that try to break, smuggle past or desynchronise one real gunicorn gateway.

Properties: no 500 and no traceback, no crash, no smuggled request reaching a service, bounded memory,
and every refusal the JSON envelope. The generated in-process part is ``test_hostile_input.py``.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import suppress

import pytest
from hypothesis import HealthCheck, given, settings

from tests.support.chaos import fetch, report, rss_kib
from tests.support.hostile import ECHO, MAX_BODY, PATHS, QUERIES, assert_stays_in_service
from tests.support.processes import GatewayProcess, SampleServices, start_gateway
from tests.support.raw_socket import read_until_closed


@pytest.fixture(scope="module")
def gateway(samples: SampleServices, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    env = {**samples.env(), "HEALTH_CHECK_INTERVAL": "0", "MAX_BODY_BYTES": str(MAX_BODY), "CB_TIMEOUT": "2",
           "CB_VOLUME_THRESHOLD": "100000"}
    with start_gateway(env, 1, log_dir=tmp_path_factory.mktemp("gw-hostile")) as gw:
        yield gw


def exchange(gw: GatewayProcess, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, half-close, and return everything the gateway answers until it closes."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=timeout) as sock:
        with suppress(OSError):  # the server may answer and close before all of it is sent
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        return read_until_closed(sock)


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



def refuse_declared_oversize(gateway: GatewayProcess) -> None:
    """A declared oversize body is refused before any of it is read."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(b"POST /tracking/_debug/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 413")


def refuse_chunked_oversize(gateway: GatewayProcess) -> None:
    """A chunked body far over the limit is refused once past the limit, as it streams."""
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


def dribble_while_others_are_served(gateway: GatewayProcess) -> list[float]:
    """A slow sender dribbles its body while others are served at once; their answer times."""
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
    return quick


@pytest.mark.e2e
def test_bodies_malformed_oversize_chunked_and_abandoned(gateway: GatewayProcess, samples: SampleServices,
                                                         request: pytest.FixtureRequest) -> None:
    worker = gateway.worker_pids()[0]
    rss_before = rss_kib(worker)
    refuse_declared_oversize(gateway)
    refuse_chunked_oversize(gateway)
    bad = exchange(gateway, b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                            b"Content-Length: 5\r\nConnection: close\r\n\r\n{nope")
    assert statuses(bad) == [400] and json.loads(body_of(bad))["error"]["code"] == "invalid_json"
    for _ in range(20):  # abandoned halfway: the client goes away with the body unfinished
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
            sock.sendall(b"POST /tracking/_debug/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"z" * 10)
    quick = dribble_while_others_are_served(gateway)
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
