"""The instance bus: invalidations and forced breaker states reach sibling workers without Redis."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.breaker.registry import BreakerRegistry
from gateway.cache.broadcast import BroadcastMemoryStore
from gateway.cache.store import MemoryStore
from gateway.clock import FakeClock
from gateway.config.settings import load_settings
from gateway.errors import CircuitOpen
from gateway.share import bus as instance_bus
from gateway.share.bus import InstanceBus


class Ticker:
    """A monotonic clock that moves past the poll interval on every read."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def worker_bus(run_dir: Path, pid: int) -> InstanceBus:
    return InstanceBus(str(run_dir), monotonic=Ticker(), pid=pid)


def worker_store(run_dir: Path, pid: int) -> BroadcastMemoryStore:
    return BroadcastMemoryStore(MemoryStore(100, 1_000_000, FakeClock()), worker_bus(run_dir, pid))


def test_a_drop_in_one_worker_reaches_the_others(tmp_path: Path) -> None:
    one, two, three = (worker_store(tmp_path, pid) for pid in (1, 2, 3))
    for store in (one, two, three):
        store.put("k1", "/orders/1", "v", b"body", 60)
        store.put("k2", "/orders/2", "v", b"body", 60)
    one.drop_groups(["/orders/1"])
    assert one.get_variants("k1") == []
    assert two.get_variants("k1") == [] and three.get_variants("k1") == []
    assert two.get_variants("k2") == [b"body"]


def test_purges_reach_the_others(tmp_path: Path) -> None:
    one, two = worker_store(tmp_path, 1), worker_store(tmp_path, 2)
    two.put("k1", "/orders/1", "v", b"x", 60)
    two.put("k2", "/restaurants/1", "v", b"y", 60)
    one.purge(prefix="/orders/")
    assert two.get_variants("k1") == [] and two.get_variants("k2") == [b"y"]
    one.purge()
    assert two.get_variants("k2") == []


def test_a_replaced_log_makes_readers_drop_everything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(instance_bus, "MAX_LOG_BYTES", 200)
    one, two = worker_store(tmp_path, 1), worker_store(tmp_path, 2)
    two.put("kept", "/delivery/1", "v", b"x", 60)
    two.get_variants("kept")
    for i in range(10):  # grows the log past its bound, so a writer replaces it
        one.drop_groups([f"/orders/{i}" * 5])
    assert two.get_variants("kept") == []  # it may have missed drops: it keeps nothing


def test_forced_breaker_state_reaches_every_worker(tmp_path: Path) -> None:
    settings = load_settings({})
    registries = [BreakerRegistry(settings, None, bus=worker_bus(tmp_path, pid)) for pid in (1, 2)]
    registries[0].force("order-service", "open")
    with pytest.raises(CircuitOpen):
        registries[1]["order-service"].before_call()
    registries[1].force("order-service", "close")
    registries[0]["order-service"].before_call()


def test_a_worker_started_after_a_forced_state_holds_it_too(tmp_path: Path) -> None:
    settings = load_settings({})
    first = BreakerRegistry(settings, None, bus=worker_bus(tmp_path, 1))
    first.force("order-service", "open")
    first.force("delivery-service", "open")
    first.force("delivery-service", "reset")
    later = BreakerRegistry(settings, None, bus=worker_bus(tmp_path, 2))  # booted after the operator acted
    with pytest.raises(CircuitOpen):
        later["order-service"].before_call()
    later["delivery-service"].before_call()  # the later reset holds too: messages replay in order


def test_own_messages_are_not_applied_twice(tmp_path: Path) -> None:
    store = worker_store(tmp_path, 1)
    store.put("k", "/orders/1", "v", b"x", 60)
    store.drop_groups(["/orders/1"])
    store.put("k", "/orders/1", "v", b"fresh", 60)
    assert store.get_variants("k") == [b"fresh"]
