"""A peek at a socket that never waits: whether anything is left to read on a pooled or subscribed connection.

Under gevent a socket is gevent's object over a non-blocking OS socket, and asking it (``select``, or
``recv`` with ``MSG_DONTWAIT``) goes through gevent's hub, or waits. One ``recv(1, MSG_PEEK |
MSG_DONTWAIT)`` on the OS socket itself answers at once (about 4.5 µs here) and takes nothing out of
it. Used by the Redis connection pool, the Redis subscription and the upstream connection pool.
"""

from __future__ import annotations

import _socket
import socket
from typing import Any


def os_socket(sock: Any) -> _socket.socket | None:
    """The OS socket under ``sock`` (gevent's socket holds it as ``_sock``), or None if there is none."""
    raw = getattr(sock, "_sock", sock)
    return raw if isinstance(raw, _socket.socket) else None


def waiting(raw: _socket.socket) -> bool:
    """Whether anything waits to be read on ``raw``, or the peer has closed it: one peek that never waits.

    The socket must be non-blocking (gevent's sockets keep their OS socket so); a blocking one would wait.
    """
    try:
        raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    except OSError:
        return True  # broken: as good as closed
    return True  # a byte waits, or the socket closed (b"")
