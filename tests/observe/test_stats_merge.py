"""Folding other workers' snapshots (gateway/observe/stats_merge.py): sums over every file, states of live ones."""

from __future__ import annotations

from typing import Any

from gateway.observe.stats_merge import cumulative_counts, in_flight, instance_size, window_buckets, worst_state
from gateway.observe.stats_share import FRESH_SECONDS, Snapshot

NOW = 1000.0


def snapshot(written_at: float = NOW, **fields: Any) -> Snapshot:
    base: Snapshot = {"pid": 1, "written_at": written_at, "in_flight": 0, "c": {}, "b": {}, "cum": {},
                      "resets_seen": {}, "breakers": {}, "store": {}}
    return {**base, **fields}  # type: ignore[typeddict-item]


def test_window_buckets_add_every_worker_within_the_seconds_asked() -> None:
    own = {10: {"req": 1}, 20: {"req": 1}}
    others = [snapshot(c={10: {"req": 2}, 11: {"hit": 1}, 30: {"req": 9}}), snapshot(written_at=0, c={11: {"hit": 1}})]
    assert window_buckets(own, others, {}, "c", 10, 20) == {10: {"req": 3}, 11: {"hit": 2}, 20: {"req": 1}}


def test_a_worker_that_has_not_applied_a_reset_counts_without_that_service() -> None:
    late = snapshot(b={5: {"a|ok": 3, "b|ok": 1}}, cum={"a|ok": 3, "b|ok": 1}, resets_seen={"a": 1})
    later = snapshot(b={5: {"a|ok": 2}}, cum={"a|ok": 2}, resets_seen={"a": 2})
    resets = {"a": 2}
    assert window_buckets({}, [late, later], resets, "b", 0, 10) == {5: {"b|ok": 1, "a|ok": 2}}
    assert cumulative_counts({"a|ok": 1}, [late, later], resets) == {"a|ok": 3, "b|ok": 1}
    assert late["cum"] == {"a|ok": 3, "b|ok": 1}  # the snapshot read is left as it was
    assert window_buckets({}, [late], resets, "c", 0, 10) == {}  # cache counts know no resets


def test_the_worst_state_of_a_live_worker_wins_and_a_dead_ones_does_not() -> None:
    closed = {"state": "CLOSED", "opened_at": None}
    half = snapshot(breakers={"a": {"state": "HALF_OPEN", "opened_at": 5.0}})
    dead_open = snapshot(written_at=NOW - FRESH_SECONDS - 1, breakers={"a": {"state": "OPEN", "opened_at": 1.0}})
    assert worst_state("a", closed, [half, dead_open], NOW) == {"state": "HALF_OPEN", "opened_at": 5.0}
    assert worst_state("a", {"state": "OPEN", "forced": "open"}, [half], NOW) == {"state": "OPEN", "forced": "open"}
    assert worst_state("b", {}, [half], NOW) == {}


def test_instance_size_and_in_flight_count_live_workers_only() -> None:
    live = snapshot(store={"keys": 2, "memory_used_bytes": 100}, in_flight=3)
    dead = snapshot(written_at=NOW - FRESH_SECONDS - 1, store={"keys": 50, "memory_used_bytes": 5000}, in_flight=9)
    assert instance_size({"keys": 1, "memory_used_bytes": 10}, [live, dead], NOW) == (3, 110)
    assert instance_size({"keys": None, "memory_used_bytes": None}, [snapshot()], NOW) == (None, None)
    assert in_flight([live, dead], NOW) == 3
