"""The sample services, exercised through real sockets as the gateway's tests will use them."""

from __future__ import annotations

import gzip
import http.client
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from samples import SERVICES
from samples.common import Faults
from samples.runner import parse_ports
from tests.support.processes import ManagedProcess, SampleServices, base_env, free_port, http_status

pytestmark = pytest.mark.timeout(30)


def connect(url: str, timeout: float = 5.0) -> http.client.HTTPConnection:
    """Open a plain http.client connection, which sends the request target untouched."""
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)


@pytest.mark.parametrize("name", list(SERVICES))
def test_health(clean_samples: SampleServices, name: str) -> None:
    response = requests.get(clean_samples.urls[name] + "/health", timeout=5)
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "service": name}


def test_order_sends_etag_and_answers_304(clean_samples: SampleServices) -> None:
    url = clean_samples.urls["order-service"]
    first = requests.get(url + "/123", timeout=5)
    assert first.status_code == 200
    assert first.json()["id"] == 123
    assert "Cache-Control" not in first.headers
    etag = first.headers["ETag"]
    again = requests.get(url + "/123", headers={"If-None-Match": etag}, timeout=5)
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["ETag"] == etag
    assert requests.get(url + "/1", timeout=5).json()["id"] == 1
    assert requests.get(url + "/424242", timeout=5).status_code == 404


def test_order_lifecycle(clean_samples: SampleServices) -> None:
    url = clean_samples.urls["order-service"]
    new: dict[str, Any] = {
        "customer_id": 2, "restaurant_id": 3, "delivery_address": "5 Avenue Jean Jaurès, 75019 Paris",
        "items": [{"menu_item_id": 301, "name": "Salmon Poke Bowl", "quantity": 2, "unit_price_cents": 1490}],
    }
    created = requests.post(url + "/", json=new, timeout=5)
    assert created.status_code == 201
    order = created.json()
    assert order["status"] == "placed" and order["total_cents"] == 2 * 1490 + order["delivery_fee_cents"]
    location = created.headers["Location"]
    assert location == f"/{order['id']}"
    stale = created.headers["ETag"]
    changed = requests.patch(url + location, json={"delivery_address": "8 Rue de Crimée"}, timeout=5)
    assert changed.status_code == 200 and changed.headers["ETag"] != stale
    refused = requests.patch(url + location, json={"status": "preparing"}, headers={"If-Match": stale}, timeout=5)
    assert refused.status_code == 412
    cancelled = requests.delete(url + location, timeout=5)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert requests.post(url + "/", json={"items": []}, timeout=5).status_code == 400


def test_restaurants_allow_shared_caching(clean_samples: SampleServices) -> None:
    url = clean_samples.urls["restaurant-service"]
    listing = requests.get(url + "/", timeout=5)
    menu = requests.get(url + "/1/menu", timeout=5)
    for response in (listing, menu):
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == "public, max-age=60"
    assert listing.json()["count"] >= 3
    assert any(item["name"] == "Margherita" for item in menu.json()["items"])


def test_login_issues_a_bearer_token(clean_samples: SampleServices) -> None:
    url = clean_samples.urls["auth-service"]
    anonymous = requests.get(url + "/me", timeout=5)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = requests.post(url + "/login", json={"email": "alice@example.com", "password": "nope"}, timeout=5)
    assert wrong.status_code == 401
    login = requests.post(url + "/login", json={"email": "alice@example.com", "password": "alice-pass"}, timeout=5)
    assert login.status_code == 200
    token = login.json()["access_token"]
    me = requests.get(url + "/me", headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert me.status_code == 200
    assert me.json()["email"] == "alice@example.com"


def test_delivery_and_tracking_data(clean_samples: SampleServices) -> None:
    delivery, tracking = clean_samples.urls["delivery-service"], clean_samples.urls["tracking-service"]
    assigned = requests.post(delivery + "/", json={"order_id": 42}, timeout=5)
    assert assigned.status_code == 201 and assigned.json()["status"] == "assigned"
    job = assigned.headers["Location"]
    assert requests.patch(delivery + job, json={"status": "picked_up"}, timeout=5).status_code == 200
    assert requests.patch(delivery + job, json={"status": "picked_up"}, timeout=5).status_code == 409
    position = requests.get(tracking + "/couriers/11", timeout=5).json()
    assert {"lat", "lon", "courier_id"} <= set(position)


def test_error_rate_fault_answers_the_configured_status(clean_samples: SampleServices) -> None:
    url = clean_samples.urls["order-service"]
    assert clean_samples.faults("order-service", error_rate=1.0)["error_rate"] == 1.0
    assert requests.get(url + "/123", timeout=5).status_code == 500
    assert requests.get(url + "/health", timeout=5).status_code == 500
    clean_samples.faults("order-service", status=503)  # a partial update keeps error_rate
    assert requests.get(url + "/123", timeout=5).status_code == 503
    assert requests.get(url + "/_control/faults", timeout=5).json()["error_rate"] == 1.0
    clean_samples.reset_faults("order-service")
    assert requests.get(url + "/123", timeout=5).status_code == 200


def test_bad_fault_settings_are_refused(clean_samples: SampleServices) -> None:
    url = clean_samples.urls["order-service"] + "/_control/faults"
    for bad in ({"error_rate": 2}, {"down": "yes"}, {"latency_ms": -1}, {"colour": "red"}):
        assert requests.post(url, json=bad, timeout=5).status_code == 400
    assert requests.get(url, timeout=5).json() == {"error_rate": 0.0, "latency_ms": 0.0, "down": False, "status": 500}


def test_down_fault_closes_the_connection(clean_samples: SampleServices) -> None:
    url = clean_samples.urls["delivery-service"]
    clean_samples.faults("delivery-service", down=True)
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/health", timeout=5)
    assert requests.get(url + "/_control/stats", timeout=5).status_code == 200
    clean_samples.reset_faults("delivery-service")
    assert requests.get(url + "/health", timeout=5).status_code == 200


def test_latency_fault_delays_answers(clean_samples: SampleServices) -> None:
    url = clean_samples.urls["restaurant-service"]
    clean_samples.faults("restaurant-service", latency_ms=300)
    started = time.monotonic()
    assert requests.get(url + "/1", timeout=5).status_code == 200
    assert time.monotonic() - started >= 0.3


def test_stats_count_requests_but_not_control_calls(clean_samples: SampleServices) -> None:
    url = clean_samples.urls["order-service"]
    for _ in range(3):
        requests.get(url + "/123", timeout=5)
    requests.get(url + "/1", timeout=5)
    stats = clean_samples.stats("order-service")
    assert stats["requests"] == 4
    assert stats["by_path"] == {"/123": 3, "/1": 1}
    clean_samples.reset_stats("order-service")
    assert clean_samples.stats("order-service")["requests"] == 0


def test_echo_reports_raw_target_headers_and_body(clean_samples: SampleServices) -> None:
    conn = connect(clean_samples.urls["order-service"])
    target = "/_debug/echo/a%7Eb%2Fc?x=%7c&y=1"
    conn.putrequest("POST", target, skip_accept_encoding=True)
    conn.putheader("X-Dup", "one")
    conn.putheader("X-Dup", "two")
    conn.putheader("X_Under", "kept")
    conn.putheader("Content-Type", "application/octet-stream")
    conn.putheader("Content-Length", "4")
    conn.endheaders(b"\x00\xffab")
    echoed = json.loads(conn.getresponse().read())
    conn.close()
    assert echoed["method"] == "POST"
    assert echoed["raw_target"] == target
    assert echoed["path"] == "/_debug/echo/a~b/c"
    assert echoed["query"] == "x=%7c&y=1"
    assert [h for h in echoed["headers"] if h[0].lower().startswith("x")] == [
        ["X-Dup", "one"], ["X-Dup", "two"], ["X_Under", "kept"]]
    assert echoed["body_len"] == 4 and echoed["body_b64"] == "AP9hYg=="


def test_echo_shapes_its_answer_from_the_query(clean_samples: SampleServices) -> None:
    url = clean_samples.urls["order-service"] + "/_debug/echo"
    params = {"cc": "max-age=5", "etag": '"v1"', "vary": "Accept-Language", "status": "203"}
    shaped = requests.get(url, params=params, timeout=5)
    assert shaped.status_code == 203
    assert (shaped.headers["Cache-Control"], shaped.headers["ETag"], shaped.headers["Vary"]) == (
        "max-age=5", '"v1"', "Accept-Language")
    assert requests.get(url, params=params, headers={"If-None-Match": '"v1"'}, timeout=5).status_code == 304


def test_cookies_gzip_and_redirect(clean_samples: SampleServices) -> None:
    conn = connect(clean_samples.urls["order-service"])
    conn.request("GET", "/_debug/cookies")
    cookies = conn.getresponse()
    cookies.read()
    assert len(cookies.headers.get_all("Set-Cookie") or []) == 3
    conn.request("GET", "/_debug/gzip", headers={"Accept-Encoding": "gzip"})
    zipped = conn.getresponse()
    assert zipped.getheader("Content-Encoding") == "gzip"
    assert json.loads(gzip.decompress(zipped.read()))["message"] == "compressed hello"
    conn.request("GET", "/_debug/gzip")
    plain = conn.getresponse()
    assert plain.getheader("Content-Encoding") is None and json.loads(plain.read())
    conn.request("GET", "/_debug/redirect")
    moved = conn.getresponse()
    moved.read()
    assert (moved.status, moved.getheader("Location")) == (302, "/elsewhere")
    conn.close()


def test_tracking_stream_sends_events_as_they_happen(clean_samples: SampleServices) -> None:
    url = clean_samples.urls["tracking-service"] + "/couriers/11/stream?count=3&gap_ms=150"
    started = time.monotonic()
    with requests.get(url, stream=True, timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        lines = response.iter_lines()
        first_data = next(line for line in lines if line.startswith(b"data:"))
        first_at = time.monotonic() - started
        rest = [line for line in lines if line.startswith(b"data:")]
    assert json.loads(first_data[5:])["courier_id"] == 11
    assert len(rest) == 2
    assert first_at < 0.25  # the first event did not wait for the others


def test_debug_sse_and_slow_body(clean_samples: SampleServices) -> None:
    url = clean_samples.urls["tracking-service"]
    sse = requests.get(url + "/_debug/sse?count=4&gap_ms=10", timeout=5)
    assert sse.text.count("event: tick") == 4
    slow = requests.get(url + "/_debug/slow-body?chunks=3&gap_ms=10", timeout=5)
    assert slow.text == "chunk 0\nchunk 1\nchunk 2\n"
    assert requests.get(url + "/_debug/status/418", timeout=5).status_code == 418
    assert len(requests.get(url + "/_debug/big?bytes=70000", timeout=5).content) == 70000


def test_truncated_body_is_an_incomplete_read(clean_samples: SampleServices) -> None:
    conn = connect(clean_samples.urls["order-service"])
    conn.request("GET", "/_debug/truncated")
    response = conn.getresponse()
    assert response.getheader("Content-Length") == "1000"
    with pytest.raises(http.client.IncompleteRead) as cut:
        response.read()
    assert len(cut.value.partial) == 100
    conn.close()


def test_faults_from_environment() -> None:
    faults = Faults.from_environ({"FAULT_ERROR_RATE": "0.25", "FAULT_LATENCY_MS": "40", "FAULT_DOWN": "true"})
    assert (faults.error_rate, faults.latency_ms, faults.down, faults.status) == (0.25, 40.0, True, 500)
    with pytest.raises(ValueError, match="FAULT_ERROR_RATE"):
        Faults.from_environ({"FAULT_ERROR_RATE": "lots"})


def test_runner_ports() -> None:
    assert parse_ports("order-service", [], {}) == {"order-service": 3002}
    assert parse_ports("order-service", [], {"PORT": "8000"}) == {"order-service": 8000}
    assert parse_ports("all", ["tracking-service=9005"], {"PORT": "5000"})["tracking-service"] == 9005
    with pytest.raises(ValueError):
        parse_ports("all", ["9005"], {})


def test_runner_starts_with_env_faults_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    service = ManagedProcess("delivery", [sys.executable, "-m", "samples", "delivery-service", "--port", str(port)],
                             log_dir=tmp_path, env={**base_env(), "FAULT_DOWN": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        service.start()
        service.wait_until(lambda: http_status(url, "/_control/faults") == 200, 15, "control endpoint")
        assert http_status(url, "/health") is None  # down from the start: no answer at all
        assert service.proc is not None
        service.proc.send_signal(signal.SIGTERM)
        assert service.wait(5) == 0
    finally:
        service.stop()
    assert "stopping" in service.stdout_text()


def test_a_slow_service_does_not_hold_up_the_others(clean_samples: SampleServices) -> None:
    clean_samples.faults("order-service", latency_ms=500)
    slow = connect(clean_samples.urls["order-service"])
    slow.request("GET", "/123")  # now sleeping server-side, in the same process as the other services
    started = time.monotonic()
    assert requests.get(clean_samples.urls["restaurant-service"] + "/1", timeout=5).status_code == 200
    assert time.monotonic() - started < 0.3
    assert slow.getresponse().status == 200
    slow.close()
