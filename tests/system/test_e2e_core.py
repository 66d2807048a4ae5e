"""End to end through real sockets: gunicorn + gevent gateway in front of the sample services."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.chaos import wait_for
from tests.support.processes import REPO_ROOT, GatewayProcess, SampleServices, base_env, start_gateway

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def gateway(samples: SampleServices, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """One gateway with the defaults (embedded cache) and short timeouts, for the whole module."""
    env = {**samples.env(), "CB_TIMEOUT": "0.5", "MAX_BODY_BYTES": "4096", "HEALTH_CHECK_INTERVAL": "0",
           "CB_VOLUME_THRESHOLD": "1000"}
    with start_gateway(env, 1, log_dir=tmp_path_factory.mktemp("gw-core")) as gw:
        yield gw


def raw(gw: GatewayProcess, method: str, target: str, headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None) -> tuple[int, list[tuple[str, str]], bytes]:
    """Send exactly this request line and these headers; return status, headers (in order), body."""
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", f"127.0.0.1:{gw.port}")
        for name, value in headers or []:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        conn.close()


def values(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in headers if k.lower() == name.lower()]


def error_of(body: bytes) -> dict:
    return json.loads(body)["error"]


def test_sample_order_through_the_gateway(gateway: GatewayProcess) -> None:
    status, headers, body = raw(gateway, "GET", "/orders/1")
    assert status == 200
    assert json.loads(body)["id"] == 1
    assert values(headers, "X-Request-ID")
    assert values(headers, "X-Cache")


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_every_method_is_forwarded(gateway: GatewayProcess, clean_samples: SampleServices, method: str) -> None:
    body = b'{"n": 1}' if method in ("POST", "PUT", "PATCH") else None
    headers = [("Content-Type", "application/json")] if body else []
    status, _, answer = raw(gateway, method, "/tracking/_debug/echo", headers, body)
    assert status == 200
    if method != "HEAD":
        echo = json.loads(answer)
        assert echo["method"] == method and echo["raw_target"] == "/_debug/echo"


@pytest.mark.parametrize("method", ["PROPFIND", "TRACE", "CONNECT_X"])
def test_other_methods_are_405_with_allow(gateway: GatewayProcess, method: str) -> None:
    status, headers, body = raw(gateway, method, "/orders/1")
    assert status == 405
    assert error_of(body)["code"] == "method_not_allowed"
    allow = values(headers, "Allow")[0]
    assert {m.strip() for m in allow.split(",")} >= {"GET", "POST", "DELETE", "OPTIONS"}


@pytest.mark.parametrize("target", ["/tracking/_debug/echo/a%7eb|c?x=%7c&y=%zz", "/tracking/_debug/echo/%7E%41?q=a+b",
                                    "/tracking/_debug/echo/a//b?x", "/tracking/_debug/echo/%252e%252e"])
def test_raw_targets_go_out_unchanged(gateway: GatewayProcess, target: str) -> None:
    status, _, body = raw(gateway, "GET", target)
    assert status == 200
    assert json.loads(body)["raw_target"] == target[len("/tracking"):]


def test_headers_both_ways(gateway: GatewayProcess) -> None:
    sent = [("X-Custom", "one"), ("Accept", "application/json"), ("Connection", "X-Hop"), ("X-Hop", "secret"),
            ("X-Forwarded-For", "203.0.113.5"), ("X-Request-ID", "trace-42"), ("Via", "1.0 edge")]
    status, headers, body = raw(gateway, "GET", "/tracking/_debug/echo", sent)
    assert status == 200
    got = {k.lower(): v for k, v in json.loads(body)["headers"]}
    assert got["x-custom"] == "one" and got["accept"] == "application/json"
    assert "x-hop" not in got and "accept-encoding" not in got
    # 127.0.0.1 is trusted by default, so its X-Forwarded-For is kept and the peer appended.
    assert got["x-forwarded-for"] == "203.0.113.5, 127.0.0.1"
    assert got["x-forwarded-proto"] == "http"
    assert got["x-request-id"] == "trace-42"
    assert got["via"] == "1.0 edge, 1.1 gateway"
    assert got["host"].startswith("127.0.0.1:")
    assert values(headers, "X-Request-ID") == ["trace-42"]
    assert values(headers, "Via") == ["1.1 gateway"]


def test_bad_request_id_is_replaced(gateway: GatewayProcess) -> None:
    _, headers, body = raw(gateway, "GET", "/tracking/_debug/echo", [("X-Request-ID", "has space")])
    generated = values(headers, "X-Request-ID")[0]
    assert generated != "has space" and 1 <= len(generated) <= 200
    assert {k.lower(): v for k, v in json.loads(body)["headers"]}["x-request-id"] == generated


def test_several_set_cookie_stay_apart(gateway: GatewayProcess) -> None:
    status, headers, _ = raw(gateway, "GET", "/tracking/_debug/cookies")
    assert status == 200
    assert len(values(headers, "Set-Cookie")) == 3


def test_body_bytes_unchanged(gateway: GatewayProcess) -> None:
    payload = bytes(range(256)) * 8
    status, _, body = raw(gateway, "POST", "/tracking/_debug/echo", [("Content-Type", "application/octet-stream")],
                          payload)
    assert status == 200
    echo = json.loads(body)
    assert echo["body_len"] == len(payload)
    import hashlib
    assert echo["body_sha256"] == hashlib.sha256(payload).hexdigest()


def test_gzip_passes_through_undecoded(gateway: GatewayProcess) -> None:
    status, headers, body = raw(gateway, "GET", "/tracking/_debug/gzip", [("Accept-Encoding", "gzip")])
    assert status == 200
    assert values(headers, "Content-Encoding") == ["gzip"]
    assert json.loads(gzip.decompress(body))
    status, headers, body = raw(gateway, "GET", "/tracking/_debug/gzip")
    assert not values(headers, "Content-Encoding")
    assert json.loads(body)


def test_redirects_are_not_followed(gateway: GatewayProcess) -> None:
    status, headers, _ = raw(gateway, "GET", "/tracking/_debug/redirect")
    assert status == 302
    assert values(headers, "Location") == ["/tracking/elsewhere"]  # passed back, under the service's prefix


def test_event_stream_is_streamed(gateway: GatewayProcess) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=5)
    conn.request("GET", "/tracking/_debug/sse?count=3&gap_ms=300")
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type", "").startswith("text/event-stream")
    started = time.monotonic()
    first = response.readline()
    # The first event arrives before the stream ends: nothing buffers it.
    assert first and time.monotonic() - started < 0.5
    rest = response.read()
    assert rest.count(b"data:") >= 2
    conn.close()


def test_upstream_errors_pass_through(gateway: GatewayProcess) -> None:
    status, _, body = raw(gateway, "GET", "/tracking/_debug/status/500")
    assert status == 500
    status, _, _ = raw(gateway, "GET", "/tracking/_debug/status/404")
    assert status == 404


def test_unreachable_service_is_502(samples: SampleServices, tmp_path: Path) -> None:
    env = {**samples.env(), "ORDER_SERVICE_URL": "http://127.0.0.1:9", "HEALTH_CHECK_INTERVAL": "0"}
    with start_gateway(env, 1, log_dir=tmp_path) as gw:
        status, headers, body = raw(gw, "GET", "/orders/1")
    assert status == 502
    error = error_of(body)
    assert error["code"] == "bad_gateway" and error["service"] == "order-service"
    assert error["request_id"] == values(headers, "X-Request-ID")[0]
    assert not values(headers, "X-Cache")


def test_slow_headers_are_504(gateway: GatewayProcess) -> None:
    status, _, body = raw(gateway, "GET", "/tracking/_debug/slow-headers?ms=2000")
    assert status == 504
    assert error_of(body)["code"] == "gateway_timeout"


def test_truncated_body_aborts_the_client_connection(gateway: GatewayProcess) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=5)
    conn.request("GET", "/tracking/_debug/truncated")
    response = conn.getresponse()
    with pytest.raises(http.client.IncompleteRead):
        response.read()
    conn.close()


@pytest.mark.parametrize(("method", "target", "headers", "body", "status", "code"), [
    ("GET", "/nothing/here", [], None, 404, "not_found"),
    ("GET", "/ordersX", [], None, 404, "not_found"),
    ("GET", "/", [], None, 404, "not_found"),
    ("GET", "/orders/../admin/cache", [], None, 400, "bad_path"),
    ("GET", "/orders/%2e%2e/x", [], None, 400, "bad_path"),
    ("GET", "/orders/a%2Fb", [], None, 400, "bad_path"),
    ("GET", "/orders/a%5cb", [], None, 400, "bad_path"),
    ("POST", "/orders", [("Content-Type", "application/json")], b"{nope", 400, "invalid_json"),
    ("POST", "/orders", [("Content-Type", "application/vnd.x+json")], b"[1,", 400, "invalid_json"),
    ("POST", "/orders", [("Content-Type", "application/json")], b"x" * 5000, 413, "payload_too_large"),
    ("GET", "/tracking/ws", [("Upgrade", "websocket"), ("Connection", "Upgrade")], None, 501, "not_implemented"),
])
def test_bad_input_table(gateway: GatewayProcess, method: str, target: str, headers: list, body: bytes | None,
                         status: int, code: str) -> None:
    got, answer_headers, answer = raw(gateway, method, target, headers, body)
    assert got == status
    assert error_of(answer)["code"] == code
    assert values(answer_headers, "Content-Type")[0].startswith("application/json")


def test_chunked_body_over_the_limit_is_413(gateway: GatewayProcess) -> None:
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=5)
    chunk = b"x" * 1000
    request = (b"POST /orders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
               + b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(6)) + b"0\r\n\r\n")
    sock.sendall(request)
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(65536)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 413")


def raw_bytes(gw: GatewayProcess, request_line: bytes) -> bytes:
    """Send one raw request line (any bytes) and return the status line."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        sock.sendall(request_line + b"\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


@pytest.mark.parametrize("line", [b"GET /tracking/_debug/echo/% HTTP/1.1", b"GET /tracking/_debug/echo/%%% HTTP/1.1",
                                  "GET /tracking/_debug/echo/\u00ff\u00e9 HTTP/1.1".encode(),
                                  b"GET /tracking/_debug/echo?%zz=% HTTP/1.1", b"GET /orders/\xff\xfe HTTP/1.1",
                                  b"GET * HTTP/1.1", b"GET http://evil.example/orders/1 HTTP/1.1"])
def test_worker_survives_bad_input(gateway: GatewayProcess, line: bytes) -> None:
    status_line = raw_bytes(gateway, line)
    assert status_line.startswith(b"HTTP/1.1 ")
    assert int(status_line.split()[1]) < 500
    assert raw(gateway, "GET", "/health")[0] == 200


def test_request_log_is_one_json_line_per_request(gateway: GatewayProcess) -> None:
    raw(gateway, "GET", "/tracking/_debug/echo?token=secret-query", [("Authorization", "Bearer sekrit-token"),
                                                                      ("Cookie", "session=sekrit-cookie"),
                                                                      ("X-Request-ID", "log-check-1")])
    deadline = time.monotonic() + 3
    entry = None
    while time.monotonic() < deadline and entry is None:
        entry = next((e for e in gateway.json_logs() if e.get("request_id") == "log-check-1"), None)
        time.sleep(0.05)
    assert entry is not None
    for field in ("ts", "level", "request_id", "method", "path", "status", "duration_ms", "service", "cache",
                  "breaker", "upstream_ms", "client_ip"):
        assert field in entry, field
    assert entry["service"] == "tracking-service" and entry["status"] == 200
    text = gateway.stdout_text() + gateway.stderr_text()
    assert "sekrit" not in text and "secret-query" not in text


def test_bad_config_stops_startup_with_one_line(tmp_path: Path) -> None:
    env = {**base_env(), "PORT": "3999", "CACHE_TTL": "soon"}
    env.pop("REDIS_URL", None)
    result = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"], cwd=REPO_ROOT,
                            env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["gateway: invalid setting CACHE_TTL: expected a number, got 'soon'"]
    assert "Traceback" not in result.stdout + result.stderr


def test_bad_config_file_stops_startup_naming_the_line(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("services:\n  order-service:\n    health_check: {path: /ping, intervall: 5}\n")
    env = {**base_env(), "PORT": "3999", "GATEWAY_CONFIG": str(config)}
    result = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"], cwd=REPO_ROOT,
                            env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["gateway: invalid setting GATEWAY_CONFIG services.order-service.health_check.intervall: "
                     f"unknown key 'intervall'; did you mean 'interval'? (at {config}:3:33)"]


def test_sigterm_drains_in_flight_requests(samples: SampleServices, tmp_path: Path) -> None:
    env = {**samples.env(), "HEALTH_CHECK_INTERVAL": "0", "CB_TIMEOUT": "3"}
    with start_gateway(env, 1, log_dir=tmp_path) as gw:
        arrived = samples.stats("tracking-service")["by_path"].get("/_debug/slow-headers", 0)
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        conn.request("GET", "/tracking/_debug/slow-headers?ms=800")
        assert wait_for(lambda: samples.stats("tracking-service")["by_path"].get("/_debug/slow-headers", 0)
                        > arrived, 5.0, 0.01)  # in flight: the service has it
        gw.terminate()
        response = conn.getresponse()
        assert response.status == 200
        response.read()
        conn.close()
        assert gw.wait(timeout=15) == 0
    assert os.path.exists(REPO_ROOT / "wsgi.py")


def test_five_hundred_concurrent_slow_calls(samples: SampleServices, tmp_path: Path) -> None:
    """gevent concurrency and pooling: 500 calls in flight at once to a 300 ms service all succeed."""
    import threading

    env = {**samples.env(), "HEALTH_CHECK_INTERVAL": "0", "CB_TIMEOUT": "10"}
    with start_gateway(env, 1, log_dir=tmp_path) as gw:
        statuses: list[int] = []
        lock = threading.Lock()
        start = threading.Barrier(500)

        def call() -> None:
            start.wait()
            try:
                status = raw(gw, "GET", "/tracking/_debug/slow-headers?ms=300")[0]
            except OSError:
                status = 0
            with lock:
                statuses.append(status)

        threads = [threading.Thread(target=call) for _ in range(500)]
        began = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        elapsed = time.monotonic() - began
        assert statuses.count(200) == 500
        assert elapsed < 20  # they ran concurrently, not one after another (500 x 0.3 s = 150 s)
        assert "pool" not in gw.log_text().lower()
