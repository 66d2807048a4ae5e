"""A per-worker memory store whose drops and purges reach the sibling workers (no Redis)."""

from __future__ import annotations

from gateway.cache.store import MemoryStore
from gateway.share.bus import InstanceBus

TOPIC = "cache"


class BroadcastMemoryStore:
    """A :class:`MemoryStore` that publishes its drops on the instance bus and applies its siblings'."""

    source = "memory"

    def __init__(self, store: MemoryStore, bus: InstanceBus) -> None:
        self.store = store
        self.bus = bus
        bus.subscribe(TOPIC, self._apply, on_gap=self._drop_everything)

    def _drop_everything(self) -> None:
        self.store.purge()  # the bus lost messages: nothing cached here can be trusted

    def _apply(self, message: dict[str, object]) -> None:
        """A sibling's drop or purge (what arrives is checked: the bus is only a file)."""
        groups = message.get("groups")
        if message.get("op") == "groups" and isinstance(groups, list):
            self.store.drop_groups([g for g in groups if isinstance(g, str)])
        elif message.get("op") == "purge":
            path, prefix = message.get("path"), message.get("prefix")
            self.store.purge(path=path if isinstance(path, str) else None,
                             prefix=prefix if isinstance(prefix, str) else None)

    def get_variants(self, key: str, direct: bool = False) -> list[bytes]:
        """Return the stored variants of ``key``, after applying the siblings' drops."""
        self.bus.poll()
        return self.store.get_variants(key, direct)

    def put(self, key: str, group: str, variant: str, blob: bytes, ttl: float,
            release: tuple[str, str] | None = None) -> bool:
        """Store a variant (see :meth:`MemoryStore.put`)."""
        self.bus.poll()
        return self.store.put(key, group, variant, blob, ttl, release)

    def drop_groups(self, groups: list[str]) -> int:
        """Drop the given paths here and in every sibling worker."""
        self.bus.publish(TOPIC, {"op": "groups", "groups": groups})
        return self.store.drop_groups(groups)

    def purge(self, path: str | None = None, prefix: str | None = None) -> int:
        """Purge here and in every sibling worker."""
        self.bus.publish(TOPIC, {"op": "purge", "path": path, "prefix": prefix})
        return self.store.purge(path=path, prefix=prefix)

    def try_lock(self, name: str, lease: float) -> str | None:
        """See :meth:`MemoryStore.try_lock`."""
        return self.store.try_lock(name, lease)

    def lock_and_read(self, name: str, lease: float) -> tuple[str | None, list[bytes] | None]:
        """See :meth:`MemoryStore.lock_and_read`."""
        return self.store.lock_and_read(name, lease)

    def read_or_lock(self, key: str, lease: float) -> tuple[list[bytes], str | None]:
        """See :meth:`MemoryStore.read_or_lock`."""
        return self.store.read_or_lock(key, lease)

    def release(self, name: str, token: str) -> None:
        """See :meth:`MemoryStore.release`."""
        self.store.release(name, token)

    def is_locked(self, name: str) -> bool:
        """See :meth:`MemoryStore.is_locked`."""
        return self.store.is_locked(name)

    def snapshot(self) -> dict[str, int]:
        """This worker's entry count and bytes."""
        return self.store.snapshot()
