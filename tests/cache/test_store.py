"""The per-worker store (an LRU bounded by entries and bytes, indexed by path) and the names of the Redis store."""

from __future__ import annotations

from gateway.cache.store import MemoryStore, RedisNames
from gateway.clock import FakeClock
from gateway.redis.link import RedisLink


def test_memory_store_is_a_bounded_lru() -> None:
    clock = FakeClock()
    store = MemoryStore(max_entries=3, max_bytes=10_000, clock=clock)
    for name in "abc":
        store.put(name, "/" + name, "v", b"x" * 100, ttl=10)
    assert store.get_variants("a") == [b"x" * 100]  # a is now the most recently used
    store.put("d", "/d", "v", b"x", ttl=10)
    assert store.get_variants("b") == [] and store.get_variants("a") != []
    store.put("big", "/big", "v", b"y" * 9_500, ttl=10)
    assert store.snapshot()["keys"] <= 3 and store.snapshot()["memory_used_bytes"] <= 10_000
    clock.advance(10.5)
    assert store.get_variants("big") == []
    assert store.purge(prefix="/") == 2  # a and d, expired but still held until looked up or purged
    assert store.snapshot() == {"keys": 0, "memory_used_bytes": 0}


def test_a_path_index_drops_every_key_under_it() -> None:
    store = MemoryStore(max_entries=10, max_bytes=10_000)
    store.put("k1", "/a", "v1", b"1", ttl=10)
    store.put("k1", "/a", "v2", b"2", ttl=10)  # a second variant of the same key
    store.put("k2", "/a", "v", b"3", ttl=10)
    store.put("k3", "/b", "v", b"4", ttl=10)
    assert sorted(store.get_variants("k1")) == [b"1", b"2"]
    assert store.drop_groups(["/a", "/none"]) == 2
    assert store.get_variants("k1") == [] and store.get_variants("k2") == [] and store.get_variants("k3") == [b"4"]
    assert store.purge(path="/b") == 1 and store.snapshot() == {"keys": 0, "memory_used_bytes": 0}


def test_a_new_variant_never_shortens_a_keys_life() -> None:
    clock = FakeClock()
    store = MemoryStore(max_entries=10, max_bytes=10_000, clock=clock)
    store.put("k", "/a", "v1", b"1", ttl=100)
    store.put("k", "/a", "v2", b"2", ttl=1)
    clock.advance(50)
    assert sorted(store.get_variants("k")) == [b"1", b"2"]
    clock.advance(51)
    assert store.get_variants("k") == []


def test_a_value_larger_than_the_whole_store_is_refused() -> None:
    store = MemoryStore(max_entries=10, max_bytes=100)
    assert not store.put("k", "/a", "v", b"x" * 101, ttl=10)
    assert store.snapshot()["keys"] == 0


def test_the_memory_store_needs_no_cross_process_lock() -> None:
    store = MemoryStore(max_entries=10, max_bytes=100)
    assert store.try_lock("k", 1.0) == "local" and store.lock_and_read("k", 1.0) == ("local", None)
    assert not store.is_locked("k")


def test_every_redis_name_is_under_the_prefix_and_apart_by_kind() -> None:
    names = RedisNames(RedisLink("redis://127.0.0.1:1", "gw:"))
    built = [names.entry("k"), names.group("k"), names.lock("k"), names.channel]
    assert len(set(built)) == 4 and all(name.startswith(names.every_key) for name in built)
    assert names.every_key.startswith("gw:")
    assert names.entry("") and names.entry("k").startswith(names.entry(""))  # scanned for by that head
