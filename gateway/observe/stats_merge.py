"""Folding the other workers' snapshot files into one answer: how a reader speaks for its whole instance.

What a reader does without Redis (embedded mode), and with Redis unreachable. Pure functions of this
worker's own counts, the snapshots of :meth:`~gateway.observe.stats_share.FileShare.others` and the
instance's reset generations:

* window buckets and cumulative counters add up over every file, dead workers' included (their
  requests happened), less the counters of a service a worker has not reset yet;
* breaker states, the embedded cache's size and requests in flight count only live workers (a
  file written within ``FRESH_SECONDS``): a dead worker's breaker no longer guards anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gateway.observe.stats_share import (
    FRESH_SECONDS,
    Buckets,
    Counts,
    Snapshot,
    StoreSize,
    add_buckets,
    add_counts,
    drop_service,
)

STATE_RANK = {"CLOSED": 0, "HALF_OPEN": 1, "OPEN": 2}  # without Redis the worst live worker's state is reported


def _unreset(counts: Counts, other: Snapshot, resets: Mapping[str, int]) -> Counts:
    """``counts`` of worker ``other`` less every service it has not applied the latest reset of (a copy)."""
    kept = dict(counts)
    for service, generation in resets.items():
        if int(other["resets_seen"].get(service, 0)) < generation:
            drop_service(kept, service)
    return kept


def window_buckets(own: Buckets, others: Iterable[Snapshot], resets: Mapping[str, int], family: str,
                   first: int, last: int) -> Buckets:
    """The buckets of seconds ``first`` .. ``last`` of ``family`` (``c`` cache, ``b`` breakers), every worker's."""
    merged: Buckets = {}
    add_buckets(merged, {s: c for s, c in own.items() if first <= s <= last})
    for other in others:
        buckets = other["c"] if family == "c" else other["b"]
        if family == "b":  # a breaker reset clears its window too
            buckets = {s: _unreset(c, other, resets) for s, c in buckets.items()}
        add_buckets(merged, {s: c for s, c in buckets.items() if first <= s <= last})
    return merged


def cumulative_counts(own: Counts, others: Iterable[Snapshot], resets: Mapping[str, int]) -> Counts:
    """The cumulative counters of every worker (``own`` first)."""
    total = dict(own)
    for other in others:
        add_counts(total, _unreset(other["cum"], other, resets))  # that worker has not applied the reset yet
    return total


def is_live(other: Snapshot, now: float) -> bool:
    """Whether the worker that wrote ``other`` was alive a moment ago (its file is fresh)."""
    return now - other["written_at"] <= FRESH_SECONDS


def worst_state(name: str, best: dict[str, Any], others: Iterable[Snapshot], now: float) -> dict[str, Any]:
    """``best`` (this worker's state fields of breaker ``name``), or a live worker's when theirs is worse."""
    for other in others:
        if not is_live(other, now):
            continue  # a dead (or stuck) worker's breaker no longer guards anything
        theirs = other["breakers"].get(name)
        if theirs and STATE_RANK.get(str(theirs.get("state")), 0) > STATE_RANK.get(str(best.get("state")), 0):
            best = {**best, **theirs}
    return best


def instance_size(own: StoreSize, others: Iterable[Snapshot], now: float) -> tuple[int | None, int | None]:
    """Entries and bytes of every live worker's embedded cache (``own``: this worker's)."""
    keys, used = own.get("keys"), own.get("memory_used_bytes")
    for other in others:
        theirs = other["store"]
        if is_live(other, now) and theirs:
            keys = (keys or 0) + int(theirs.get("keys") or 0)
            used = (used or 0) + int(theirs.get("memory_used_bytes") or 0)
    return keys, used


def in_flight(others: Iterable[Snapshot], now: float) -> int:
    """Proxied requests the other live workers were answering when they last published."""
    return sum(int(other.get("in_flight") or 0) for other in others if is_live(other, now))
