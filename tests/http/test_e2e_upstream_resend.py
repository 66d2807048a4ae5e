"""Through gunicorn: a write the service read and then dropped is never delivered twice; a read is resent once."""

from __future__ import annotations

import http.client
import json
from pathlib import Path

from tests.http.test_upstream import answers_first_then_drops, scripted_server
from tests.support.processes import start_gateway


def send(port: int, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body or None, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_the_origin_closing_after_reading_a_write_gets_502_and_one_delivery(tmp_path: Path) -> None:
    state: dict[str, int] = {}
    with scripted_server(answers_first_then_drops(state)) as (port, seen):
        env = {"TRACKING_SERVICE_URL": f"http://127.0.0.1:{port}", "HEALTH_CHECK_INTERVAL": "0"}
        with start_gateway(env, 1, log_dir=tmp_path) as gw:
            for method, body in (("PUT", b'{"n": 1}'), ("POST", b'{"n": 2}')):
                assert send(gw.port, "GET", "/tracking/warm")[0] == 200  # leaves one pooled connection
                status, answer = send(gw.port, method, "/tracking/thing", body)
                assert status == 502 and json.loads(answer)["error"]["code"] == "bad_gateway"
                writes = [r for r in seen if r.startswith(method.encode())]
                assert len(writes) == 1 and writes[0].endswith(body)  # read whole by the origin, never resent
            assert send(gw.port, "GET", "/tracking/warm")[0] == 200
            status, answer = send(gw.port, "GET", "/tracking/read")
            assert (status, answer) == (200, b"ok")  # resent once, on a new connection
            assert [r.split(b"\r\n", 1)[0] for r in seen].count(b"GET /read HTTP/1.1") == 2
