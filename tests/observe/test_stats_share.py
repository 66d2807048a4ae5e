"""Where workers publish their stats (gateway/observe/stats_share.py): counter arithmetic, snapshot files,
reset generations, and the per-second hashes in Redis."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.observe.stats_share import (
    FileShare,
    RedisShare,
    add_buckets,
    add_counts,
    decode_snapshot,
    drop_service,
    encode_snapshot,
    service_fields,
    sum_window,
)
from gateway.redis.link import RedisLink, StoreUnavailable

_prefixes = itertools.count()


def test_counts_and_buckets_add_up_field_by_field() -> None:
    counts = {"a": 1}
    add_counts(counts, {"a": 2, "b": 3})
    assert counts == {"a": 3, "b": 3}
    buckets = {1: {"a": 1}}
    add_buckets(buckets, {1: {"a": 1}, 2: {"b": 1}})
    assert buckets == {1: {"a": 2}, 2: {"b": 1}}
    assert sum_window({1: {"a": 1}, 2: {"a": 2}, 3: {"a": 4}}, 2, 3) == {"a": 6}


def test_one_services_fields_are_taken_apart_and_dropped() -> None:
    counts = {"orders|ok": 2, "orders|h3": 1, "orders-v2|ok": 5, "rl/orders|limited": 1}
    assert service_fields(counts, "orders") == {"ok": 2, "h3": 1}  # not orders-v2, not the rate limits
    assert service_fields(counts, "rl/orders") == {"limited": 1}
    drop_service(counts, "orders")
    assert counts == {"orders-v2|ok": 5, "rl/orders|limited": 1}


def test_a_snapshot_survives_its_json_form() -> None:
    encoded = encode_snapshot(pid=7, written_at=12.5, cache={3: {"req": 1}, 4: {}}, breaker={3: {"a|ok": 1}},
                              cumulative={"a|ok": 1}, resets_seen={"a": 2}, breakers={"a": {"state": "OPEN"}},
                              store={"keys": 1, "memory_used_bytes": 9}, in_flight=2,
                              targets={"orders": {"http://a": {"ejected": False}}})
    decoded = decode_snapshot(json.loads(json.dumps(encoded)))
    assert decoded == {"pid": 7, "written_at": 12.5, "in_flight": 2, "c": {3: {"req": 1}}, "b": {3: {"a|ok": 1}},
                       "cum": {"a|ok": 1}, "resets_seen": {"a": 2}, "breakers": {"a": {"state": "OPEN"}},
                       "store": {"keys": 1, "memory_used_bytes": 9},
                       "targets": {"orders": {"http://a": {"ejected": False}}}}  # empty buckets are not written
    assert decode_snapshot({})["written_at"] == 0.0 and decode_snapshot({})["c"] == {}


def test_each_worker_reads_the_others_files_and_skips_what_it_cannot(tmp_path: Path) -> None:
    first, second = FileShare(str(tmp_path), "w1"), FileShare(str(tmp_path), "w2")
    for share, pid in ((first, 1), (second, 2)):
        share.write(encode_snapshot(pid=pid, written_at=1.0, cache={}, breaker={}, cumulative={}, resets_seen={},
                                    breakers={}))
    (tmp_path / "stats-broken.json").write_text("{half")
    (tmp_path / "health.json").write_text("{}")  # not a stats file
    assert [other["pid"] for other in first.others()] == [2]
    assert [other["pid"] for other in second.others()] == [1]
    assert FileShare(str(tmp_path / "gone"), "w3").others() == []


def test_reset_generations_count_up_per_service_and_are_not_snapshots(tmp_path: Path) -> None:
    share = FileShare(str(tmp_path), "w1")
    assert share.resets() == {}
    assert share.bump_reset("orders") == 1 and share.bump_reset("orders") == 2 and share.bump_reset("auth") == 1
    assert FileShare(str(tmp_path), "w2").resets() == {"orders": 2, "auth": 1}
    assert FileShare(str(tmp_path), "w2").others() == []  # stats-resets.json is not a worker's file
    (tmp_path / "stats-resets.json").write_text("[1]")
    assert share.resets() == {}


@pytest.fixture
def link(redis_server_session: Any) -> Iterator[RedisLink]:
    opened = RedisLink(redis_server_session.url, f"share{next(_prefixes)}-{os.getpid()}:")
    yield opened
    opened.close()


def test_every_workers_deltas_add_up_in_redis(link: RedisLink) -> None:
    first, second = RedisShare(link, 300, 12), RedisShare(link, 300, 12)
    first.push({10: {"req": 1, "hit": 0}}, {10: {"a|ok": 1}}, {"a|ok": 1})
    second.push({10: {"req": 2}, 11: {"req": 1}}, {}, {"a|ok": 2, "a|rej": 1, "a|to": 0})
    assert first.read("c", 10, 12) == {10: {"req": 3}, 11: {"req": 1}}  # zero deltas are not written
    assert first.read("b", 10, 10) == {10: {"a|ok": 1}}
    assert second.cumulative() == {"a|ok": 3, "a|rej": 1}  # no field for a zero
    ttl = link.client.ttl(link.key("stats", "c", "10"))
    assert 300 < ttl <= 360  # kept a minute past the window


def test_a_reset_in_redis_drops_one_services_counters_and_window(link: RedisLink) -> None:
    share = RedisShare(link, 300, 12)
    share.push({}, {5: {"a|ok": 1, "a|h3": 1, "b|ok": 1}}, {"a|ok": 1, "a|to": 1, "b|ok": 1})
    share.reset("a", ["a|ok", "a|h3"], 0, 10)
    assert share.read("b", 0, 10) == {5: {"b|ok": 1}}
    assert share.cumulative() == {"b|ok": 1}


def test_redis_unreachable_is_told_as_store_unavailable() -> None:
    down = RedisLink("redis://127.0.0.1:9/0", "down:")
    try:
        with pytest.raises(StoreUnavailable):
            RedisShare(down, 300, 12).push({1: {"req": 1}}, {}, {})
    finally:
        down.close()
