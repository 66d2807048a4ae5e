"""Interim answers (103 Early Hints, 102) from a service reach the client before the final one, through gunicorn."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HINTS = (b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
         b"HTTP/1.1 102 Processing\r\n\r\n")
FINAL = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nCache-Control: max-age=60\r\nContent-Length: 5\r\n\r\nfinal"


@pytest.fixture
def hinting_origin() -> Iterator[int]:
    """A raw origin: every request gets a 103 and a 102, then the final 200 (kept alive)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            buffer = b""
            while not stop.is_set():
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buffer += data
                while b"\r\n\r\n" in buffer:
                    _, buffer = buffer.split(b"\r\n\r\n", 1)
                    conn.sendall(HINTS + FINAL)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    listener.close()
    thread.join(2)


@pytest.mark.e2e
def test_interim_answers_pass_through_and_the_final_answer_is_cached(hinting_origin: int, gateway_factory: Any,
                                                                     tmp_path: Path) -> None:
    config = tmp_path / "gateway.json"
    config.write_text(json.dumps({"services": {"hints": {"prefix": "/hints",
                                                         "url": f"http://127.0.0.1:{hinting_origin}"}}}))
    gateway = gateway_factory({"GATEWAY_CONFIG": str(config), "HEALTH_CHECK_INTERVAL": "0"}, workers=1)
    answers = []
    for _ in range(2):
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
            sock.sendall(b"GET /hints/page HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
            answers.append(b"".join(chunks))
    miss, hit = answers
    assert miss.startswith(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
                           b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 200 OK\r\n"), miss[:300]
    assert b"X-Cache: MISS" in miss and miss.endswith(b"final")
    # The stored answer is the final one alone: a hit sends no interim answer and no Link header.
    assert hit.startswith(b"HTTP/1.1 200 OK\r\n") and b"X-Cache: HIT" in hit and b"Link:" not in hit
