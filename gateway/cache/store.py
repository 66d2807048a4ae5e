"""Where cached responses live: a per-worker LRU, or Redis shared by every worker and instance.

Both stores hold, under one primary key, the encoded variants of one URL (one per ``Vary`` value
set), and index every primary key by the path it belongs to, so a write to a path drops all its
queries, variants and users at once. Values are opaque bytes here; ``entry`` decodes them.
Redis errors surface as :class:`StoreUnavailable`; the cache turns them into ``X-Cache: BYPASS``.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

from gateway.cache.lua import LuaScript
from gateway.clock import Clock, system_clock
from gateway.redis.link import RedisLink, StoreUnavailable
from gateway.redis.slots import ANY_TAG, hash_tag

__all__ = ["MemoryStore", "RedisStore", "StoreUnavailable"]


@dataclass
class _Slot:
    group: str
    expires_at: float
    variants: dict[str, bytes] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return sum(len(v) + len(k) for k, v in self.variants.items()) + len(self.group) + 64


class MemoryStore:
    """A per-worker LRU bounded by entry count and bytes, expiring on the injected clock."""

    source = "memory"

    def __init__(self, max_entries: int, max_bytes: int, clock: Clock = system_clock) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._slots: OrderedDict[str, _Slot] = OrderedDict()
        self._groups: dict[str, set[str]] = {}
        self._bytes = 0
        self._locks: dict[str, float] = {}
        self._lock = threading.Lock()

    def get_variants(self, key: str, direct: bool = False) -> list[bytes]:
        """Return every stored variant of ``key`` (most recently used moves to the front)."""
        with self._lock:
            slot = self._slots.get(key)
            if slot is None:
                return []
            if slot.expires_at <= self._clock():
                self._remove(key)
                return []
            self._slots.move_to_end(key)
            return list(slot.variants.values())

    def put(self, key: str, group: str, variant: str, blob: bytes, ttl: float,
            release: tuple[str, str] | None = None) -> bool:
        """Store one variant under ``key`` for ``ttl`` seconds, indexed under ``group`` (the path).

        ``release`` (a coalescing lock and its token) needs no releasing in a per-worker store.
        """
        with self._lock:
            if len(blob) > self.max_bytes:
                return False
            now = self._clock()
            slot = self._slots.get(key)
            if slot is None or slot.expires_at <= now:
                if slot is not None:
                    self._remove(key)
                slot = _Slot(group=group, expires_at=now + ttl)
                self._slots[key] = slot
                self._groups.setdefault(group, set()).add(key)
            else:
                self._bytes -= slot.size
                slot.expires_at = max(slot.expires_at, now + ttl)
            slot.variants[variant] = blob
            self._bytes += slot.size
            self._slots.move_to_end(key)
            while self._slots and (len(self._slots) > self.max_entries or self._bytes > self.max_bytes):
                self._remove(next(iter(self._slots)))
            return key in self._slots

    def _remove(self, key: str) -> None:
        slot = self._slots.pop(key, None)
        if slot is None:
            return
        self._bytes -= slot.size
        members = self._groups.get(slot.group)
        if members is not None:
            members.discard(key)
            if not members:
                del self._groups[slot.group]

    def drop_groups(self, groups: list[str]) -> int:
        """Drop every entry of the given paths; return how many primary keys went."""
        with self._lock:
            dropped = 0
            for group in groups:
                for key in list(self._groups.get(group, ())):
                    self._remove(key)
                    dropped += 1
            return dropped

    def purge(self, path: str | None = None, prefix: str | None = None) -> int:
        """Drop one path, a subtree, or (neither given) everything; return how many keys went."""
        if path is not None:
            return self.drop_groups([path])
        with self._lock:
            groups = [g for g in self._groups if prefix is None or g.startswith(prefix)]
        if prefix is not None:
            return self.drop_groups(groups)
        with self._lock:
            count = len(self._slots)
            self._slots.clear()
            self._groups.clear()
            self._bytes = 0
            return count

    def try_lock(self, name: str, lease: float) -> str | None:
        """Within one worker the cache's own events coalesce; the store lock always succeeds."""
        return "local"

    def lock_and_read(self, name: str, lease: float) -> tuple[str | None, list[bytes] | None]:
        """:meth:`try_lock`; nothing is read with it here (None: look the entry up as usual)."""
        return self.try_lock(name, lease), None

    def read_or_lock(self, key: str, lease: float) -> tuple[list[bytes], str | None]:
        """``key``'s variants and no lock (None: within one worker the cache's own events coalesce)."""
        return self.get_variants(key), None

    def release(self, name: str, token: str) -> None:
        """Nothing to release in a per-worker store."""

    def is_locked(self, name: str) -> bool:
        """Never locked by another process."""
        return False

    def snapshot(self) -> dict[str, int]:
        """Entry count and bytes held by this worker."""
        with self._lock:
            return {"keys": len(self._slots), "memory_used_bytes": self._bytes}


# Loaded once, at import; each file's header names its KEYS and ARGV.
PUT = LuaScript.beside(__file__, "put")
LOCK_AND_READ = LuaScript.beside(__file__, "lock_and_read")
READ_OR_LOCK = LuaScript.beside(__file__, "read_or_lock")
READ_MISS = LuaScript.beside(__file__, "read_miss")
DROP = LuaScript.beside(__file__, "drop")
RELEASE = LuaScript.beside(__file__, "release")


def _glob_escape(text: str) -> str:
    """Escape Redis MATCH pattern characters so a path is matched literally."""
    return "".join("\\" + c if c in "*?[]\\^" else c for c in text)


class RedisNames:
    """Every Redis key and channel the cache uses, built here and nowhere else.

    Every key of one path carries the path's hash tag (``gateway.redis.slots``): an entry's key starts
    with it (``policy.keys``), and so do its path index's and its locks', so each script call reaches
    keys of one cluster slot.
    """

    def __init__(self, link: RedisLink) -> None:
        self.link = link

    def entry(self, key: str) -> str:
        """The hash holding the variants of primary key ``key``."""
        return self.link.key("cache", "e", key)

    def group(self, group: str) -> str:
        """The set of entry keys indexed under the path ``group`` (the path's hash tag, then the path)."""
        return self.link.key("cache", "p", hash_tag(group) + group)

    @property
    def group_head(self) -> str:
        """What every path index's key starts with, before the path's hash tag."""
        return self.link.key("cache", "p", "")

    def lock(self, name: str) -> str:
        """The cross-process coalescing lock ``name``."""
        return self.link.key("cache", "l", name)

    def missed(self, key: str) -> str:
        """Set while a worker keeps a copy of the miss of primary key ``key`` (its store is then announced)."""
        return self.link.key("cache", "m", key)

    @property
    def channel(self) -> str:
        """The pub/sub channel announcing stores and drops to every worker's tier."""
        return self.link.key("cache", "invalidate")

    @property
    def every_key(self) -> str:
        """What every cache key starts with (a purge of everything scans for it)."""
        return self.link.key("cache", "")


class RedisStore:
    """Entries in Redis hashes, path indexes in Redis sets, named by :class:`RedisNames`."""

    source = "Redis"

    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self.names = RedisNames(link)
        self._put = PUT.register(link)
        self._drop = DROP.register(link)
        self._release = RELEASE.register(link)
        self._lock_and_read = LOCK_AND_READ.register(link)
        self._read_or_lock = READ_OR_LOCK.register(link)
        self._read_miss = READ_MISS.register(link)

    def get_variants(self, key: str, direct: bool = False, copied_for: float = 0.0) -> list[bytes]:
        """Return every stored variant of ``key`` (``direct`` matters only to a tier in front).

        ``copied_for``: the reader keeps a copy of what it reads for that many seconds, so a miss is noted
        for as long (a store of the key then announces itself, see ``put.lua``).
        """
        if copied_for > 0:
            values = self._read_miss(entry=self.names.entry(key), missed=self.names.missed(key),
                                     copy_ms=int(copied_for * 1000) + 1)
        else:
            entry = self.names.entry(key)
            values = self.link.command("HVALS", entry, key=entry)
        return [v for v in values if isinstance(v, bytes)]

    def read_or_lock(self, key: str, lease: float) -> tuple[list[bytes], str | None]:
        """``key``'s variants; when it has none, also its coalescing lock taken in the same call (the token),
        or None when another process holds it."""
        token = uuid.uuid4().hex
        reply = self._read_or_lock(entry=self.names.entry(key), lock=self.names.lock(key), token=token,
                                   lease_ms=max(1, int(lease * 1000)))
        if reply and reply[0] == 1:
            return [], token
        return [v for v in reply[1:] if isinstance(v, bytes)], None

    def put(self, key: str, group: str, variant: str, blob: bytes, ttl: float,
            announce: tuple[str, bytes] | None = None, release: tuple[str, str] | None = None) -> bool:
        """Store one variant with a TTL (milliseconds, at least 1 s) and index it under its path.

        ``announce`` (channel, message) is published (where a worker may hold a copy of the key: see
        ``put.lua``) and ``release`` (lock name, token) released by the same script, at no extra round trip.
        """
        lock, token = release or (key, "")  # no release: the script does not touch the lock, named in the same slot
        channel, message = announce or ("", b"")
        self._put(entry=self.names.entry(key), group=self.names.group(group), lock=self.names.lock(lock),
                  missed=self.names.missed(key), variant=variant, blob=blob, ttl_ms=max(1000, int(ttl * 1000)),
                  channel=channel, message=message, token=token)
        return True

    def drop_groups(self, groups: list[str]) -> int:
        """Drop every entry of the given paths; return how many keys went."""
        dropped = 0
        for indexes in self.link.by_slot([self.names.group(g) for g in groups]):  # one call, or one per cluster slot
            dropped += int(self._drop(groups=indexes))
        return dropped

    def purge(self, path: str | None = None, prefix: str | None = None) -> int:
        """Drop one path, a subtree, or (neither given) every cache key under the gateway's prefix."""
        if path is not None:
            return self.drop_groups([path])
        count = 0
        if prefix is not None:
            head = self.names.group_head
            for batch in self.link.scan(_glob_escape(head) + ANY_TAG + _glob_escape(prefix) + "*"):  # every primary
                count += self.drop_groups([k[len(head) + len(ANY_TAG):] for k in batch])
            return count
        entry_head = self.names.entry("")
        for batch in self.link.scan(_glob_escape(self.names.every_key) + "*"):
            count += sum(1 for k in batch if k.startswith(entry_head))
            self.link.run(lambda c: c.unlink(*batch))  # noqa: B023 (run calls it at once)
        return count

    def try_lock(self, name: str, lease: float) -> str | None:
        """Take the cross-process coalescing lock for ``name``; return its token, or None if held elsewhere."""
        token = uuid.uuid4().hex
        lease_ms = max(1, int(lease * 1000))
        got = self.link.run(lambda c: c.set(self.names.lock(name), token, nx=True, px=lease_ms))
        return token if got else None

    def lock_and_read(self, name: str, lease: float) -> tuple[str | None, list[bytes] | None]:
        """Take the lock for ``name`` and, if it is ours, read that key's variants in the same call."""
        token = uuid.uuid4().hex
        values = self._lock_and_read(lock=self.names.lock(name), entry=self.names.entry(name), token=token,
                                     lease_ms=max(1, int(lease * 1000)))
        if not isinstance(values, list):
            return None, None
        return token, [v for v in values if isinstance(v, bytes)]

    def release(self, name: str, token: str) -> None:
        """Release the lock if it is still ours.

        Sent even while the link skips Redis after a failure: a lock left behind would make every other
        process's request for the key wait out its lease (the service timeout) before going upstream.
        """
        self._release(lock=self.names.lock(name), token=token, always=True)

    def is_locked(self, name: str) -> bool:
        """True while another process holds the lock for ``name``."""
        return bool(self.link.run(lambda c: c.exists(self.names.lock(name))))

    def snapshot(self) -> dict[str, int]:
        """Cache entry keys (counted with SCAN) and the Redis server's memory in use."""
        keys = sum(len(batch) for batch in self.link.scan(_glob_escape(self.names.entry("")) + "*"))
        return {"keys": keys, "memory_used_bytes": self.link.used_memory()}
