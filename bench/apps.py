"""The two WSGI apps the benchmark runs besides the gateway: the upstream it forwards to, and the bare baseline.

Both answer the same 47-byte JSON body, so the gateway's answers, the upstream's and the bare
baseline's differ only in what each server does per request.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

BODY = b'{"id":"123","status":"delivered","total":24.50}'
assert len(BODY) == 47
JSON_HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))]

Environ = dict[str, Any]
StartResponse = Callable[..., Any]


def bare(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """Answer every request with the body and nothing else: the ceiling of the server stack."""
    start_response("200 OK", JSON_HEADERS)
    return [BODY]


class Upstream:
    """A fast backend that counts the calls it receives, per path, and can be told to answer slowly.

    ``GET /__count?prefix=/x`` returns ``{"total": n, "matching": m}`` (calls since start or the last
    ``POST /__reset``), not counting the ``/__`` control calls themselves. ``?delay_ms=N`` on any
    other request delays its answer by N ms without blocking the worker (gevent).
    It must run as one worker process, so the counts are those of the whole upstream.
    """

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """Serve one request."""
        path = environ.get("PATH_INFO", "/")
        query = parse_qs(environ.get("QUERY_STRING", ""))
        if path.startswith("/__"):
            return self._control(path, query, start_response)
        self.calls[path] += 1
        delay_ms = query.get("delay_ms")
        if delay_ms:
            import gevent  # only the slow case needs it, and only under a gevent worker

            gevent.sleep(float(delay_ms[0]) / 1000.0)
        start_response("200 OK", JSON_HEADERS)
        return [BODY]

    def _control(self, path: str, query: dict[str, list[str]], start_response: StartResponse) -> Iterable[bytes]:
        if path == "/__count":
            prefix = query.get("prefix", [""])[0]
            matching = sum(n for p, n in self.calls.items() if p.startswith(prefix))
            data = {"total": sum(self.calls.values()), "matching": matching}
        elif path == "/__reset":
            self.calls.clear()
            data = {"total": 0, "matching": 0}
        else:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"unknown control path\n"]
        body = json.dumps(data).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]


upstream = Upstream()
