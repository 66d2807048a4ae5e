"""A loopback TCP proxy for fault injection between the gateway and Redis.

Every client connection gets its own connection to the target and two pump threads. Faults are set
while it runs and apply to data from then on:

* ``latency``: seconds each chunk of a reply waits before it is passed on;
* ``stalled``: nothing is passed on in either direction until it is cleared (a frozen network path);
* ``drop_replies``: each reply is cut after its first half and both connections are closed (a
  connection dropped mid-reply; the command itself did reach the target).
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``(host, target_port)``; a context manager that stops what it started."""

    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (host, target_port)
        self.latency = 0.0
        self.drop_replies = False
        self._flowing = threading.Event()
        self._flowing.set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False
        self.connections = 0
        self.dropped = 0
        self._accepter = threading.Thread(target=self._accept, name=f"tcp-proxy-{self.port}", daemon=True)
        self._accepter.start()

    @property
    def stalled(self) -> bool:
        """True while nothing is passed on."""
        return not self._flowing.is_set()

    @stalled.setter
    def stalled(self, value: bool) -> None:
        if value:
            self._flowing.clear()
        else:
            self._flowing.set()

    def reset(self) -> None:
        """No fault: pass everything on at once."""
        self.latency, self.drop_replies, self.stalled = 0.0, False, False

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()  # the target is down: so is the path through the proxy
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._closed:
                    client.close()
                    upstream.close()
                    return
                self.connections += 1
                self._sockets.update((client, upstream))
                pair = [threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True),
                        threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True)]
                self._threads.extend(pair)
            for thread in pair:
                thread.start()

    def _pump(self, source: socket.socket, sink: socket.socket, reply: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                while not self._flowing.wait(0.05):
                    if self._closed:
                        return
                if reply and self.latency:
                    time.sleep(self.latency)
                if reply and self.drop_replies:
                    sink.sendall(data[: max(1, len(data) // 2)])
                    with self._lock:
                        self.dropped += 1
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            self._close_pair(source, sink)

    def _close_pair(self, *sockets: socket.socket) -> None:
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
            with self._lock:
                self._sockets.discard(sock)

    def cut_all(self) -> None:
        """Close every open connection through the proxy (new ones are still accepted)."""
        with self._lock:
            sockets = list(self._sockets)
        self._close_pair(*sockets)

    def close(self) -> None:
        """Stop accepting, close every connection and wait for the pump threads."""
        self._closed = True
        self._flowing.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() that close() alone leaves blocked
        except OSError:
            pass
        self._listener.close()
        self.cut_all()
        self._accepter.join(5)
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(5)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()
