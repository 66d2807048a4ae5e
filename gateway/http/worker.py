"""``gateway.http.worker.GatewayWorker``: gunicorn's gevent worker with the gateway's HTTP/1.1 connections.

gunicorn keeps what it does well: the master, forking, signals, heartbeats, graceful stops,
``max_requests`` and ``worker_connections``. Only what happens on an accepted connection changes:
:class:`~gateway.http.server.Connection` parses it with llhttp and writes each answer in one
``send``, where gunicorn's worker spends about as long in its own Python parser and response
writer as the gateway spends answering a cache hit (README, design notes).
"""

from __future__ import annotations

import socket
import sys
from typing import TYPE_CHECKING, Any

import gevent
from gunicorn.workers.ggevent import GeventWorker

from gateway.http.server import Connection, Limits

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment


def limits_from(cfg: Any) -> Limits:
    """The connection limits of gunicorn's settings (``cfg``: its ``Config``, untyped)."""
    return Limits(cfg.limit_request_line, cfg.limit_request_fields, cfg.limit_request_field_size,
                  keepalive=float(cfg.keepalive or 0.001), read_timeout=float(max(cfg.timeout, 30)))


def base_environ(cfg: Any) -> WSGIEnvironment:
    """The WSGI keys every request of this worker shares (``SERVER_*`` and the peer are the connection's)."""
    return {
        "SCRIPT_NAME": "", "SERVER_SOFTWARE": "gateway", "wsgi.version": (1, 0), "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": cfg.workers > 1,
        "wsgi.run_once": False, "wsgi.input_terminated": True,
    }


def server_address(listener: Any) -> tuple[str, str]:
    """``SERVER_NAME`` and ``SERVER_PORT`` of a gunicorn listener ("" when it cannot say)."""
    try:
        host, port = listener.getsockname()[:2]
    except (OSError, ValueError, TypeError):
        return "", ""
    return str(host), str(port)


class GatewayWorker(GeventWorker):  # type: ignore[misc]  # gunicorn ships no types: its classes are Any
    """A gevent worker whose connections are served by :class:`Connection`."""

    def init_process(self) -> None:
        """Read the limits once, then let gunicorn's worker start (it runs until told to stop)."""
        self.limits = limits_from(self.cfg)
        self.base_environ = base_environ(self.cfg)
        super().init_process()

    def handle(self, listener: Any, client: socket.socket, addr: object) -> None:
        """Serve one accepted connection (gunicorn's own handling for TLS)."""
        if self.cfg.is_ssl:
            super().handle(listener, client, addr)  # TLS stays gunicorn's own
            return
        client.setblocking(True)
        try:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            host, port = server_address(listener)
        except (OSError, ValueError, TypeError):
            host, port = "", ""
        environ = {**self.base_environ, "SERVER_NAME": host, "SERVER_PORT": port}
        Connection(client, addr, self.wsgi, environ, self.limits, alive=self.serving,
                   served=self.count_request, pause=gevent.sleep).serve()

    def serving(self) -> bool:
        """Whether the worker still takes requests (False once told to stop)."""
        return bool(self.alive)

    def count_request(self) -> None:
        """What gunicorn's ``handle_request`` does per request: count towards ``max_requests``."""
        self.nr += 1
        if self.nr >= self.max_requests and self.serving():
            self.log.info("Autorestarting worker after current request.")
            self.alive = False
