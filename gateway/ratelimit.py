"""Rate limiting per service (and path prefix): GCRA, in Redis for the whole gateway or in memory per worker.

Each limit (``10/s``) is a GCRA cell: one number per client, the *theoretical arrival time* (TAT) of
its next request. A limit of ``q`` per ``w`` seconds lets a client spend its ``q`` requests at once
and earns one back every ``w/q`` seconds, so no client ever gets more than ``q`` in a row, nor more
than one per ``w/q`` seconds on average. A request passes only if every limit of its rule lets it;
a refused request spends nothing.

With Redis, one EVALSHA a request decides every limit of the rule at once on Redis's own clock
(``TIME``), so every worker and instance shares one count per client. Keys (``{…}`` is a hash tag:
the limits of one client stay in one cluster slot, as one script call needs)::

    <prefix>rl:{<digest of service, rule and client>}:<window seconds>   string  TAT in microseconds

each with a TTL of the time until its client is back to a full quota (then the key means nothing).
When Redis cannot be reached, the rule's ``redis_down`` decides: ``open`` lets the request through,
``closed`` refuses it (503 ``rate_limit_unavailable``), ``local`` counts it in this worker's memory.

Without Redis every worker keeps its own cells, bounded in number, on the injected clock.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.cache_policy import credential_digest
from gateway.clock import Clock, system_clock
from gateway.errors import RateLimited, RateLimitUnavailable
from gateway.messages import Headers, ProxyCall
from gateway.redis_link import RedisLink, StoreUnavailable
from gateway.traffic_config import LimitRule, RateLimitSettings

EPSILON = 1e-9  # float slack: a request exactly on time passes
MEMORY_CELLS = 100_000  # per worker; the least recently used client is forgotten past this

# KEYS: one per limit. ARGV: per limit, its emission interval and its window, in microseconds.
# Returns {refused, then per limit: remaining, reset in microseconds}: for a passed request what is
# left after it and when the quota is whole again; for a refused one, on a limit that refused it,
# 0 and the wait until one more request would pass.
GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tats, out, spare, refused = {}, {0}, {}, 0
for i = 1, #KEYS do
  local interval, window = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '') or now
  if tat < now then tat = now end
  local new = tat + interval
  tats[i] = new
  if new - window > now then
    refused = 1
    out[2 * i], out[2 * i + 1] = 0, new - window - now
  else
    out[2 * i], out[2 * i + 1] = math.floor((now + window - new) / interval), new - now
    spare[i] = {math.floor((now + window - tat) / interval), tat - now}
  end
end
if refused == 1 then
  out[1] = 1
  for i, left in pairs(spare) do out[2 * i], out[2 * i + 1] = left[1], left[2] end
  return out
end
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], string.format('%.0f', tats[i]), 'PX', math.max(1, math.ceil((tats[i] - now) / 1000)))
end
return out
"""


@dataclass
class Verdict:
    """What one rule said of one request: per limit ``(remaining, reset seconds)``, and whether it passes."""

    refused: bool
    states: list[tuple[int, float]]


def _gcra(tats: list[float], rule: LimitRule, now: float) -> Verdict:
    """The script's decision, in Python (seconds): updates ``tats`` in place when the request passes."""
    news: list[float] = []
    states: list[tuple[int, float]] = []
    spare: list[tuple[int, tuple[int, float]]] = []
    refused = False
    index = 0
    for interval, window, _ in rule.steps:
        tat = tats[index]
        if tat < now:
            tat = now
        new = tat + interval
        news.append(new)
        if new - window > now + EPSILON:
            refused = True
            states.append((0, new - window - now))
        else:
            states.append((int((now + window - new) / interval + EPSILON), new - now))
            spare.append((index, (int((now + window - tat) / interval + EPSILON), tat - now)))
        index += 1
    if refused:
        for index, left in spare:
            states[index] = left  # this limit did not refuse: what it has left, nothing spent
        return Verdict(True, states)
    tats[:] = news
    return Verdict(False, states)


class MemoryCells:
    """GCRA cells of one worker, least recently used forgotten past ``bound``; times from ``clock``."""

    def __init__(self, clock: Clock = system_clock, bound: int = MEMORY_CELLS) -> None:
        self.clock = clock
        self.bound = bound
        self._cells: OrderedDict[str, list[float]] = OrderedDict()
        self._lock = threading.Lock()

    def decide(self, key: str, rule: LimitRule) -> Verdict:
        """Decide one request of ``key`` under ``rule``."""
        now = self.clock()
        with self._lock:
            tats = self._cells.get(key)
            if tats is None:
                tats = [now] * len(rule.limits)
                self._cells[key] = tats
                if len(self._cells) > self.bound:
                    self._cells.popitem(last=False)
            else:
                self._cells.move_to_end(key)
            return _gcra(tats, rule, now)

    def __len__(self) -> int:
        return len(self._cells)


def client_key(settings: RateLimitSettings, call: ProxyCall) -> str:
    """Who the request is counted for: its IP (after the trusted-proxy rule), API key or credentials.

    Secrets are never kept: a header's value and the credentials are digested. A request without
    the header (or without credentials) is counted by its IP.
    """
    if settings.key == "header":
        value = call.header(settings.header or "")
        if value:
            return "h:" + hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    elif settings.key == "credentials":
        if call.header("Authorization") is not None or call.header("Cookie") is not None:
            return "c:" + credential_digest(call.headers)[:32]
    return "ip:" + call.client_ip


def _seconds(value: float) -> int:
    whole = int(value)
    return whole + 1 if value - whole > EPSILON else whole


def limit_headers(rule: LimitRule, verdict: Verdict) -> Headers:
    """``RateLimit-Policy`` and ``RateLimit`` (draft-ietf-httpapi-ratelimit-headers) for one decision."""
    parts = []
    for (_, _, head), (remaining, reset) in zip(rule.steps, verdict.states, strict=True):
        parts.append(f"{head}{remaining};t={_seconds(reset)}")
    return [("RateLimit-Policy", rule.policy), ("RateLimit", ", ".join(parts))]


class RateLimiter:
    """Decides, once per request, whether a client is within its service's limits."""

    def __init__(self, link: RedisLink | None, clock: Clock = system_clock, stats: Any = None,
                 memory_bound: int = MEMORY_CELLS) -> None:
        self.link = link
        self.memory = MemoryCells(clock, memory_bound)
        self.stats = stats
        self._script: Callable[..., Any] | None = link.client.register_script(GCRA) if link is not None else None

    def _count(self, service: str, event: str) -> None:
        record = getattr(self.stats, "record_rate_limit", None)
        if record is not None:
            record(service, event)

    def check(self, call: ProxyCall) -> Headers:
        """The RateLimit headers for a request that may go on; raise :class:`RateLimited` if it may not."""
        settings = call.service.rate_limit
        assert settings is not None
        rule = settings.rule_for(call.path)
        if not rule.limits:
            return []
        who = f"{call.service.name}\0{rule.path or ''}\0{client_key(settings, call)}"
        verdict = self._decide(call.service.name, settings, rule, who)
        if verdict is None:
            return []
        headers = limit_headers(rule, verdict)
        if verdict.refused:
            self._count(call.service.name, "limited")
            wait = max(reset for remaining, reset in verdict.states if remaining == 0)
            headers += [("Retry-After", str(max(1, _seconds(wait)))), ("Cache-Control", "no-store")]
            raise RateLimited(service=call.service.name, headers=headers)
        return headers

    def _decide(self, service: str, settings: RateLimitSettings, rule: LimitRule, who: str) -> Verdict | None:
        """``who``: service, rule and client; kept as is in memory, digested into the Redis keys."""
        if self.link is None or self._script is None:
            return self.memory.decide(who, rule)
        tag = hashlib.sha256(who.encode("utf-8", "surrogateescape")).hexdigest()[:32]
        keys = [self.link.key("rl", "{" + tag + "}", str(limit.window)) for limit in rule.limits]
        args = rule.script_args
        script = self._script
        try:
            raw = self.link.run(lambda client: script(keys=keys, args=args, client=client))
        except StoreUnavailable:
            mode = settings.redis_down
            self._count(service, "redis_down_" + {"open": "allowed", "closed": "refused", "local": "local"}[mode])
            if mode == "closed":
                raise RateLimitUnavailable(service=service, headers=[("Retry-After", "1")]) from None
            if mode == "local":
                return self.memory.decide(who, rule)
            return None
        values = [int(v) for v in raw]
        states = [(values[1 + 2 * i], values[2 + 2 * i] / 1_000_000) for i in range(len(rule.limits))]
        return Verdict(bool(values[0]), states)
