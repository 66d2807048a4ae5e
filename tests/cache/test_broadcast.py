"""The broadcast memory store: its drops and purges go out on the bus, its siblings' come in before every read."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.cache.broadcast import TOPIC, BroadcastMemoryStore
from gateway.cache.store import MemoryStore
from gateway.clock import FakeClock


class Bus:
    """An instance bus that keeps what is published and delivers what a test sends when polled."""

    def __init__(self) -> None:
        self.published: list[tuple[str, dict[str, Any]]] = []
        self.inbox: list[dict[str, Any]] = []
        self.polls = 0
        self.handler: Callable[[dict[str, Any]], None] | None = None
        self.on_gap: Callable[[], None] | None = None

    def subscribe(self, topic: str, handler: Callable[[dict[str, Any]], None],
                  on_gap: Callable[[], None] | None = None) -> None:
        assert topic == TOPIC
        self.handler, self.on_gap = handler, on_gap

    def poll(self) -> None:
        self.polls += 1
        while self.inbox and self.handler is not None:
            self.handler(self.inbox.pop(0))

    def publish(self, topic: str, message: dict[str, Any]) -> None:
        self.published.append((topic, message))


def filled() -> tuple[BroadcastMemoryStore, Bus]:
    bus = Bus()
    store = BroadcastMemoryStore(MemoryStore(100, 100_000, FakeClock()), bus)  # type: ignore[arg-type]
    for path in ("/a", "/a/1", "/b"):
        store.put("k" + path, path, "v", b"x", ttl=60)
    return store, bus


def test_drops_and_purges_are_published_and_done_here() -> None:
    store, bus = filled()
    assert store.drop_groups(["/a"]) == 1
    assert store.purge(prefix="/a") == 1
    assert store.purge() == 1
    assert [m for _, m in bus.published] == [{"op": "groups", "groups": ["/a"]},
                                             {"op": "purge", "path": None, "prefix": "/a"},
                                             {"op": "purge", "path": None, "prefix": None}]
    assert store.snapshot()["keys"] == 0


def test_a_siblings_drops_apply_before_a_read_or_a_write() -> None:
    store, bus = filled()
    bus.polls = 0
    bus.inbox.append({"op": "groups", "groups": ["/a", 7]})
    assert store.get_variants("k/a") == [] and store.get_variants("k/b") == [b"x"]
    bus.inbox.append({"op": "purge", "path": "/b", "prefix": None})
    store.put("k/c", "/c", "v", b"y", ttl=60)
    assert store.get_variants("k/b") == [] and store.get_variants("k/c") == [b"y"]
    assert bus.polls == 5 and bus.published == []  # a sibling's drop is not sent on again


def test_malformed_messages_change_nothing() -> None:
    store, bus = filled()
    bus.inbox += [{"op": "groups", "groups": "/a"}, {"op": "what"}, {}]
    assert store.get_variants("k/a") == [b"x"]


def test_a_gap_on_the_bus_drops_everything() -> None:
    store, bus = filled()
    assert bus.on_gap is not None
    bus.on_gap()
    assert store.snapshot() == {"keys": 0, "memory_used_bytes": 0}


def test_locks_are_the_memory_stores() -> None:
    store, _ = filled()
    assert store.source == "memory"
    assert store.try_lock("k", 1.0) == "local" and store.lock_and_read("k", 1.0) == ("local", None)
    assert not store.is_locked("k")
    store.release("k", "local")
