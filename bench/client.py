"""Plain HTTP calls the cases make outside wrk: control endpoints, the stampede and the TTL pattern."""

from __future__ import annotations

import http.client
import json
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote


@dataclass
class Answer:
    """One HTTP answer: status, headers (lower-case names) and body."""

    status: int
    headers: dict[str, str]
    body: bytes


def call(port: int, method: str, path: str, headers: dict[str, str] | None = None, timeout: float = 10.0) -> Answer:
    """Make one request on a fresh connection to 127.0.0.1:``port``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
    finally:
        conn.close()


def upstream_calls(port: int, prefix: str = "") -> int:
    """Return how many calls the upstream received on paths starting with ``prefix``."""
    answer = call(port, "GET", f"/__count?prefix={quote(prefix)}")
    data: dict[str, Any] = json.loads(answer.body)
    return int(data["matching"])


def admin(port: int, token: str, path: str) -> Answer:
    """POST to a gateway admin endpoint with the bearer token."""
    return call(port, "POST", path, {"Authorization": f"Bearer {token}"})


def concurrent_gets(port: int, path: str, count: int, timeout: float = 15.0) -> list[Answer | Exception]:
    """Send ``count`` GETs of ``path`` at once (threads released together, one connection each)."""
    results: list[Answer | Exception] = [RuntimeError("not sent")] * count
    barrier = threading.Barrier(count)

    def one(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            conn.connect()  # connect first, so the requests themselves leave together
            barrier.wait(timeout)
            conn.request("GET", path)
            response = conn.getresponse()
            results[index] = Answer(response.status, {k.lower(): v for k, v in response.getheaders()},
                                    response.read())
        except Exception as exc:  # every failure is reported, none may stop the others
            results[index] = exc
        finally:
            conn.close()

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 5)
    return results
