"""The upstream client against a scripted raw-socket server: exactly what goes out, what comes back."""

from __future__ import annotations

import dataclasses
import http.client
import random
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gateway.config.settings import load_settings
from gateway.errors import BadGateway, GatewayTimeout
from gateway.http.upstream import UpstreamClient, still_open
from gateway.messages import ProxyCall

Handler = Callable[[socket.socket, bytes], bool]  # returns whether to keep the connection open


def read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            need = int(line.split(b":")[1])
            while len(rest) < need:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                rest += chunk
    return head + b"\r\n\r\n" + rest


@contextmanager
def scripted_server(handler: Handler) -> Iterator[tuple[int, list[bytes]]]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    seen: list[bytes] = []
    stop = threading.Event()

    def serve_conn(conn: socket.socket) -> None:
        with conn:
            while not stop.is_set():
                try:
                    data = read_request(conn)
                except OSError:
                    return
                if not data:
                    return
                seen.append(data)
                if not handler(conn, data):
                    return

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=serve_conn, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield server.getsockname()[1], seen
    finally:
        stop.set()
        server.close()


def ok(body: bytes = b"ok", extra: bytes = b"") -> Handler:
    def handler(conn: socket.socket, data: bytes) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body))
        return True
    return handler


def client_and_call(port: int, target: str = "/x", method: str = "GET", timeout: float = 2.0,
                    headers: list[tuple[str, str]] | None = None,
                    body: bytes = b"") -> tuple[UpstreamClient, ProxyCall]:
    settings = load_settings({"ORDER_SERVICE_URL": f"http://127.0.0.1:{port}", "CB_TIMEOUT": str(timeout)})
    service = settings.services["order-service"]
    call = ProxyCall(service=service, method=method, target=target, path="/orders" + target, query="",
                     host="gw", headers=[], body=body, request_id="r", client_ip="1.2.3.4",
                     upstream_headers=headers or [])
    return UpstreamClient(settings), call


def test_target_and_headers_go_out_exactly() -> None:
    with scripted_server(ok()) as (port, seen):
        client, call = client_and_call(port, "/a%7eb|c%zz?x=%7c", headers=[("X-A", "1"), ("X-A", "2")])
        response = client.send(call)
        assert response.read_all() == b"ok"
    head = seen[0].split(b"\r\n\r\n")[0].split(b"\r\n")
    assert head[0] == b"GET /a%7eb|c%zz?x=%7c HTTP/1.1"
    names = [line.split(b":")[0].lower() for line in head[1:]]
    assert b"accept-encoding" not in names and b"user-agent" not in names
    assert head.count(b"X-A: 1") == 1 and head.count(b"X-A: 2") == 1
    assert f"Host: 127.0.0.1:{port}".encode() in head


def test_body_bytes_unchanged() -> None:
    payload = bytes(range(256)) * 10
    with scripted_server(ok()) as (port, seen):
        client, call = client_and_call(port, method="POST", body=payload)
        client.send(call).read_all()
    assert seen[0].split(b"\r\n\r\n", 1)[1] == payload


def test_set_cookies_stay_apart_and_hop_by_hop_dropped() -> None:
    extra = b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nKeep-Alive: timeout=5\r\nConnection: X-Hop\r\nX-Hop: 1\r\n"
    with scripted_server(ok(extra=extra)) as (port, _):
        client, call = client_and_call(port)
        response = client.send(call)
    assert [v for k, v in response.headers if k.lower() == "set-cookie"] == ["a=1", "b=2"]
    assert not {k.lower() for k, _ in response.headers} & {"keep-alive", "connection", "x-hop"}


def test_connections_are_reused() -> None:
    accepted = []
    with scripted_server(ok()) as (port, seen):
        client, call = client_and_call(port)
        for _ in range(3):
            response = client.send(call)
            response.read_all()
            response.release()
            accepted.append(len(seen))
    assert client.pools["order-service"]._idle  # kept for the next call


def test_refused_is_bad_gateway() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    client, call = client_and_call(port)
    with pytest.raises(BadGateway):
        client.send(call)


def test_no_headers_in_time_is_gateway_timeout() -> None:
    def silent(conn: socket.socket, data: bytes) -> bool:
        threading.Event().wait(1.0)
        return False

    with scripted_server(silent) as (port, _):
        client, call = client_and_call(port, timeout=0.2)
        with pytest.raises(GatewayTimeout):
            client.send(call)


def test_body_cut_short_raises() -> None:
    def truncated(conn: socket.socket, data: bytes) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
        return False

    with scripted_server(truncated) as (port, _):
        client, call = client_and_call(port)
        response = client.send(call)
        with pytest.raises(BadGateway):
            response.read_all()


def test_idle_body_is_gateway_timeout() -> None:
    def stalls(conn: socket.socket, data: bytes) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nstart")
        threading.Event().wait(1.0)
        return False

    with scripted_server(stalls) as (port, _):
        client, call = client_and_call(port, timeout=0.2)
        response = client.send(call)
        with pytest.raises(GatewayTimeout):
            response.read_all()


def answers_first_then_drops(state: dict[str, int]) -> Handler:
    """Answer the first request of each connection; read any later one in full, then close unanswered.

    That is an origin that may well have acted on the request (it read the whole body) and then
    went away: the client cannot tell whether the request took effect.
    """
    carried: dict[socket.socket, int] = {}  # holds every connection, so none is mistaken for a closed one

    def handler(conn: socket.socket, data: bytes) -> bool:
        carried[conn] = per_conn = carried.get(conn, 0) + 1
        if per_conn > 1:
            state["dropped"] = state.get("dropped", 0) + 1
            return False
        state["answered"] = state.get("answered", 0) + 1
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        return True
    return handler


def pooled(client: UpstreamClient, call: ProxyCall, connections: int = 1) -> None:
    """Leave ``connections`` kept-alive connections in the pool, each having carried one answered call."""
    responses = [client.send(call) for _ in range(connections)]
    for response in responses:
        assert response.read_all() == b"ok"
        response.release()


@pytest.mark.parametrize(("method", "resent"), [
    ("GET", True),
    ("HEAD", True),
    ("OPTIONS", True),
    ("PUT", False),
    ("DELETE", False),
    ("POST", False),
    ("PATCH", False),
])
def test_a_request_the_origin_read_and_dropped_is_resent_only_when_safe(method: str, resent: bool) -> None:
    state: dict[str, int] = {}
    with scripted_server(answers_first_then_drops(state)) as (port, seen):
        client, call = client_and_call(port, method="GET")
        pooled(client, call)
        body = b'{"n": 1}' if method in {"PUT", "POST", "PATCH"} else b""
        write = dataclasses.replace(call, method=method, body=body)
        if resent:
            response = client.send(write)
            response.read_all()
            assert response.status == 200
            assert state["dropped"] == 1 and state["answered"] == 2  # once dropped, once on a new connection
        else:
            with pytest.raises(BadGateway):
                client.send(write)
            assert state["dropped"] == 1 and state["answered"] == 1  # never sent a second time
        assert [r.split(b" ", 1)[0].decode() for r in seen[1:]] == [method] * (2 if resent else 1)
        if write.body:
            assert seen[1].endswith(write.body)  # the origin had the whole body before it closed


def test_the_resend_never_takes_another_pooled_connection() -> None:
    state: dict[str, int] = {}
    with scripted_server(answers_first_then_drops(state)) as (port, _):
        client, call = client_and_call(port)
        pooled(client, call, connections=2)  # both would drop the next request they carry
        response = client.send(call)
        assert response.read_all() == b"ok"
        assert state["dropped"] == 1 and state["answered"] == 3


@pytest.mark.parametrize("method", ["GET", "PUT", "POST"])
def test_a_pooled_connection_the_origin_closed_while_idle_is_not_used(method: str) -> None:
    def closes_after_answering(conn: socket.socket, data: bytes) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        return False  # the keep-alive timeout of the origin ran out: it closes the idle connection

    with scripted_server(closes_after_answering) as (port, seen):
        client, call = client_and_call(port)
        pooled(client, call)
        for _ in range(100):  # wait (bounded) until the close has reached the client's side
            if not still_open(client.pools["order-service"]._idle[0]):
                break
            threading.Event().wait(0.01)
        write = dataclasses.replace(call, method=method, body=b"x" if method != "GET" else b"")
        assert client.send(write).read_all() == b"ok"  # sent once, on a new connection
        assert len(seen) == 2


def test_interim_answers_are_read_past_to_the_final_one() -> None:
    def with_interims(conn: socket.socket, data: bytes) -> bool:
        conn.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
                     b"HTTP/1.1 102 Processing\r\n\r\n"
                     b"HTTP/1.1 100 Continue\r\n\r\n"
                     b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Final: 1\r\n\r\nfinal")
        return True

    with scripted_server(with_interims) as (port, seen):
        client, call = client_and_call(port)
        for _ in range(2):  # the second call on the same connection gets its own answer
            response = client.send(call)
            assert response.status == 200
            assert response.read_all() == b"final"
            assert ("X-Final", "1") in response.headers
            assert not any(k.lower() == "link" for k, _ in response.headers)
            response.release()
        assert len(seen) == 2


def test_interim_answers_go_to_the_calls_interim_sender_and_not_into_the_answer() -> None:
    def with_interims(conn: socket.socket, data: bytes) -> bool:
        conn.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nConnection: x\r\nX: 1\r\n"
                     b"X-Other: \r\n\r\n"
                     b"HTTP/1.1 102 Processing\r\n\r\n"
                     b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal")
        return True

    sent: list[tuple[int, str, list[tuple[str, str]]]] = []
    with scripted_server(with_interims) as (port, _):
        client, call = client_and_call(port)
        call.interim = lambda status, reason, headers: sent.append((status, reason, headers))
        response = client.send(call)
        assert response.status == 200 and response.read_all() == b"final"
        assert not any(k.lower() == "link" for k, _ in response.headers)  # never part of the final answer
    # End-to-end headers only: Connection and what it names go, as for every answer.
    assert sent == [(103, "Early Hints", [("Link", "</a.css>; rel=preload"), ("X-Other", "")]),
                    (102, "Processing", [])]


@pytest.mark.parametrize(("peer", "expected"), [
    ("idle", True),
    ("closed", False),
    ("stray bytes", False),   # an answer nobody asked for: the connection is out of step
])
def test_still_open(peer: str, expected: bool) -> None:
    ours, theirs = socket.socketpair()
    conn = http.client.HTTPConnection("127.0.0.1", 9)
    conn.sock = ours
    try:
        if peer == "closed":
            theirs.close()
        elif peer == "stray bytes":
            theirs.sendall(b"HTTP/1.1 200 OK\r\n")
        assert still_open(conn) is expected
        if peer == "stray bytes":
            assert ours.recv(100) == b"HTTP/1.1 200 OK\r\n"  # peeked at, not consumed
    finally:
        ours.close()
        theirs.close()


# -- several targets and retries ---------------------------------------------------------------------


def unbound_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return int(port)


def status(code: int, body: bytes = b"") -> Handler:
    def handler(conn: socket.socket, data: bytes) -> bool:
        conn.sendall(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (code, len(body), body))
        return True
    return handler


def drops(conn: socket.socket, data: bytes) -> bool:
    return False  # read the whole request, then close without an answer


class Heard:
    """An upstream listener that keeps what it is told."""

    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []

    def on_retry(self, service: str) -> None:
        self.events.append(("retry",))

    def on_retry_refused(self, service: str, reason: str) -> None:
        self.events.append(("refused", reason))

    def on_attempt(self, service: str, target: str, ok: bool) -> None:
        self.events.append(("attempt", int(target.rsplit(":", 1)[1]), ok))


def targets_client(ports: list[int], method: str = "GET", headers: list[tuple[str, str]] | None = None,
                   retries: object = True, timeout: float = 2.0,
                   **extra: object) -> tuple[UpstreamClient, ProxyCall, Heard]:
    raw: dict[str, object] = {"prefix": "/menus", "urls": [f"http://127.0.0.1:{p}" for p in ports],
                              "retries": retries, "timeout": timeout, **extra}
    settings = load_settings({}, {"services": {"menu": raw}})
    call = ProxyCall(service=settings.services["menu"], method=method, target="/x", path="/menus/x", query="",
                     host="gw", headers=headers or [], body=b'{"a": 1}' if method in {"POST", "PUT"} else b"",
                     request_id="r", client_ip="1.2.3.4", upstream_headers=list(headers or []))
    client = UpstreamClient(settings, rng=random.Random(1), sleep=lambda seconds: None)
    heard = Heard()
    client.listeners.append(heard)
    return client, call, heard


def test_a_503_is_retried_on_the_other_target_and_the_call_says_so() -> None:
    with scripted_server(status(503)) as (bad, bad_seen), scripted_server(ok(b"fine")) as (good, good_seen):
        client, call, heard = targets_client([bad, good])
        response = client.send(call)
        assert (response.status, response.read_all()) == (200, b"fine")
        response.release()
    assert (len(bad_seen), len(good_seen)) == (1, 1)
    assert (call.attempts, call.upstream_url) == (2, f"http://127.0.0.1:{good}")
    assert heard.events == [("attempt", bad, False), ("retry",), ("attempt", good, True)]


def test_retries_stop_at_the_configured_attempts_and_the_last_answer_goes_back() -> None:
    with scripted_server(status(503, b"one")) as (one, one_seen), scripted_server(status(502)) as (two, two_seen):
        client, call, heard = targets_client([one, two], retries={"attempts": 3})
        response = client.send(call)
        assert response.status in (502, 503) and call.attempts == 3
        assert not response.spared  # every target failed: the service's failure
    assert len(one_seen) + len(two_seen) == 3
    assert [e for e in heard.events if e[0] == "retry"] == [("retry",), ("retry",)]


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_a_write_without_a_key_is_never_retried(method: str) -> None:
    with scripted_server(status(503)) as (bad, bad_seen), scripted_server(ok()) as (good, good_seen):
        client, call, _ = targets_client([bad, good], method=method)
        assert client.send(call).status == 503
    assert (len(bad_seen), len(good_seen), call.attempts) == (1, 0, 1)


def test_a_write_with_an_idempotency_key_is_retried_only_when_nothing_was_sent() -> None:
    key = [("Idempotency-Key", "order-77")]
    with scripted_server(ok(b"made")) as (good, good_seen):
        client, call, _ = targets_client([unbound_port(), good], method="POST", headers=key)
        response = client.send(call)  # connection refused: nothing reached a service, so it goes to the other
        assert (response.status, response.read_all()) == (200, b"made")
        assert call.attempts == 2 and len(good_seen) == 1 and good_seen[0].endswith(b'{"a": 1}')
    for answer in (status(503), drops):  # the request went out: the service may have acted on it
        with scripted_server(answer) as (bad, bad_seen), scripted_server(ok()) as (good, good_seen):
            client, call, _ = targets_client([bad, good], method="POST", headers=key)
            try:
                assert client.send(call).status == 503
            except BadGateway:
                pass
            assert (len(bad_seen), len(good_seen), call.attempts) == (1, 0, 1)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_an_idempotent_request_the_service_dropped_is_retried(method: str) -> None:
    with scripted_server(drops) as (bad, bad_seen), scripted_server(ok()) as (good, good_seen):
        client, call, _ = targets_client([bad, good], method=method)
        assert client.send(call).status == 200
    assert (len(bad_seen), len(good_seen)) == (1, 1)


def test_no_retry_past_the_service_timeout() -> None:
    def slow_503(conn: socket.socket, data: bytes) -> bool:
        threading.Event().wait(0.3)
        return status(503)(conn, data)

    with scripted_server(slow_503) as (slow, _), scripted_server(ok()) as (good, good_seen):
        client, call, heard = targets_client([slow, good], timeout=0.5)
        assert client.send(call).status == 503  # another 0.3 s attempt would not fit in the 0.5 s
    assert good_seen == [] and ("refused", "deadline") in heard.events


def test_a_timeout_is_not_retried() -> None:
    def silent(conn: socket.socket, data: bytes) -> bool:
        threading.Event().wait(1.0)
        return False

    with scripted_server(silent) as (slow, _), scripted_server(ok()) as (good, good_seen):
        client, call, _ = targets_client([slow, good], timeout=0.2)
        with pytest.raises(GatewayTimeout):
            client.send(call)
    assert good_seen == []


def test_the_budget_refuses_retries_beyond_its_share() -> None:
    with scripted_server(status(503)) as (bad, _), scripted_server(status(503)) as (bad2, _):
        client, call, heard = targets_client([bad, bad2], retries={"budget": {"percent": 0, "min_retries": 1}})
        for _ in range(3):
            client.send(dataclasses.replace(call)).discard()
    assert [e for e in heard.events if e[0] in ("retry", "refused")] == [("retry",), ("refused", "budget"),
                                                                       ("refused", "budget")]


def test_without_retries_a_refused_target_fails_the_request_but_is_spared() -> None:
    with scripted_server(ok()) as (good, _):
        client, call, _ = targets_client([unbound_port(), good], retries=False)
        with pytest.raises(BadGateway) as caught:
            client.send(call)
        assert caught.value.spared  # the other target answers: the breaker does not count it
        assert call.attempts == 1
        assert client.send(call).status == 200  # round robin: the other one


def test_attempts_in_flight_last_until_the_body_is_done() -> None:
    with scripted_server(ok()) as (one, _), scripted_server(ok()) as (two, _):
        client, call, _ = targets_client([one, two], balance="least_outstanding")
        targets = client.targets["menu"]
        first = client.send(call)
        assert sum(t.outstanding for t in targets.targets) == 1
        second = client.send(call)  # the idle target wins the power of two choices
        assert {t.outstanding for t in targets.targets} == {1}
        first.read_all()
        first.release()
        second.discard()
        second.discard()  # twice: counted once
        assert [t.outstanding for t in targets.targets] == [0, 0]


STILL_OPEN_UNDER_GEVENT = r"""
from gevent import monkey
monkey.patch_all()
import http.client, socket
from gateway.http import upstream

peeked = []
upstream.select.select = lambda *args: peeked.append(args)  # must not be needed under gevent
seen = []
for peer in ("idle", "closed", "stray bytes"):
    ours, theirs = socket.socketpair()
    conn = http.client.HTTPConnection("127.0.0.1", 9)
    conn.sock = ours
    if peer == "closed":
        theirs.close()
    elif peer == "stray bytes":
        theirs.sendall(b"HTTP/1.1 200 OK\r\n")
    seen.append(upstream.still_open(conn))
    if peer == "stray bytes":
        assert ours.recv(100) == b"HTTP/1.1 200 OK\r\n", "peeked at, not consumed"
    ours.close()
    theirs.close()
assert not peeked, "gevent's select was used"
print(seen)
"""


def test_still_open_under_gevent_is_one_peek() -> None:
    done = subprocess.run([sys.executable, "-c", STILL_OPEN_UNDER_GEVENT], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[True, False, False]"
