"""The gateway's own server answers every kind of request with the same bytes as gunicorn's gevent worker.

Two gateways on the same sample services, one on each server (``GUNICORN_WORKER_CLASS=gevent`` puts
gunicorn's own parser and writer back), get the same requests in the same order on raw sockets. Their
answers must agree: status line, every header but the per-answer ones (Date, Age, the server's own
Server and Connection lines), and the body (framing removed: one may send Content-Length where the
other chunks). Each request carries its own X-Request-ID, so even echoed bodies agree.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import GatewayProcess, SampleServices, start_gateway

ADMIN = "differential-admin-token"
PER_ANSWER = {"date", "age", "server", "connection", "keep-alive", "transfer-encoding", "content-length"}

# (method, target, extra header lines, body): hits and misses, conditionals, HEAD, errors the gateway
# makes itself, streamed and chunked answers, several Set-Cookie, gzip, redirects, an open circuit.
REQUESTS: list[tuple[str, str, list[str], bytes]] = [
    ("GET", "/orders/1", [], b""),
    ("GET", "/orders/1", [], b""),
    ("HEAD", "/orders/1", [], b""),
    ("GET", "/orders/1", ['If-None-Match: "nothing-matches"'], b""),
    ("GET", "/orders/1", ["Cache-Control: no-cache"], b""),
    ("GET", "/orders/1?b=2&a=1", [], b""),
    ("GET", "/tracking/_debug/echo/a%7eb?q=%2F", ["X-Custom: one", "X-Custom: two"], b""),
    ("POST", "/tracking/_debug/echo", ["Content-Type: application/json"], b'{"a": 1}'),
    ("POST", "/tracking/_debug/echo", ["Transfer-Encoding: chunked"], b"3\r\nabc\r\n0\r\n\r\n"),
    ("PATCH", "/orders/1", ["Content-Type: application/json"], b'{"status": "delivered"}'),
    ("GET", "/orders/1", [], b""),
    ("GET", "/tracking/_debug/cookies", [], b""),
    ("GET", "/tracking/_debug/gzip", ["Accept-Encoding: gzip"], b""),
    ("GET", "/tracking/_debug/redirect?to=/elsewhere", [], b""),
    ("GET", "/tracking/_debug/sse?count=3&gap_ms=0", [], b""),
    ("GET", "/tracking/_debug/status/404", [], b""),
    ("GET", "/tracking/_debug/status/204", [], b""),
    ("GET", "/nowhere", [], b""),
    ("TRACE", "/orders/1", [], b""),
    ("GET", "/orders/%2e%2e/secret", [], b""),
    ("POST", "/orders", ["Content-Type: application/json"], b"{nope"),
    ("GET", "/orders/1", ["Upgrade: websocket", "Connection: Upgrade"], b""),
    ("GET", "/health", [], b""),
    ("GET", "/stats/circuit-breakers", [f"Authorization: Bearer {ADMIN}"], b""),
    ("POST", "/admin/circuit-breakers/delivery-service/open", [f"Authorization: Bearer {ADMIN}"], b""),
    ("GET", "/delivery/7", [], b""),
    ("POST", "/admin/circuit-breakers/delivery-service/reset", [f"Authorization: Bearer {ADMIN}"], b""),
]


@pytest.fixture(scope="module")
def gateways(samples: SampleServices, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[GatewayProcess]]:
    env = {**samples.env(), "HEALTH_CHECK_INTERVAL": "0", "ADMIN_TOKEN": ADMIN, "OPS_TOKEN": ADMIN}
    log_dir = tmp_path_factory.mktemp("gw-differential")
    with start_gateway({**env, "GUNICORN_WORKER_CLASS": "gevent"}, 1, log_dir=Path(log_dir) / "gunicorn") as theirs:
        with start_gateway(env, 1, log_dir=Path(log_dir) / "ours") as ours:
            yield [theirs, ours]


def send(port: int, method: str, target: str, headers: list[str], body: bytes, request_id: str) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: gw.test", f"X-Request-ID: {request_id}", *headers]
    if body and not any(h.lower().startswith("transfer-encoding") for h in headers):
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall("\r\n".join(lines).encode() + b"\r\n\r\n" + body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def normalised(raw: bytes, method: str) -> tuple[str, list[tuple[str, str]], bytes]:
    """Status line, headers (sorted, per-answer ones left out) and the de-framed body."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = []
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.lower() == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
        if name.lower() not in PER_ANSWER:
            headers.append((name.lower(), value.strip()))
    body = rest
    if chunked and method != "HEAD":
        body = b""
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            body, rest = body + rest[:size], rest[size + 2:]
    if body.startswith(b'{"error": {'):  # the gateway's envelope carries the request id it generated
        error = json.loads(body)
        body = json.dumps({**error, "error": {**error["error"], "request_id": "-"}}).encode()
    return lines[0], sorted(headers), re.sub(rb'"(ts|uptime_s)": ?[0-9.]+', rb'"\1":-', body)  # clocks


@pytest.mark.e2e
def test_both_servers_send_the_same_answers(gateways: list[GatewayProcess]) -> None:
    theirs, ours = gateways
    for index, (method, target, headers, body) in enumerate(REQUESTS):
        request_id = f"differential-{index}"
        expected = normalised(send(theirs.port, method, target, headers, body, request_id), method)
        got = normalised(send(ours.port, method, target, headers, body, request_id), method)
        if target.startswith(("/stats/", "/admin/")):  # live measurements: compare all but the figures
            got, expected = got[:2], expected[:2]
        assert got == expected, (method, target)
        if got[0].startswith("HTTP/1.1 5"):  # only the gateway's own refusals: 501 upgrade, 503 open circuit
            assert got[0].split()[1] in ("501", "503"), (method, target, got)
