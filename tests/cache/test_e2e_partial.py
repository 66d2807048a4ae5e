"""A stored partial answer completed through real gunicorn workers on Redis: only the missing bytes go upstream."""

from __future__ import annotations

import http.client
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.local_http import LocalService, QuietHandler
from tests.support.processes import GatewayProcess, start_gateway

pytestmark = pytest.mark.e2e
BODY = b"0123456789"


class Representation(LocalService):
    """One 10-byte representation that honours ``Range`` and ``If-Range``, and records what it was asked.

    ``ignores_if_range`` makes it answer a range whatever ``If-Range`` says (a broken service).
    """

    def __init__(self) -> None:
        self.etag, self.body, self.ignores_if_range = '"v1"', BODY, False
        self.asked: list[tuple[str | None, str | None]] = []  # (Range, If-Range) of each request
        service = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                wanted, if_range = self.headers.get("Range"), self.headers.get("If-Range")
                service.asked.append((wanted, if_range))
                match = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted or "")
                if match and (if_range in (None, service.etag) or service.ignores_if_range):
                    first = int(match.group(1))
                    last = int(match.group(2)) if match.group(2) else len(service.body) - 1
                    self.answer(206, service.body[first:last + 1],
                                ("Content-Range", f"bytes {first}-{last}/{len(service.body)}"))
                else:
                    self.answer(200, service.body)

            def answer(self, status: int, body: bytes, *headers: tuple[str, str]) -> None:
                self.send_response(status)
                for name, value in (("ETag", service.etag), ("Cache-Control", "max-age=60"), *headers,
                                    ("Content-Length", str(len(body)))):
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

        super().__init__(Handler)


@pytest.fixture
def service() -> Iterator[Representation]:
    server = Representation()
    yield server
    server.close()


@pytest.fixture
def gateway(service: Representation, redis_server: Any, tmp_path: Path) -> Iterator[GatewayProcess]:
    """Two workers on one Redis, with the service at ``/files``."""
    config = tmp_path / "gateway.json"
    config.write_text(json.dumps({"services": {"files": {"prefix": "/files", "url": service.url, "cache": True}}}))
    env = {"REDIS_URL": redis_server.url, "HEALTH_CHECK_INTERVAL": "0", "GATEWAY_CONFIG": str(config)}
    with start_gateway(env, 2, log_dir=tmp_path / "gw") as gw:
        yield gw


def get(gw: GatewayProcess, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        conn.request("GET", "/files/video", headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def store_first_half(gw: GatewayProcess) -> None:
    status, headers, body = get(gw, {"Range": "bytes=0-4"})
    assert (status, headers["content-range"], body) == (206, "bytes 0-4/10", b"01234")


def access_line(gw: GatewayProcess, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while True:
        lines = [e for e in gw.json_logs() if e.get("message") == "request" and e.get("request_id") == request_id]
        if lines or time.monotonic() > deadline:
            assert len(lines) == 1
            return lines[0]
        time.sleep(0.05)


def test_a_whole_get_fetches_only_the_missing_bytes(gateway: GatewayProcess, service: Representation) -> None:
    store_first_half(gateway)
    status, headers, body = get(gateway)
    assert service.asked[-1] == ("bytes=5-", '"v1"')
    assert (status, body, headers["x-cache"]) == (200, BODY, "MISS") and "content-range" not in headers
    line = access_line(gateway, headers["x-request-id"])
    assert (line["cache"], line["status"], line["attempts"]) == ("MISS", 200, 1)
    # The whole is stored: the next GET, and a range of it, are answered without the service.
    assert get(gateway)[2] == BODY and get(gateway, {"Range": "bytes=7-"})[2] == b"789"
    assert len(service.asked) == 2


def test_a_changed_representation_is_answered_whole_by_the_service(gateway: GatewayProcess,
                                                                   service: Representation) -> None:
    store_first_half(gateway)
    service.etag, service.body = '"v2"', b"abcdefghijkl"
    status, headers, body = get(gateway)
    assert service.asked[-1] == ("bytes=5-", '"v1"')  # If-Range no longer matches: the service sends all
    assert (status, body, headers["etag"]) == (200, b"abcdefghijkl", '"v2"')
    assert get(gateway)[2] == b"abcdefghijkl" and len(service.asked) == 2


def test_a_part_of_another_representation_is_never_combined(gateway: GatewayProcess,
                                                            service: Representation) -> None:
    store_first_half(gateway)
    service.etag, service.body, service.ignores_if_range = '"v2"', b"abcdefghij", True
    status, _, body = get(gateway)
    assert service.asked[-1] == ("bytes=5-", '"v1"')
    assert status == 502 and json.loads(body)["error"]["code"] == "bad_gateway"
    service.ignores_if_range = False
    assert get(gateway)[2] == b"abcdefghij"  # nothing was stored from the mismatched part
