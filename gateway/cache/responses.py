"""The gateway's shared HTTP cache (RFC 9111): keys, lookup, storage, coalescing, invalidation, purge.

``ResponseCache.begin`` is the forwarder's one entry point; it returns the :class:`Exchange` that
carries the request through the rest of the flow (see ``cache_exchange``). With a Redis link the
entries live in Redis, shared by every worker and instance; without one each worker has its own LRU.
A store that fails never fails a request: the request goes upstream with ``X-Cache: BYPASS``.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from gateway.cache import policy
from gateway.cache.broadcast import BroadcastMemoryStore
from gateway.cache.entry import Entry, decode, encode
from gateway.cache.passthrough import Exchange
from gateway.cache.store import MemoryStore, RedisStore
from gateway.cache.tier import TieredStore
from gateway.clock import Clock, system_clock
from gateway.config.settings import Settings
from gateway.messages import Headers, ProxyCall, header_values
from gateway.redis.link import RedisLink, StoreUnavailable
from gateway.share.bus import InstanceBus

log = logging.getLogger("gateway.cache")

REVALIDATE_KEEP_S = 300.0  # an expired entry with a validator is kept this long to be revalidated (a 304)
DECODED_MAX = 256  # decoded entries remembered per worker
DECODED_MAX_BYTES = 16 * 1024  # larger values are decoded each time (hashing them would cost more)


def sorted_query(query: str) -> str:
    """The query string with its parameters in a stable order (``b=2&a=1`` and ``a=1&b=2`` share a key)."""
    return "&".join(sorted(part for part in query.split("&") if part))


def _digest(*parts: str) -> str:
    material = "\0".join(parts).encode("utf-8", "surrogateescape")
    return hashlib.sha256(material).hexdigest()[:40]


def _parent(path: str) -> str:
    trimmed = path.rstrip("/")
    head = trimmed.rsplit("/", 1)[0]
    return head or "/"


def invalidation_paths(call: ProxyCall, response_headers: Headers) -> list[str]:
    """The paths a successful write drops: its own, its parent, and the Location/Content-Location on this service."""
    parent = _parent(call.path)
    paths = {call.path, call.path.rstrip("/") or "/", parent, parent.rstrip("/") + "/"}
    prefix = call.service.prefix
    for name in ("Location", "Content-Location"):
        for value in header_values(response_headers, name):
            parts = urlsplit(value.strip())
            if parts.netloc and parts.netloc.lower() != call.host.lower():
                continue  # another host: not one of this service's entries
            target = parts.path
            if not target:
                continue
            if not target.startswith("/"):
                target = call.path.rsplit("/", 1)[0] + "/" + target  # relative reference
            # The service may name its own path (prefix stripped) or the gateway's; drop both readings.
            if target == prefix or target.startswith(prefix + "/"):
                paths.add(target)
            if call.service.strip_prefix:
                paths.add(prefix + target if target != "/" else prefix)
    return sorted(paths)


def partial_key(key: str) -> str:
    """Where the partial (206) entries of a primary key are stored."""
    return key + ":partial"


class ResponseCache:
    """Decides, per request, whether the answer comes from the cache, and stores what may be reused."""

    def __init__(self, settings: Settings, link: RedisLink | None, clock: Clock = system_clock,
                 stats: Any = None, store: Any = None, tier_seconds: float = 0.0,
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
            store = MemoryStore(settings.cache_max_entries, settings.cache_max_bytes, clock)
            if bus is not None:
                store = BroadcastMemoryStore(store, bus)  # drops must reach the sibling workers
        self.store: MemoryStore | RedisStore | TieredStore | BroadcastMemoryStore = store
        # Background refresh for stale-while-revalidate: build_gateway sets this to a function that
        # sends a call upstream through the normal flow (begin ... on_response) and drains its body.
        self.refresher: Callable[[ProxyCall], None] | None = None
        self._shared_keys: dict[tuple[str, str, str, str], str] = {}  # hot requests' shared keys, worked out once
        self._decoded: dict[bytes, Entry] = {}  # stored bytes -> their entry (entries are never changed in place)
        self._inflight: dict[str, threading.Event] = {}
        self._refreshing: set[str] = set()
        self._lock = threading.Lock()

    # -- the forwarder's entry point ------------------------------------------------------------

    def begin(self, call: ProxyCall, coalesce: bool = True) -> Exchange:
        """Look the request up (waiting for a concurrent identical miss, if ``coalesce``) and return its exchange."""
        from gateway.cache.exchange import CachedExchange, InvalidatingExchange

        method = call.method.upper()
        if not call.service.cache:
            return Exchange(call, "BYPASS")
        if method in policy.UNSAFE_METHODS:
            return InvalidatingExchange(self, call)
        if method not in ("GET", "HEAD"):
            return Exchange(call, "BYPASS")
        exchange = CachedExchange(self, call)
        try:
            exchange.lookup(coalesce)
        except StoreUnavailable as exc:
            log.debug("cache store unavailable, bypassing: %s", exc)
            exchange.close()
            if "only-if-cached" in exchange.req_cc:
                from gateway.errors import OnlyIfCached

                raise OnlyIfCached(service=call.service.name) from None
            return Exchange(call, "BYPASS")
        return exchange

    # -- keys, lookup and storage ---------------------------------------------------------------

    def keys_for(self, call: ProxyCall) -> list[tuple[str, bool]]:
        """Primary keys to look in, each with whether it is credential-keyed (personal) or shared."""
        request = (call.host.lower(), call.service.name, call.path, call.query)
        shared = self._shared_keys.get(request)
        if shared is None:
            shared = _digest(*request[:3], sorted_query(call.query))
            if len(self._shared_keys) >= DECODED_MAX:
                self._shared_keys.pop(next(iter(self._shared_keys)), None)
            self._shared_keys[request] = shared
        if not policy.has_credentials(call.headers):
            return [(shared, False)]
        keys = [(_digest(*request[:3], sorted_query(call.query), policy.credential_digest(call.headers)), True)]
        if call.service.share_public_across_users:
            keys.append((shared, False))
        return keys

    def find(self, call: ProxyCall, direct: bool = False,
             read: tuple[str, list[bytes]] | None = None) -> tuple[Entry, str] | None:
        """Return the newest stored variant that matches the request, with its key (raises StoreUnavailable).

        ``direct`` skips a per-worker tier, for coalesced waiters looking for what a leader just stored;
        ``read`` is one key's variants already read from the store (with the coalescing lock).
        """
        credentials = policy.has_credentials(call.headers)
        for key, personal in self.keys_for(call):
            best: Entry | None = None
            blobs = read[1] if read is not None and read[0] == key else self.store.get_variants(key, direct)
            for blob in blobs:
                entry = self._decode(blob)
                if entry is None or not entry.matches(call.headers):
                    continue
                if credentials and not personal and "public" not in entry.cache_control:
                    continue  # a credentialed request reuses a shared entry only when it is public
                if best is None or entry.response_time > best.response_time:
                    best = entry
            if best is not None:
                return best, key
        return None

    def find_partial(self, call: ProxyCall) -> tuple[Entry, str] | None:
        """The newest stored partial (206) variant that matches the request, with its key (raises StoreUnavailable).

        Partial entries live under their own keys, so a lookup for a whole answer never meets one.
        """
        for key, personal in self.keys_for(call):
            found = self._newest(call, partial_key(key), personal)
            if found is not None:
                return found, partial_key(key)
        return None

    def _newest(self, call: ProxyCall, key: str, personal: bool) -> Entry | None:
        best: Entry | None = None
        credentials = policy.has_credentials(call.headers)
        for blob in self.store.get_variants(key):
            entry = self._decode(blob)
            if entry is None or not entry.matches(call.headers):
                continue
            if credentials and not personal and "public" not in entry.cache_control:
                continue
            if best is None or entry.response_time > best.response_time:
                best = entry
        return best

    def _decode(self, blob: bytes) -> Entry | None:
        """``decode`` with a small memo: a hot entry's bytes are parsed and checked once, not on every hit."""
        if len(blob) > DECODED_MAX_BYTES:
            return decode(blob)
        entry = self._decoded.get(blob)
        if entry is None:
            entry = decode(blob)
            if entry is not None:
                if len(self._decoded) >= DECODED_MAX:
                    self._decoded.pop(next(iter(self._decoded), b""), None)
                self._decoded[blob] = entry
        return entry

    def key_to_store(self, call: ProxyCall, entry: Entry) -> str:
        """The key a new response goes under: personal for credentials unless shared public is allowed."""
        keys = self.keys_for(call)
        if len(keys) == 2 and "public" in entry.cache_control:
            entry.credential_keyed = False
            return keys[1][0]
        entry.credential_keyed = keys[0][1]
        return keys[0][0]

    def save(self, call: ProxyCall, key: str, entry: Entry, release: tuple[str, str] | None = None) -> bool:
        """Store ``entry`` under ``key`` with a TTL covering freshness and the stale windows; False if not worth it.

        ``release`` (the leader's coalescing lock and token) is let go by the same store call.
        """
        cc = entry.cache_control
        remaining = entry.lifetime - policy.initial_age(entry.headers, entry.request_time, entry.response_time)
        extra = max(self.settings.cache_stale_grace, policy.seconds(cc, "stale-if-error") or 0.0,
                    policy.seconds(cc, "stale-while-revalidate") or 0.0)
        if policy.has_validator(entry.headers):
            extra = max(extra, REVALIDATE_KEEP_S)  # kept so a later request revalidates instead of refetching
        ttl = max(0.0, remaining) + extra
        if ttl <= 0:
            return False
        return bool(self.store.put(key, call.path, entry.variant_id(), encode(entry), ttl, release=release))

    def invalidate(self, call: ProxyCall, response_headers: Headers) -> int:
        """Drop the entries a successful write made stale (raises StoreUnavailable)."""
        return self.store.drop_groups(invalidation_paths(call, response_headers))

    # -- coalescing -------------------------------------------------------------------------------

    def join(self, name: str) -> threading.Event | None:
        """Lead the in-process fetch of ``name`` (return None) or get the leader's event to wait on."""
        with self._lock:
            event = self._inflight.get(name)
            if event is not None:
                return event
            self._inflight[name] = threading.Event()
            return None

    def leave(self, name: str) -> None:
        """End the in-process lead of ``name`` and wake its waiters."""
        with self._lock:
            event = self._inflight.pop(name, None)
        if event is not None:
            event.set()

    def start_refresh(self, call: ProxyCall, name: str) -> bool:
        """Start one background refresh of ``name`` (stale-while-revalidate); False if unavailable or running."""
        refresher = self.refresher
        if refresher is None:
            return False
        with self._lock:
            if name in self._refreshing:
                return True
            self._refreshing.add(name)
        try:
            token = self.store.try_lock("r:" + name, call.service.timeout + 1.0)
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
                    self.store.release("r:" + name, token)
                except StoreUnavailable:
                    pass

        threading.Thread(target=run, name="cache-refresh", daemon=True).start()
        return True

    def record(self, event: str) -> None:
        """Tell the stats object (if any) about a cache event such as ``coalesced``."""
        if self.stats is not None:
            try:
                self.stats.record_cache(event)
            except Exception:  # stats must never fail a request
                log.debug("stats.record_cache failed", exc_info=True)

    # -- admin and stats --------------------------------------------------------------------------

    def purge(self, path: str | None = None, prefix: str | None = None) -> dict[str, Any]:
        """Drop one path's entries, a subtree's, or (neither given) all; e.g. ``{"purged": 3}``."""
        purged = self.store.purge(path=path, prefix=prefix)
        summary: dict[str, Any] = {"purged": purged, "store": self.store.source}
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
