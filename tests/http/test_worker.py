"""The gunicorn worker class (gateway/http/worker.py): its limits and environ from gunicorn's settings,
a connection served by the gateway's server, and ``max_requests`` counted per request.

The worker is built without ``init_process`` (which would start gevent's loop): what it sets up
there is checked through the functions it calls.
"""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.http.worker import GatewayWorker, base_environ, limits_from, server_address
from tests.support.raw_socket import read_until_closed

Accepted = tuple[socket.socket, socket.socket, socket.socket]  # the listener, the accepted end, the client's end


def gunicorn_cfg(**overrides: Any) -> SimpleNamespace:
    """The settings gunicorn's ``Config`` gives a worker, with its defaults."""
    values: dict[str, Any] = dict(limit_request_line=4094, limit_request_fields=100, limit_request_field_size=8190,
                                  keepalive=2, timeout=30, workers=2, is_ssl=False)
    return SimpleNamespace(**{**values, **overrides})


def test_limits_follow_gunicorns_settings() -> None:
    limits = limits_from(gunicorn_cfg(limit_request_line=0, keepalive=0, timeout=90))
    assert limits.request_line == sys.maxsize  # 0: no limit, as in gunicorn
    assert (limits.fields, limits.field_size) == (100, 8190)
    assert limits.keepalive == 0.001  # no keep-alive: the next request is not waited for
    assert limits.read_timeout == 90.0
    assert limits_from(gunicorn_cfg(timeout=5)).read_timeout == 30.0  # a body gets at least 30 s


def test_the_environ_says_what_every_request_shares() -> None:
    environ = base_environ(gunicorn_cfg(workers=1))
    assert environ["wsgi.version"] == (1, 0) and environ["wsgi.url_scheme"] == "http"
    assert environ["wsgi.multiprocess"] is False and environ["wsgi.input_terminated"] is True
    assert environ["SERVER_SOFTWARE"] == "gateway" and environ["SCRIPT_NAME"] == ""
    assert base_environ(gunicorn_cfg(workers=3))["wsgi.multiprocess"] is True


def test_the_server_address_is_the_listeners_or_nothing() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        assert server_address(listener) == ("127.0.0.1", str(listener.getsockname()[1]))
    assert server_address(listener) == ("", "")  # closed: it cannot say


class Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        self.lines.append(message)


def worker(app: Callable[..., Iterable[bytes]], max_requests: int = 1000) -> GatewayWorker:
    """A worker as ``init_process`` leaves it, without gevent's loop running."""
    built = GatewayWorker.__new__(GatewayWorker)
    cfg = gunicorn_cfg(keepalive=1)
    built.cfg, built.wsgi, built.log = cfg, app, Log()
    built.limits, built.base_environ = limits_from(cfg), base_environ(cfg)
    built.alive, built.nr, built.max_requests = True, 0, max_requests
    return built


def hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = f"{environ['SERVER_NAME']}:{environ['SERVER_PORT']} {environ['REMOTE_ADDR']}".encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


@pytest.fixture
def accepted() -> Iterator[Accepted]:
    """A listener, an accepted connection on it, and the client's end."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname(), timeout=5)
        conn, _ = listener.accept()
        yield listener, conn, client
        client.close()
        conn.close()


def serve_in_thread(built: GatewayWorker, accepted: Accepted) -> threading.Thread:
    listener, conn, client = accepted
    thread = threading.Thread(target=built.handle, args=(listener, conn, client.getsockname()), daemon=True)
    thread.start()
    return thread


def test_a_connection_is_served_by_the_gateways_server(
        accepted: Accepted) -> None:
    listener, _, client = accepted
    built = worker(hello)
    thread = serve_in_thread(built, accepted)
    client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
    client.shutdown(socket.SHUT_WR)
    data = read_until_closed(client)
    thread.join(5)
    port = listener.getsockname()[1]
    assert data.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert data.endswith(f"127.0.0.1:{port} 127.0.0.1".encode())
    assert built.nr == 2  # both count towards max_requests


def test_max_requests_stops_the_worker_and_closes_the_kept_connection(
        accepted: Accepted) -> None:
    _, _, client = accepted
    built = worker(hello, max_requests=1)
    thread = serve_in_thread(built, accepted)
    client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
    data = read_until_closed(client)
    thread.join(5)
    assert not built.serving()
    assert built.log.lines == ["Autorestarting worker after current request."]
    assert data.count(b"HTTP/1.1 200 OK\r\n") == 2  # the request already read is answered ...
    assert data.rpartition(b"HTTP/1.1 200 OK\r\n")[2].count(b"Connection: close") == 1  # ... and says close
