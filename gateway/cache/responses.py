"""The cache a request meets (RFC 9111): lookup, save, invalidate, purge and snapshot, with coalescing and refresh.

``ResponseCache.begin`` is the forwarder's one entry point: it returns the exchange that carries the
request through the rest of the flow (``passthrough`` and ``exchange``); the exchange comes back here
for everything that touches the store. With a Redis link the entries live in Redis, shared by every
worker and instance; without one each worker has its own LRU. A store that fails never fails a
request: the request goes upstream with ``X-Cache: BYPASS``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from gateway.cache.broadcast import BroadcastMemoryStore
from gateway.cache.coalescing import POLL_SECONDS, Coalesced, Inflight, Lead
from gateway.cache.entry import Entry, Found, decode, encode
from gateway.cache.exchange import WriteExchange, begin_read
from gateway.cache.passthrough import Exchange
from gateway.cache.policy import keys, ranges
from gateway.cache.policy.directives import CacheControl
from gateway.cache.store import MemoryStore, RedisStore
from gateway.cache.tier import TieredStore
from gateway.clock import Clock, system_clock
from gateway.config.settings import Settings
from gateway.messages import Headers, ProxyCall
from gateway.redis.link import RedisLink, StoreUnavailable
from gateway.redis.slots import TAG_LENGTH, hash_tag
from gateway.share.bus import InstanceBus

log = logging.getLogger("gateway.cache")

PARTS_GROUP = "\x00parts"  # the markers' index: no request path looks like it
PARTS_RECHECK_S = 1.0  # how often a worker asks the store whether a service has stored parts
MEMO_MAX = 256  # hot requests' shared keys and decoded entries remembered per worker
MEMO_MAX_BYTES = 16 * 1024  # larger stored values are decoded each time (hashing them would cost more)

Store = MemoryStore | RedisStore | TieredStore | BroadcastMemoryStore
K = TypeVar("K")
V = TypeVar("V")


class CacheEvents(Protocol):
    """Where cache events such as ``coalesced`` are counted (the gateway's stats)."""

    def record_cache(self, event: str) -> None:
        """Count one event."""
        ...


def parts_marker(service: str) -> str:
    """The store key of the marker saying ``service`` has stored parts (in the slot of its own index)."""
    return hash_tag(PARTS_GROUP) + "parts:" + service


def _remember(memo: dict[K, V], key: K, value: V) -> None:
    """Keep ``value`` in a memo of at most ``MEMO_MAX`` items, forgetting the oldest first."""
    if len(memo) >= MEMO_MAX:
        memo.pop(next(iter(memo)), None)
    memo[key] = value


class ResponseCache:
    """Decides, per request, whether the answer comes from the cache, and stores what may be reused."""

    def __init__(self, settings: Settings, link: RedisLink | None, clock: Clock = system_clock,
                 stats: CacheEvents | None = None, store: Store | None = None, tier_seconds: float = 0.0,
                 bus: InstanceBus | None = None, tier_monotonic: Callable[[], float] | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.stats = stats
        if store is None and link is not None:
            store = RedisStore(link)
            if tier_seconds > 0:
                store = TieredStore(store, tier_seconds, max_entries=settings.cache_max_entries,
                                    **({"monotonic": tier_monotonic} if tier_monotonic is not None else {}))
        if store is None:
            memory = MemoryStore(settings.cache_max_entries, settings.cache_max_bytes, clock)
            # Several workers without Redis: drops must reach the sibling workers.
            store = BroadcastMemoryStore(memory, bus) if bus is not None else memory
        self.store: Store = store
        # Background refresh for stale-while-revalidate: build_gateway sets this to a function that
        # sends a call upstream through the normal flow (begin ... on_response) and drains its body.
        self.refresher: Callable[[ProxyCall], None] | None = None
        self._shared_keys: dict[tuple[str, str, str, str], str] = {}  # hot requests' shared keys, worked out once
        self._decoded: dict[bytes, Entry] = {}  # stored bytes -> their entry (entries are never changed in place)
        self._inflight = Inflight()
        self._refreshing: set[str] = set()
        self._parts: dict[str, tuple[float, bool]] = {}  # service -> (monotonic time read, marker found)
        self._lock = threading.Lock()

    @property
    def source(self) -> str:
        """Where the entries live (``memory`` or ``Redis``), for ``X-Cache-Source``."""
        return self.store.source

    # -- the forwarder's entry point ------------------------------------------------------------

    def begin(self, call: ProxyCall, coalesce: bool = True) -> Exchange:
        """The exchange for ``call``: a read looked up (waiting for a concurrent identical miss, if
        ``coalesce``), a write that will invalidate, or a pass-through."""
        method = call.method.upper()
        if not call.service.cache:
            return Exchange(call, "BYPASS")
        if method in keys.UNSAFE_METHODS:
            return WriteExchange(call, self)
        if method in keys.LOOKUP_METHODS:
            return begin_read(call, self, coalesce)
        return Exchange(call, "BYPASS")

    # -- lookup, save, invalidate ---------------------------------------------------------------

    # Every key of a path starts with the path's hash tag: on a Redis Cluster its entries, its index
    # and its locks share a slot (one script reaches them together), and paths spread over the slots.

    def _shared_key(self, call: ProxyCall) -> str:
        request = (call.host.lower(), call.service.name, call.path, call.query)
        shared = self._shared_keys.get(request)
        if shared is None:
            shared = hash_tag(call.path) + keys.shared_key(call)
            _remember(self._shared_keys, request, shared)
        return shared

    def _personal_key(self, call: ProxyCall) -> str:
        return self._shared_key(call)[:TAG_LENGTH + 2] + keys.personal_key(call)

    def _lookup_keys(self, call: ProxyCall) -> list[tuple[str, bool]]:
        """``keys.lookup_keys``, a personal key tagged as the shared one is."""
        return [(self._personal_key(call) if personal else key, personal)
                for key, personal in keys.lookup_keys(call, self._shared_key(call))]

    def lookup(self, call: ProxyCall, *, partial: bool = False, direct: bool = False,
               read: tuple[str, list[bytes]] | None = None) -> Found | None:
        """The newest stored whole answer (or with ``partial`` a 206) that matches ``call`` (raises StoreUnavailable).

        ``direct`` skips a per-worker tier, for coalesced waiters looking for what a leader just stored;
        ``read`` is one key's variants already read from the store (with the coalescing lock).
        """
        credentials = keys.has_credentials(call.headers)
        for key, personal in self._lookup_keys(call):
            if partial:
                key = keys.partial_key(key)
            blobs = read[1] if read is not None and read[0] == key else self.store.get_variants(key, direct)
            best: Entry | None = None
            for blob in blobs:
                entry = self._decode(blob)
                if entry is None or not entry.matches(call.headers) \
                        or not keys.reusable_by(credentials, personal, entry.cache_control):
                    continue
                if best is None or entry.response_time > best.response_time:
                    best = entry
            if best is not None:
                return Found(best, key)
        return None

    def lookup_or_lead(self, call: ProxyCall) -> tuple[Found | None, Lead | None]:
        """``lookup``; when nothing is stored under the request's one key, also the lead of its fetch,
        the store's lock taken by the same read (a miss's lookup, lock and double-check in one round trip).

        No lead (None) when another request leads, here or elsewhere, or the request has more than one
        key (credentials): then ``coalesce`` decides as usual.
        """
        lookup_keys = self._lookup_keys(call)
        name = lookup_keys[0][0]
        if len(lookup_keys) != 1 or self._inflight.led(name):
            return self.lookup(call), None
        blobs, token = self.store.read_or_lock(name, call.service.timeout + 1.0)
        if token is None:
            return self.lookup(call, read=(name, blobs)), None
        if self._inflight.join(name) is not None:
            # A request here began to lead between our read and now (threads; under gevent nothing runs
            # in between): it leads, and the store lock goes to it. Only the store lock is let go, never
            # its in-process lead (``release`` would wake its waiters as if it were done).
            try:
                self.store.release(name, token)
            except StoreUnavailable:
                pass  # the lease runs out by itself
            return None, None
        return None, Lead(name, token)

    def _decode(self, blob: bytes) -> Entry | None:
        """``decode`` with a small memo: a hot entry's bytes are parsed and checked once, not on every hit."""
        if len(blob) > MEMO_MAX_BYTES:
            return decode(blob)
        entry = self._decoded.get(blob)
        if entry is None:
            entry = decode(blob)
            if entry is not None:
                _remember(self._decoded, blob, entry)
        return entry

    def may_hold_parts(self, call: ProxyCall) -> bool:
        """Whether a stored part (206) of ``call``'s service may exist, so that a GET miss looks for one.

        A store that keeps a part also keeps a marker per service (an entry of its own, as long as the
        part); this worker reads it at most once every PARTS_RECHECK_S per service, so a GET miss costs no
        second store read. A part stored elsewhere within that second is only not completed: the whole
        answer is fetched, as without it.
        """
        name = call.service.name
        now = time.monotonic()
        seen = self._parts.get(name)
        if seen is None or now - seen[0] >= PARTS_RECHECK_S:
            try:
                found = bool(self.store.get_variants(parts_marker(name)))
            except StoreUnavailable:
                found = False
            seen = self._parts[name] = (now, found)
        return seen[1]

    def _mark_parts(self, service: str, ttl: float) -> None:
        """Note in the store that ``service`` has a stored part, for as long as the part is kept."""
        marker = parts_marker(service)
        self.store.put(marker, PARTS_GROUP, "parts", b"1", ttl)
        self._parts[service] = (time.monotonic(), True)

    def save(self, call: ProxyCall, entry: Entry, *, lead: Lead | None = None, key: str | None = None) -> bool:
        """Store ``entry`` while its freshness and stale windows last; False if not stored (raises StoreUnavailable).

        A new answer goes under the key the rules choose (a 206 under its partial key, and only if its
        body is the range it claims); a revalidated one under ``key``, where it was found. ``lead``'s
        store lock is released by the same store call.
        """
        if key is None:
            if not ranges.holds_its_range(entry.status, entry.headers, len(entry.body)):
                return False
            key = keys.key_for_status(self._personal_key(call) if entry.personal else self._shared_key(call),
                                      entry.status)
        ttl = entry.kept_for(self.settings.cache_stale_grace)
        if ttl <= 0:
            return False
        release = (lead.name, lead.token) if lead is not None and lead.token is not None else None
        saved = bool(self.store.put(key, call.path, entry.variant_id(), encode(entry), ttl, release=release))
        if saved and release is not None and lead is not None:
            lead.token = None  # released by the store call itself
        if saved and entry.status == 206:
            self._mark_parts(call.service.name, ttl)
        return saved

    def invalidate(self, call: ProxyCall, response_headers: Headers) -> int:
        """Drop the entries a successful write made stale (raises StoreUnavailable)."""
        return self.store.drop_groups(keys.invalidation_paths(call, response_headers))

    # -- coalescing -------------------------------------------------------------------------------

    def coalesce(self, call: ProxyCall, request_cc: CacheControl) -> Coalesced:
        """Let one request per key go upstream; others wait (at most the service timeout) for its stored answer.

        A waiter that meets a fresh answer reuses it (counted as ``coalesced``); one that does not goes
        upstream too, leading nothing. Raises StoreUnavailable only when the store fails mid-wait.
        """
        name = self._lookup_keys(call)[0][0]
        timeout = call.service.timeout
        event = self._inflight.join(name)
        if event is not None:
            event.wait(timeout)
            return self._leaders_answer(call, request_cc, Coalesced())
        lead = Lead(name)
        try:
            lead.token, read = self.store.lock_and_read(name, timeout + 1.0)
        except StoreUnavailable:
            return Coalesced(lead)
        if lead.token is not None:
            # Double-check: another process may have stored the answer between our lookup and our lock
            # (read with the lock, where the store can).
            return self._leaders_answer(call, request_cc, Coalesced(lead), None if read is None else (name, read))
        try:
            return self._wait_for_other_process(call, request_cc, lead, time.monotonic() + timeout)
        except StoreUnavailable:
            self.release(lead)
            raise

    def _wait_for_other_process(self, call: ProxyCall, request_cc: CacheControl, lead: Lead,
                                deadline: float) -> Coalesced:
        """Another process leads: poll for its stored answer until it lets go of its lock or ``deadline``."""
        waited = Coalesced(lead)
        while time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
            waited = self._leaders_answer(call, request_cc, waited)
            if waited.fresh:
                return waited
            if not self.store.is_locked(lead.name):
                return self._leaders_answer(call, request_cc, waited)
        return waited

    def _leaders_answer(self, call: ProxyCall, request_cc: CacheControl, waited: Coalesced,
                        read: tuple[str, list[bytes]] | None = None) -> Coalesced:
        """After waiting: the leader's stored answer, ``fresh`` when it may answer (then the lead is let go)."""
        try:
            found = self.lookup(call, direct=True, read=read)
        except StoreUnavailable:
            return waited
        if found is None:
            return waited
        if found.entry.reuse(request_cc, self.clock()) != "fresh":
            return Coalesced(waited.lead, found)
        self._record("coalesced")
        self.release(waited.lead)
        return Coalesced(None, found, fresh=True)

    def release(self, lead: Lead | None) -> None:
        """Let go of ``lead``: its store lock (if still its own) and its in-process lead, waking its waiters."""
        if lead is None:
            return
        if lead.token is not None:
            token, lead.token = lead.token, None
            try:
                self.store.release(lead.name, token)
            except StoreUnavailable:
                pass  # the lease runs out by itself
        self._inflight.leave(lead.name)

    # -- stale-while-revalidate -------------------------------------------------------------------

    def start_refresh(self, call: ProxyCall, found: Found) -> bool:
        """Start one background refresh of ``found`` (stale-while-revalidate); False if there is no refresher.

        True too when a refresh of it already runs, here or in another process.
        """
        refresher = self.refresher
        if refresher is None:
            return False
        name = found.key
        lock = "r:" + name  # the store lock of the refresh, apart from the key's coalescing lock
        with self._lock:
            if name in self._refreshing:
                return True
            self._refreshing.add(name)
        try:
            token = self.store.try_lock(lock, call.service.timeout + 1.0)
        except StoreUnavailable:
            token = None
        if token is None:
            with self._lock:
                self._refreshing.discard(name)
            return True  # another process refreshes it

        def run() -> None:
            try:
                refresh = ProxyCall(**{**call.__dict__, "headers": [*call.headers, ("Cache-Control", "no-cache")]})
                refresher(refresh)
            except Exception:  # a failed refresh only means the next request goes upstream
                log.debug("background refresh failed", exc_info=True)
            finally:
                with self._lock:
                    self._refreshing.discard(name)
                try:
                    self.store.release(lock, token)
                except StoreUnavailable:
                    pass

        threading.Thread(target=run, name="cache-refresh", daemon=True).start()
        return True

    def _record(self, event: str) -> None:
        """Tell the stats (if any) about a cache event such as ``coalesced``."""
        if self.stats is not None:
            try:
                self.stats.record_cache(event)
            except Exception:  # stats must never fail a request
                log.debug("stats.record_cache failed", exc_info=True)

    # -- admin and stats --------------------------------------------------------------------------

    def purge(self, path: str | None = None, prefix: str | None = None) -> dict[str, int | str]:
        """Drop one path's entries, a subtree's, or (neither given) all; e.g. ``{"purged": 3}``."""
        purged = self.store.purge(path=path, prefix=prefix)
        summary: dict[str, int | str] = {"purged": purged, "store": self.store.source}
        if path is not None:
            summary["path"] = path
        if prefix is not None:
            summary["prefix"] = prefix
        return summary

    def snapshot(self) -> dict[str, int]:
        """``{"keys": n, "memory_used_bytes": n}`` for ``/stats/cache`` (zeros when the store is down)."""
        try:
            return self.store.snapshot()
        except StoreUnavailable:
            return {"keys": 0, "memory_used_bytes": 0}
