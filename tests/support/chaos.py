"""Load, answer bookkeeping and figure reporting for the reliability suites.

A :class:`Load` runs a few client threads against a gateway, each opening a fresh connection per
request (so a dead worker or a closed keep-alive never looks like a gateway error), and records
every answer with its time, so a test can ask what was answered during each fault it injected.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

JSON_ERRORS = {502: "bad_gateway", 503: "circuit_open", 504: "gateway_timeout"}
REPORT_FILE = "reliability.jsonl"


@dataclass
class Answer:
    """One request of a load run: when it started and ended, and what came back (or the error)."""

    target: str
    started: float
    ended: float
    status: int | None
    headers: dict[str, str]
    body: bytes
    error: str | None = None
    request_id: str = ""

    @property
    def x_cache(self) -> str | None:
        """The X-Cache header, if any."""
        return self.headers.get("x-cache")

    @property
    def code(self) -> str | None:
        """The gateway's JSON error code, if the body is its error envelope."""
        try:
            error = json.loads(self.body)["error"]
            return error.get("code") if isinstance(error, dict) else None
        except (ValueError, TypeError, KeyError):
            return None

    def kind(self) -> str:
        """A short label for the figures: ``2xx``, ``STALE``, ``500-upstream``, ``503-circuit_open``, ``lost``..."""
        if self.status is None:
            return "lost"
        if self.x_cache == "STALE":
            return "STALE"
        if 200 <= self.status < 400:
            return f"{self.status // 100}xx"
        return f"{self.status}-{self.code or 'upstream'}"


def fetch(port: int, target: str, method: str = "GET", headers: dict[str, str] | None = None,
          body: bytes | None = None, timeout: float = 10.0,
          on_connect: Callable[[int], None] | None = None) -> Answer:
    """Send one request on a fresh connection and return the answer (never raises).

    ``on_connect`` is told the connection's local port once it is open.
    """
    started = time.monotonic()
    request_id = (headers or {}).get("X-Request-ID", "")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        if on_connect is not None:
            conn.connect()
            on_connect(conn.sock.getsockname()[1])
        conn.request(method, target, body=body, headers={"Connection": "close", **(headers or {})})
        response = conn.getresponse()
        data = response.read()
        return Answer(target, started, time.monotonic(), response.status,
                      {k.lower(): v for k, v in response.getheaders()}, data, None, request_id)
    except (OSError, http.client.HTTPException) as exc:
        return Answer(target, started, time.monotonic(), None, {}, b"", f"{type(exc).__name__}: {exc}", request_id)
    finally:
        conn.close()


@dataclass
class Load:
    """Client threads sending requests in a loop until stopped or ``max_requests`` each."""

    port: int
    targets: Sequence[str]
    threads: int = 4
    max_requests: int = 2000
    pause: float = 0.0
    answers: list[Answer] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.in_flight: dict[str, int] = {}  # request id -> local port of its open connection
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []

    def _run(self, index: int) -> None:
        for n in range(self.max_requests):
            if self._stop.is_set():
                return
            request_id = f"load-{id(self):x}-{index}-{n}"

            def opened(local_port: int, rid: str = request_id) -> None:
                with self._lock:
                    self.in_flight[rid] = local_port

            answer = fetch(self.port, self.targets[(index + n) % len(self.targets)],
                           headers={"X-Request-ID": request_id}, on_connect=opened)
            with self._lock:
                self.answers.append(answer)
                self.in_flight.pop(request_id, None)
            if self.pause:
                time.sleep(self.pause)

    def __enter__(self) -> Load:
        for index in range(self.threads):
            worker = threading.Thread(target=self._run, args=(index,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the threads and wait for their last requests."""
        self._stop.set()
        for worker in self._workers:
            worker.join(30)

    def flying(self) -> dict[str, int]:
        """The requests in flight now: request id -> local port of its connection."""
        with self._lock:
            return dict(self.in_flight)

    def between(self, start: float, end: float, where: Callable[[Answer], bool] = lambda a: True) -> list[Answer]:
        """Answers to requests that started in ``[start, end)`` and match ``where``."""
        with self._lock:
            return [a for a in self.answers if start <= a.started < end and where(a)]


def kinds(answers: Iterable[Answer]) -> dict[str, int]:
    """Count answers by :meth:`Answer.kind`."""
    return dict(Counter(a.kind() for a in answers))


def wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds passed; return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def connection_owners(port: int, pids: Iterable[int]) -> dict[int, int]:
    """Map the client port of each connection accepted on ``port`` to the pid holding it (Linux /proc)."""
    inodes: dict[str, int] = {}
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        for fd in fd_dir.iterdir() if fd_dir.exists() else ():
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes[link[8:-1]] = pid
    owners: dict[int, int] = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], fields[9]
        if int(local.split(":")[1], 16) == port and inode in inodes:
            owners[int(remote.split(":")[1], 16)] = inodes[inode]
    return owners


def rss_kib(pid: int) -> int:
    """Resident memory of a process in KiB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def report(request: pytest.FixtureRequest, suite: str, **figures: Any) -> None:
    """Print one ``RELIABILITY {...}`` line and append it to ``reliability.jsonl`` under pytest's base temp dir.

    ``RELIABILITY_REPORT`` (a file path) receives the same line, for collecting the figures of a run.
    """
    line = json.dumps({"suite": suite, "test": request.node.name, **figures}, sort_keys=True, default=str)
    print(f"RELIABILITY {line}")
    paths = [request.config._tmp_path_factory.getbasetemp() / REPORT_FILE]  # type: ignore[attr-defined]
    if os.environ.get("RELIABILITY_REPORT"):
        paths.append(Path(os.environ["RELIABILITY_REPORT"]))
    for path in paths:
        with open(path, "a", encoding="utf-8") as out:
            out.write(line + "\n")
