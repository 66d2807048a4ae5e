"""Serve sample apps with gevent's pywsgi, recording the raw request and honouring dropped connections."""

from __future__ import annotations

import signal
import socket
import sys
from collections.abc import Sequence
from contextlib import suppress
from typing import Any, NamedTuple, TextIO

import gevent
from gevent.event import Event
from gevent.pywsgi import WSGIHandler, WSGIServer

from samples.common import DropConnection

STOP_GRACE_S = 1.0


class Listener(NamedTuple):
    """One app to serve and the address it listens on."""

    name: str
    app: Any
    host: str
    port: int


class SampleHandler(WSGIHandler):
    """pywsgi handler that exposes the request as received and can drop a connection on request."""

    def get_environ(self) -> dict[str, Any]:
        """Add the raw request target and the received header list to the WSGI environ."""
        environ: dict[str, Any] = super().get_environ()
        # pywsgi keeps the request target exactly as received in self.path but does not
        # publish it; gunicorn and Werkzeug call it RAW_URI / REQUEST_URI.
        environ["RAW_URI"] = environ["REQUEST_URI"] = self.path
        # The environ joins repeated headers and drops names with "_"; tests need them as sent.
        environ["samples.raw_headers"] = list(self.headers.items())
        return environ

    def run_application(self) -> None:
        """Run the app; on DropConnection close the socket without sending anything more."""
        try:
            super().run_application()
        except DropConnection:
            self.close_connection = True
            with suppress(OSError):
                self.socket.shutdown(socket.SHUT_RDWR)


class PrefixedLog:
    """File-like access log that prefixes each line with the service name."""

    def __init__(self, name: str, stream: TextIO) -> None:
        self.name = name
        self.stream = stream

    def write(self, message: str) -> None:
        """Write one log line."""
        self.stream.write(f"{self.name} | {message}")
        self.stream.flush()


def serve(listeners: Sequence[Listener], access_log: bool = True) -> int:
    """Serve every listener until SIGTERM or SIGINT, then stop them all and return an exit status."""
    servers: list[WSGIServer] = []
    for listener in listeners:
        log = PrefixedLog(listener.name, sys.stderr) if access_log else None
        server = WSGIServer((listener.host, listener.port), listener.app, handler_class=SampleHandler,
                            log=log, error_log=PrefixedLog(listener.name, sys.stderr))
        try:
            server.start()
        except OSError as exc:
            print(f"samples: {listener.name} cannot listen on {listener.host}:{listener.port}: {exc}",
                  file=sys.stderr)
            for started in servers:
                started.stop(timeout=0)
            return 1
        servers.append(server)
        print(f"samples: {listener.name} listening on http://{listener.host}:{server.server_port}", flush=True)
    stopping = Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stopping.set)
    stopping.wait()
    print("samples: stopping", flush=True)
    # Open streams get a moment to finish, then their greenlets are killed.
    gevent.joinall([gevent.spawn(server.stop, timeout=STOP_GRACE_S) for server in servers])
    return 0
