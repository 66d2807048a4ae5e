"""Where workers publish their statistics so any worker can answer for the whole gateway.

Counters are plain ``{field: int}`` maps; time series are ``{epoch second: counters}`` buckets.
Two ways to share them:

* :class:`FileShare` (every worker, always): each worker writes its own snapshot file into the
  instance's run directory (atomic rename) and readers merge every file. It is the whole story in
  embedded mode and the fallback of one instance when Redis is unreachable.
* :class:`RedisShare` (with ``REDIS_URL``): workers add their deltas to per-second hashes with
  ``HINCRBY``, so Redis holds the sum over every worker of every instance.

Breaker resets use a generation number per service in ``resets.json``; a worker's cumulative
counters of a service count only once it has applied the latest generation (``resets_seen``), so a
reset is visible at once whichever worker answers.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any, TypedDict

import redis

from gateway.observe.instance import atomic_write
from gateway.redis.link import RedisLink

Counts = dict[str, int]
Buckets = dict[int, Counts]
HashReply = dict[bytes | str, bytes | str]  # what HGETALL answers
StoreSize = dict[str, int | None]  # a cache's "keys" and "memory_used_bytes" (None: it cannot say)
BreakerFields = dict[str, Any]  # a breaker's "state", "opened_at", "next_attempt_at", as its snapshot gives them


class Snapshot(TypedDict):
    """One worker's published figures, as :func:`decode_snapshot` reads them back."""

    pid: int | None
    written_at: float  # the worker's clock when it wrote them: how fresh they are
    in_flight: int  # proxied requests it was answering
    c: Buckets  # per-second cache counters
    b: Buckets  # per-second breaker window counters
    cum: Counts  # cumulative breaker and rate-limit counters
    resets_seen: dict[str, int]  # per service, the last breaker reset generation it applied
    breakers: dict[str, BreakerFields]  # its own breakers' states (embedded mode)
    store: StoreSize  # its embedded cache's size ({} with Redis)
    targets: dict[str, Any]  # its view of the upstream targets of services with several

CUMULATIVE_TTL = 7 * 24 * 3600  # cumulative counters outlive a week of idleness at most
FRESH_SECONDS = 3.0  # a worker file older than this no longer speaks for a live breaker


def add_counts(target: Counts, source: Mapping[str, int]) -> None:
    """Add every counter of ``source`` into ``target``."""
    for field, value in source.items():
        target[field] = target.get(field, 0) + value


def add_buckets(target: Buckets, source: Mapping[int, Mapping[str, int]]) -> None:
    """Add every bucket of ``source`` into ``target``."""
    for second, counts in source.items():
        add_counts(target.setdefault(second, {}), counts)


def sum_window(buckets: Mapping[int, Mapping[str, int]], first: int, last: int) -> Counts:
    """Sum the buckets of seconds ``first`` .. ``last`` (inclusive)."""
    total: Counts = {}
    for second, counts in buckets.items():
        if first <= second <= last:
            add_counts(total, counts)
    return total


def service_fields(counts: Counts, service: str) -> Counts:
    """The ``service|name`` counters of one service, keyed by ``name``."""
    prefix = service + "|"
    return {field[len(prefix):]: value for field, value in counts.items() if field.startswith(prefix)}


def drop_service(counts: Counts, service: str) -> None:
    """Remove every counter of ``service`` from ``counts``."""
    prefix = service + "|"
    for field in [f for f in counts if f.startswith(prefix)]:
        del counts[field]


class FileShare:
    """Per-worker snapshot files in the instance's run directory, merged by readers."""

    def __init__(self, run_dir: str, worker_id: str) -> None:
        self.run_dir = run_dir
        self.worker_id = worker_id
        self.path = os.path.join(run_dir, f"stats-{worker_id}.json")
        self._resets_path = os.path.join(run_dir, "stats-resets.json")
        self._resets_lock = os.path.join(run_dir, "stats-resets.lock")

    def write(self, snapshot: Mapping[str, Any]) -> None:
        """Publish this worker's snapshot (replacing its previous one atomically)."""
        atomic_write(self.path, json.dumps(snapshot, separators=(",", ":")).encode())

    def others(self) -> list[Snapshot]:
        """Snapshots of every other worker of this instance (alive or not), as last written."""
        found: list[Snapshot] = []
        try:
            names = os.listdir(self.run_dir)
        except OSError:
            return found
        for name in names:
            if not (name.startswith("stats-") and name.endswith(".json")) or name == "stats-resets.json":
                continue
            if os.path.join(self.run_dir, name) == self.path:
                continue
            try:
                with open(os.path.join(self.run_dir, name), "rb") as handle:
                    data = json.loads(handle.read())
            except (OSError, ValueError):
                continue  # vanished or unreadable: skip, never fail a read
            found.append(decode_snapshot(data))
        return found

    def resets(self) -> dict[str, int]:
        """The latest reset generation of every service that was ever reset on this instance."""
        try:
            with open(self._resets_path, "rb") as handle:
                data = json.loads(handle.read())
        except (OSError, ValueError):
            return {}
        return {str(k): int(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def bump_reset(self, service: str) -> int:
        """Start a new reset generation for ``service``; return it."""
        with open(self._resets_lock, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # read-modify-write of a shared file
            try:
                resets = self.resets()
                resets[service] = resets.get(service, 0) + 1
                atomic_write(self._resets_path, json.dumps(resets).encode())
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return resets[service]


def encode_snapshot(*, pid: int, written_at: float, cache: Buckets, breaker: Buckets, cumulative: Counts,
                    resets_seen: Mapping[str, int], breakers: Mapping[str, BreakerFields],
                    store: StoreSize | None = None, in_flight: int = 0,
                    targets: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JSON form of one worker's snapshot (``store``: its embedded cache's size, if any; ``targets``:
    its view of the upstream targets)."""
    return {
        "pid": pid, "written_at": written_at, "in_flight": in_flight,
        "c": {str(s): c for s, c in cache.items() if c}, "b": {str(s): c for s, c in breaker.items() if c},
        "cum": cumulative, "resets_seen": dict(resets_seen), "breakers": dict(breakers), "store": store or {},
        "targets": dict(targets or {}),
    }


def decode_snapshot(data: Mapping[str, Any]) -> Snapshot:
    """Parse a snapshot written by :func:`encode_snapshot` (bucket keys back to ints)."""
    return {
        "pid": data.get("pid"),
        "written_at": float(data.get("written_at") or 0.0),
        "in_flight": int(data.get("in_flight") or 0),
        "c": {int(s): dict(c) for s, c in (data.get("c") or {}).items()},
        "b": {int(s): dict(c) for s, c in (data.get("b") or {}).items()},
        "cum": dict(data.get("cum") or {}),
        "resets_seen": dict(data.get("resets_seen") or {}),
        "breakers": dict(data.get("breakers") or {}),
        "store": dict(data.get("store") or {}),
        "targets": dict(data.get("targets") or {}),
    }


class RedisShare:
    """Per-second hashes in Redis, summed over every worker and instance by ``HINCRBY``."""

    def __init__(self, link: RedisLink, cache_history: int, breaker_history: int) -> None:
        self.link = link
        self.cache_history = cache_history
        self.breaker_history = breaker_history

    def _key(self, family: str, second: int | None = None) -> str:
        return self.link.key("stats", family) if second is None else self.link.key("stats", family, str(second))

    def push(self, cache: Buckets, breaker: Buckets, cumulative: Counts) -> None:
        """Add this worker's deltas; raises StoreUnavailable when Redis cannot be used."""

        def run(client: redis.Redis) -> None:
            pipe = client.pipeline(transaction=False)
            for family, buckets, ttl in (("c", cache, self.cache_history), ("b", breaker, self.breaker_history)):
                for second, counts in buckets.items():
                    key = self._key(family, second)
                    for field, value in counts.items():
                        if value:
                            pipe.hincrby(key, field, value)
                    pipe.expire(key, ttl + 60)
            if cumulative:
                key = self._key("cum")
                for field, value in cumulative.items():
                    if value:
                        pipe.hincrby(key, field, value)
                pipe.expire(key, CUMULATIVE_TTL)
            pipe.execute()

        self.link.run(run)

    def read(self, family: str, first: int, last: int) -> Buckets:
        """The buckets of seconds ``first`` .. ``last`` of family ``c`` (cache) or ``b`` (breakers)."""
        seconds = list(range(first, last + 1))

        def run(client: redis.Redis) -> list[HashReply]:
            pipe = client.pipeline(transaction=False)
            for second in seconds:
                pipe.hgetall(self._key(family, second))
            replies: list[HashReply] = pipe.execute()
            return replies

        return {s: _ints(raw) for s, raw in zip(seconds, self.link.run(run), strict=True) if raw}

    def cumulative(self) -> Counts:
        """The gateway-wide cumulative breaker counters."""
        return _ints(self.link.run(lambda client: client.hgetall(self._key("cum"))))

    def reset(self, service: str, fields: Iterable[str], first: int, last: int) -> None:
        """Drop one service's cumulative counters and its window buckets of seconds ``first`` .. ``last``."""
        names = list(fields)

        def run(client: redis.Redis) -> None:
            pipe = client.pipeline(transaction=False)
            pipe.hdel(self._key("cum"), *(f"{service}|{n}" for n in ("ok", "fail", "to", "rej")))
            for second in range(first, last + 1):
                pipe.hdel(self._key("b", second), *names)
            pipe.execute()

        self.link.run(run)


def _ints(raw: Mapping[bytes | str, bytes | str]) -> Counts:
    out: Counts = {}
    for field, value in raw.items():
        name = field.decode() if isinstance(field, bytes) else str(field)
        try:
            out[name] = int(value)
        except (TypeError, ValueError):
            continue
    return out
