"""The circuit breaker shared by every worker and instance: state, probe lease and window in Redis.

Each decision is one atomic Lua script (one EVALSHA) run against Redis's own clock, so two gateway
processes see one breaker per service and exactly one probe goes through gateway-wide. Keys, all with
a TTL refreshed while in use (``{name}`` is a hash tag keeping a service's keys in one cluster slot)::

    <prefix>cb:{name}:state      hash  state, gen, born, opened_at, next_at, forced, lease, lease_by
    <prefix>cb:{name}:totals     hash  successes, failures, timeouts, rejects (since start or reset)
    <prefix>cb:{name}:lat        list  "bucket:ms" latency samples, newest first, capped
    <prefix>cb:{name}:w:<bucket> hash  c, f, t, r, s (calls, failures, timeouts, rejects, latency sum ms)

When Redis cannot be reached the breaker falls back to its in-process twin (same rules) and returns
to Redis by itself once the link is up again. A ticket handed back to the store that did not issue it
is counted but changes no state.

A stalled or flaky Redis must not keep a healthy service shut out. These rules see to it:

* every script call carries the latest Redis time at which its caller still waits for the answer
  (``not_after``, from the offset between the local clock and Redis's TIME seen in earlier replies);
  a command Redis only gets to after that, such as one sent before a SIGSTOP and run after SIGCONT,
  changes nothing;
* a probe lease is granted for one Redis timeout only, and the caller confirms it (one more round
  trip, once per probe) before it probes: a grant whose answer was lost frees itself that soon;
* each lease names the call it was granted to (``lease_by``); a process whose request for a ticket
  got no answer, or whose probe's outcome could not be delivered, names those calls at its next
  request and Redis frees a lease they hold, so the next call probes at once instead of waiting for
  the lease to run out;
* a probe's outcome is sent even while the link skips Redis after a failure: a frozen Redis still
  receives it and runs it as it wakes, and an outcome that arrives late still settles the state;
* calls a process decided on its own breaker while Redis was unreachable are evidence: if the last
  of them succeeded after the circuit opened, the process says so at its next request and Redis
  closes the circuit, as a successful probe would.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from typing import Any

from gateway.breaker.core import (
    ACTIONS,
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerCalls,
    CircuitBreaker,
    Outcome,
    Ticket,
    notify,
)
from gateway.breaker.window import WindowTotals, bucket_layout, build_snapshot
from gateway.clock import Clock
from gateway.config.settings import ServiceConfig
from gateway.errors import CircuitOpen
from gateway.redis.link import RedisLink, StoreUnavailable
from gateway.redis.subscription import Subscription

STATE_TTL_MS = 86_400_000  # an idle breaker's state is forgotten after a day without traffic
HOLD_SECONDS = 0.5  # how long a process may answer an OPEN circuit without asking Redis again
LATENCY_SAMPLES = 512
ABANDONED_KEPT = 16  # calls whose lease may need freeing, named at the next request (the newest kept)

_PRELUDE = """
local function clock(override)
  if override ~= '' then return tonumber(override) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function window(prefix, idx, n)
  local c, f, t, r, s = 0, 0, 0, 0, 0
  for i = idx - n + 1, idx do
    local v = redis.call('HMGET', prefix .. i, 'c', 'f', 't', 'r', 's')
    c = c + (tonumber(v[1]) or 0); f = f + (tonumber(v[2]) or 0); t = t + (tonumber(v[3]) or 0)
    r = r + (tonumber(v[4]) or 0); s = s + (tonumber(v[5]) or 0)
  end
  return c, f, t, r, s
end
local function clear_window(prefix, idx, n, lat)
  for i = idx - n + 1, idx do redis.call('DEL', prefix .. i) end
  redis.call('DEL', lat)
end
local function load(key, now)
  local s = redis.call('HMGET', key, 'state', 'gen', 'opened_at', 'next_at', 'forced', 'lease', 'born', 'lease_by')
  local st = {state = s[1] or 'CLOSED', gen = s[2], opened_at = s[3] or '', next_at = s[4] or '',
              forced = s[5] or '', lease = s[6] or '', born = s[7] or '', lease_by = s[8] or ''}
  local known = st.state == 'CLOSED' or st.state == 'OPEN' or st.state == 'HALF_OPEN'
  if not tonumber(st.gen or '') or not known then
    -- a new (or expired, flushed, or unreadable) breaker: its tickets carry its birth time, so they
    -- never match tickets of the breaker it replaces; garbage must not hold it open for good
    st = {state = 'CLOSED', gen = '0', born = tostring(now), opened_at = '', next_at = '', forced = '', lease = '',
          lease_by = ''}
    redis.call('DEL', key)
    redis.call('HSET', key, 'state', 'CLOSED', 'gen', st.gen, 'born', st.born)
  end
  return st
end
local function token(st) return st.born .. '/' .. st.gen end
local function stale(now, not_after) return not_after ~= '' and now > tonumber(not_after) end
local function bump(key, st, state)
  st.gen = tostring(tonumber(st.gen) + 1)
  st.state = state
  redis.call('HSET', key, 'state', state, 'gen', st.gen, 'lease', '')
end
local function close_circuit(key, st, prefix, idx, n, lat)
  bump(key, st, 'CLOSED')
  redis.call('HSET', key, 'opened_at', '', 'next_at', '', 'forced', '')
  clear_window(prefix, idx, n, lat)
end
local function open_circuit(key, st, now, reset)
  bump(key, st, 'OPEN')
  redis.call('HSET', key, 'opened_at', tostring(now), 'next_at', tostring(now + tonumber(reset)))
end
local function add_rejects(totals, prefix, width, now, count, window_ttl, state_ttl)
  redis.call('HINCRBY', totals, 'rejects', count)
  redis.call('PEXPIRE', totals, state_ttl)
  local bucket = prefix .. math.floor(now / tonumber(width))
  redis.call('HINCRBY', bucket, 'r', count)
  redis.call('PEXPIRE', bucket, window_ttl)
end
"""

# KEYS: state, totals, lat.  ARGV: now override, window prefix, bucket width, buckets, window ttl ms,
# state ttl ms, reset timeout, lease seconds, rejects answered locally since the last call, not_after,
# this call's id, ids of abandoned calls (space-separated), seconds a granted lease waits for CONFIRM,
# Redis time of a call this process made on its own breaker while Redis was unreachable and that
# succeeded, with nothing failing after it ('' if none).
# Reply: {verdict (go|probe|reject|stale), ticket generation, retry_after, old state, new state, hold, now}
# where hold (on a reject) is the seconds until the probe is due, 'forced' when forced open, or ''
# when half-open (the probe in flight may end at any moment).
_BEFORE = _PRELUDE + """
local now = clock(ARGV[1])
if stale(now, ARGV[10]) then return {'stale', '', 0, '', '', '', tostring(now)} end
local st = load(KEYS[1], now)
for id in string.gmatch(ARGV[12], '%S+') do
  if st.lease ~= '' and st.lease_by == id then
    st.lease = ''
    redis.call('HSET', KEYS[1], 'lease', '', 'lease_by', '')
  end
end
local old, new = '', ''
redis.call('PEXPIRE', KEYS[1], ARGV[6])
local held = tonumber(ARGV[9]) or 0
if held > 0 then add_rejects(KEYS[2], ARGV[2], ARGV[3], now, held, ARGV[5], ARGV[6]) end
local proven = tonumber(ARGV[14])
if proven and st.forced ~= '1' and (st.state == 'OPEN' or st.state == 'HALF_OPEN')
   and proven > (tonumber(st.opened_at) or 0) then
  -- the service answered this process's own calls since the circuit opened: as good as a probe
  old, new = st.state, 'CLOSED'
  close_circuit(KEYS[1], st, ARGV[2], math.floor(now / tonumber(ARGV[3])), tonumber(ARGV[4]), KEYS[3])
end
if st.state == 'OPEN' and st.forced ~= '1' and st.next_at ~= '' and now >= tonumber(st.next_at) then
  old, new = 'OPEN', 'HALF_OPEN'
  bump(KEYS[1], st, 'HALF_OPEN')
end
if st.state == 'CLOSED' then return {'go', token(st), 0, old, new, '', tostring(now)} end
if st.state == 'HALF_OPEN' and (st.lease == '' or now >= tonumber(st.lease)) then
  -- a new lease bumps the generation, so a lost probe that returns late changes nothing
  st.gen = tostring(tonumber(st.gen) + 1)
  -- only for as long as its answer may take: the caller confirms it (CONFIRM) before probing
  redis.call('HSET', KEYS[1], 'gen', st.gen, 'lease', tostring(now + tonumber(ARGV[13])), 'lease_by', ARGV[11])
  return {'probe', token(st), 0, old, new, '', tostring(now)}
end
local retry, hold = 1, ''
if st.state == 'OPEN' and st.forced == '1' then retry, hold = math.ceil(tonumber(ARGV[7])), 'forced'
elseif st.state == 'OPEN' then
  retry = math.ceil(tonumber(st.next_at) - now)
  hold = tostring(tonumber(st.next_at) - now)
end
if retry < 1 then retry = 1 end
add_rejects(KEYS[2], ARGV[2], ARGV[3], now, 1, ARGV[5], ARGV[6])
return {'reject', token(st), retry, old, new, hold, tostring(now)}
"""

# KEYS: state, totals, lat.  ARGV: now override, window prefix, bucket width, buckets, window ttl ms,
# state ttl ms, reset timeout, ticket generation ('' if issued elsewhere), probe (1|0), outcome (s|f|t),
# latency ms, volume threshold, error threshold, latency samples kept, not_after.
# Reply: {old state, new state, now} ('' when nothing changed; 'stale' when it came too late to count).
_AFTER = _PRELUDE + """
local now = clock(ARGV[1])
-- Too late, its caller counted it itself: only a probe's outcome still matters (for the state).
local late = stale(now, ARGV[15])
if late and ARGV[9] ~= '1' then return {'stale', '', tostring(now)} end
local outcome = ARGV[10]
local n = tonumber(ARGV[4])
local idx = math.floor(now / tonumber(ARGV[3]))
local st = load(KEYS[1], now)
redis.call('PEXPIRE', KEYS[1], ARGV[6])
if late then
  if st.state == 'HALF_OPEN' and ARGV[8] == token(st) then
    if outcome == 's' then close_circuit(KEYS[1], st, ARGV[2], idx, n, KEYS[3])
    else open_circuit(KEYS[1], st, now, ARGV[7]) end
  end
  return {'stale', '', tostring(now)}
end
if outcome == 's' then redis.call('HINCRBY', KEYS[2], 'successes', 1)
else redis.call('HINCRBY', KEYS[2], 'failures', 1) end
if outcome == 't' then redis.call('HINCRBY', KEYS[2], 'timeouts', 1) end
redis.call('PEXPIRE', KEYS[2], ARGV[6])
if ARGV[8] ~= token(st) then return {'', '', tostring(now)} end
local bucket = ARGV[2] .. idx
redis.call('HINCRBY', bucket, 'c', 1)
if outcome ~= 's' then redis.call('HINCRBY', bucket, 'f', 1) end
if outcome == 't' then redis.call('HINCRBY', bucket, 't', 1) end
redis.call('HINCRBYFLOAT', bucket, 's', ARGV[11])
redis.call('PEXPIRE', bucket, ARGV[5])
redis.call('LPUSH', KEYS[3], idx .. ':' .. ARGV[11])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[14]) - 1)
redis.call('PEXPIRE', KEYS[3], ARGV[5])
if st.state == 'CLOSED' then
  local c, f = window(ARGV[2], idx, n)
  if c >= tonumber(ARGV[12]) and c > 0 and f * 100 / c > tonumber(ARGV[13]) then
    open_circuit(KEYS[1], st, now, ARGV[7])
    return {'CLOSED', 'OPEN', tostring(now)}
  end
elseif st.state == 'HALF_OPEN' and ARGV[9] == '1' then
  if outcome == 's' then
    close_circuit(KEYS[1], st, ARGV[2], idx, n, KEYS[3])
    return {'HALF_OPEN', 'CLOSED', tostring(now)}
  end
  open_circuit(KEYS[1], st, now, ARGV[7])
  return {'HALF_OPEN', 'OPEN', tostring(now)}
end
return {'', '', tostring(now)}
"""

# KEYS: state, totals, lat.  ARGV: now override, call id, lease seconds, not_after.
# Reply: {ok|lost|stale, now}: the lease granted to that call now lasts for the probe ('lost': it went
# to another call, or was freed, before the confirmation came; one that ran out but was not granted
# again is still this call's).
_CONFIRM = _PRELUDE + """
local now = clock(ARGV[1])
if stale(now, ARGV[4]) then return {'stale', tostring(now)} end
local s = redis.call('HMGET', KEYS[1], 'state', 'lease', 'lease_by')
if s[1] ~= 'HALF_OPEN' or s[3] ~= ARGV[2] or (s[2] or '') == '' then return {'lost', tostring(now)} end
redis.call('HSET', KEYS[1], 'lease', tostring(now + tonumber(ARGV[3])))
return {'ok', tostring(now)}
"""

# KEYS: state, totals, lat.  ARGV: now override, window prefix, bucket width, buckets.
# Reply: {now, state, opened_at, next_at, forced, successes, failures, timeouts, rejects,
#         window c, f, t, r, s, samples...}.
_SNAPSHOT = _PRELUDE + """
local now = clock(ARGV[1])
local s = redis.call('HMGET', KEYS[1], 'state', 'opened_at', 'next_at', 'forced')
local state = s[1] or 'CLOSED'
if state == 'OPEN' and s[4] ~= '1' and (s[3] or '') ~= '' and now >= tonumber(s[3]) then state = 'HALF_OPEN' end
local tot = redis.call('HMGET', KEYS[2], 'successes', 'failures', 'timeouts', 'rejects')
local n = tonumber(ARGV[4])
local idx = math.floor(now / tonumber(ARGV[3]))
local c, f, t, r, sum = window(ARGV[2], idx, n)
local reply = {tostring(now), state, s[2] or '', s[3] or '', s[4] or '',
               tot[1] or '0', tot[2] or '0', tot[3] or '0', tot[4] or '0',
               tostring(c), tostring(f), tostring(t), tostring(r), tostring(sum)}
for _, entry in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
  local sep = string.find(entry, ':', 1, true)
  local b = tonumber(string.sub(entry, 1, sep - 1))
  if b > idx - n and b <= idx then table.insert(reply, string.sub(entry, sep + 1)) end
end
return reply
"""

# KEYS: state, totals, lat.  ARGV: now override, window prefix, bucket width, buckets, state ttl ms, action.
# Reply: {old state, new state}.
_FORCE = _PRELUDE + """
local now = clock(ARGV[1])
local st = load(KEYS[1], now)
local old = st.state
if ARGV[6] == 'open' then
  bump(KEYS[1], st, 'OPEN')
  redis.call('HSET', KEYS[1], 'forced', '1', 'opened_at', tostring(now), 'next_at', '')
else
  bump(KEYS[1], st, 'CLOSED')
  redis.call('HSET', KEYS[1], 'forced', '', 'opened_at', '', 'next_at', '')
  clear_window(ARGV[2], math.floor(now / tonumber(ARGV[3])), tonumber(ARGV[4]), KEYS[3])
  if ARGV[6] == 'reset' then redis.call('DEL', KEYS[2]) end
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {old, st.state}
"""


# KEYS: state, totals, lat.  ARGV: now override, window prefix, bucket width, buckets, window ttl ms,
# state ttl ms, rejects answered locally since the last call.  Reply: 1.
_HELD = _PRELUDE + """
local now = clock(ARGV[1])
local held = tonumber(ARGV[7]) or 0
if held > 0 then add_rejects(KEYS[2], ARGV[2], ARGV[3], now, held, ARGV[5], ARGV[6]) end
return 1
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _float_or_none(value: Any) -> float | None:
    text = _text(value)
    return float(text) if text else None


class BreakerScripts:
    """The breaker's Lua scripts, registered once per Redis client (EVALSHA, reloaded if flushed)."""

    def __init__(self, link: RedisLink) -> None:
        client = link.client
        self.before = client.register_script(_BEFORE)
        self.after = client.register_script(_AFTER)
        self.snapshot = client.register_script(_SNAPSHOT)
        self.force = client.register_script(_FORCE)
        self.held = client.register_script(_HELD)
        self.confirm = client.register_script(_CONFIRM)


class SharedBreaker(BreakerCalls):
    """One service's breaker kept in Redis, with its in-process twin as the fallback."""

    def __init__(self, service: ServiceConfig, link: RedisLink, scripts: BreakerScripts,
                 fallback: CircuitBreaker, listeners: list[Any], now: Clock | None = None,
                 subscription: Subscription | None = None, monotonic: Clock = time.monotonic) -> None:
        self.name = service.name
        # While the circuit is OPEN, this process answers 503 itself for a moment (never past the
        # probe's time, and only while it hears forced closes on ``subscription``): an open circuit
        # then costs no Redis round trip per request. The probe is still decided in Redis.
        self.subscription = subscription
        self._monotonic = now if now is not None else monotonic  # tests drive the hold with their clock
        self._open_until = 0.0  # monotonic time until which a call is refused without asking Redis
        self._probe_at: float | None = None  # monotonic time the probe is due (None: forced open)
        self._held_rejects = 0  # refused here, not yet added to Redis's counters
        self.service = service
        self.settings = service.breaker
        self.fallback = fallback
        self._on_fallback = False  # whether the last call had to use the local breaker
        self.listeners = listeners
        self._link = link
        self._scripts = scripts
        self._now = now  # tests only: replaces Redis's TIME
        tag = "{" + service.name + "}"
        self._keys = [link.key("cb", tag, "state"), link.key("cb", tag, "totals"), link.key("cb", tag, "lat")]
        width, count = bucket_layout(self.settings.rolling_window)
        window_ttl_ms = int((self.settings.rolling_window + width) * 1000) + 1000
        self._window_args = [link.key("cb", tag, "w") + ":", repr(width), str(count)]
        self._ttl_args = [str(window_ttl_ms), str(STATE_TTL_MS), repr(float(self.settings.reset_timeout))]
        self._offset: float | None = None  # Redis's TIME minus the local clock, from the last reply
        self._abandoned: list[str] = []  # calls that may hold a lease nobody will hand back
        self._call_ids = itertools.count()
        # Redis time of the last success of a call decided by the local breaker ('' after a failure):
        # told to Redis at the next request, where it closes a circuit that opened before it.
        self._proven = ""

    def _local_now(self) -> float:
        """The clock set against Redis's TIME (the scripts' clock itself when tests replace it)."""
        return self._now() if self._now is not None else time.monotonic()

    def _not_after(self) -> str:
        """The latest Redis time at which this call still waits for its answer ('' until Redis's time is known)."""
        if self._offset is None:
            return ""
        return repr(self._local_now() + self._offset + self._link.socket_timeout)

    def _saw_redis_time(self, now: Any) -> None:
        try:
            self._offset = float(_text(now)) - self._local_now()
        except ValueError:
            pass

    def _abandon(self, call_id: str) -> None:
        """Remember a call whose lease (if Redis granted one) nobody will hand back."""
        self._abandoned = [*self._abandoned[-(ABANDONED_KEPT - 1):], call_id]

    def _run(self, script: Any, args: list[str], always: bool = False) -> list[Any]:
        now = "" if self._now is None else repr(self._now())
        return self._link.run(lambda client: script(keys=self._keys, args=[now, *args], client=client), always=always)

    def _emit(self, old: Any, new: Any) -> None:
        old, new = _text(old), _text(new)
        if old and new and old != new:
            notify(self.listeners, "on_state_change", self.name, old, new)

    def before_call(self) -> Ticket:
        """Ask Redis for a ticket (one EVALSHA); fall back to the local breaker if Redis is unavailable."""
        if self._open_until:
            self._refuse_if_held()
        held = self._held_rejects
        call_id = f"{os.getpid()}.{id(self):x}.{next(self._call_ids)}"
        abandoned, proven = self._abandoned, self._proven
        sent = self._link.is_up  # otherwise the link refuses at once, and Redis never hears of this call
        try:
            verdict, gen, retry_after, old, new, hold, redis_now = self._run(
                self._scripts.before,
                [*self._window_args, *self._ttl_args, repr(self._lease_seconds), str(held),
                 self._not_after(), call_id, " ".join(abandoned), repr(self._link.socket_timeout), proven],
            )
            self._saw_redis_time(redis_now)
            if _text(verdict) == "stale":
                raise StoreUnavailable("the breaker's answer came too late")
            if _text(verdict) == "probe":
                verdict = self._confirm(call_id)
        except StoreUnavailable:
            if sent:
                self._abandon(call_id)  # Redis may have granted it the lease before going quiet
            return self._fallback_before_call()
        self._abandoned = self._abandoned[len(abandoned):]  # named, so freed
        if self._proven == proven:
            self._proven = ""  # told
        self._on_fallback = False
        self._held_rejects -= held
        self._emit(old, new)
        verdict = _text(verdict)
        if verdict == "lost":  # another call has the probe by now
            notify(self.listeners, "on_reject", self.name)
            raise CircuitOpen(service=self.name, retry_after=1)
        if verdict == "reject":
            self._hold_open(_text(hold))
            notify(self.listeners, "on_reject", self.name)
            raise CircuitOpen(service=self.name, retry_after=int(retry_after))
        started = self.fallback.clock()
        return Ticket(self.name, verdict == "probe", ("redis", _text(gen), call_id), started)

    @property
    def _lease_seconds(self) -> float:
        """How long a confirmed probe may take before another call may probe."""
        return float(self.service.timeout) + 1

    def _confirm(self, call_id: str) -> str:
        """Make the lease granted to ``call_id`` last for the probe; ``probe``, or ``lost`` (or StoreUnavailable)."""
        answer, redis_now = self._link.run(lambda client: self._scripts.confirm(
            keys=self._keys, args=["" if self._now is None else repr(self._now()), call_id,
                                   repr(self._lease_seconds), self._not_after()], client=client))
        self._saw_redis_time(redis_now)
        answer = _text(answer)
        if answer == "stale":
            raise StoreUnavailable("the probe's confirmation came too late")
        return "probe" if answer == "ok" else "lost"

    def _fallback_before_call(self) -> Ticket:
        """Use the local breaker; at the start of an outage it starts fresh, unless an operator forced it.

        Its state was left by an earlier outage, maybe long ago: an OPEN from then must not shut out
        a healthy service now (its probe would make every concurrent request a 503).
        """
        if not self._on_fallback:
            self._on_fallback = True
            if not self.fallback.forced:
                self.fallback.force("close", quiet=True)
        return self.fallback.before_call()

    def _hold_open(self, hold: str) -> None:
        """Remember an OPEN answer for at most HOLD_SECONDS, never past the probe's time."""
        if self.subscription is None or not self.subscription.ensure() or not hold:
            return
        now = self._monotonic()
        if hold == "forced":
            self._probe_at, self._open_until = None, now + HOLD_SECONDS
            return
        try:
            remaining = float(hold)
        except ValueError:
            return
        if remaining > 0:
            self._probe_at = now + remaining
            self._open_until = now + min(HOLD_SECONDS, remaining)

    def _refuse_if_held(self) -> None:
        """Refuse the call here (raise CircuitOpen) while a recent OPEN answer holds."""
        now = self._monotonic()
        if now >= self._open_until or self.subscription is None or not self.subscription.live:
            self._open_until = 0.0
            return
        self._held_rejects += 1
        if self._probe_at is None:
            retry_after = math.ceil(self.settings.reset_timeout)
        else:
            retry_after = math.ceil(self._probe_at - now)
        notify(self.listeners, "on_reject", self.name)
        raise CircuitOpen(service=self.name, retry_after=retry_after)

    def push_held(self) -> None:
        """Add the rejects answered here to Redis's counters now (the stats flusher calls this).

        Otherwise they would wait for this process's next call to reach Redis, which may never come.
        """
        held = self._held_rejects
        if held <= 0:
            return
        try:
            self._run(self._scripts.held, [*self._window_args, *self._ttl_args[:2], str(held)])
        except StoreUnavailable:
            return
        self._held_rejects -= held

    @property
    def refusing(self) -> bool:
        """True while this process holds a recent OPEN answer from Redis (calls are refused without asking)."""
        return bool(self._open_until) and self._monotonic() < self._open_until and self.subscription is not None \
            and self.subscription.live

    def forget_open(self) -> None:
        """Drop the remembered OPEN answer (a forced state changed somewhere, or the subscription restarted)."""
        self._open_until = 0.0

    def after_call(self, ticket: Ticket, outcome: Outcome, latency_s: float) -> None:
        """Report a call's end to Redis (one EVALSHA), or to the local breaker while Redis is unavailable."""
        generation = ticket.generation
        ours = isinstance(generation, tuple) and generation[0] == "redis"
        if not ours and self._offset is not None:  # decided here while Redis was unreachable
            self._proven = repr(self._local_now() + self._offset) if outcome is Outcome.SUCCESS else ""
        gen = generation[1] if ours else ""
        code = {Outcome.SUCCESS: "s", Outcome.FAILURE: "f", Outcome.TIMEOUT: "t"}[outcome]
        args = [*self._window_args, *self._ttl_args, gen, "1" if ticket.probe else "0", code,
                repr(round(latency_s * 1000, 3)), str(self.settings.volume_threshold),
                repr(float(self.settings.error_threshold)), str(LATENCY_SAMPLES), self._not_after()]
        try:
            # A probe's outcome is sent even while the link skips Redis: a stalled Redis runs it as it
            # wakes up (late, it still settles the state), before the calls that come after.
            old, new, redis_now = self._run(self._scripts.after, args, always=ticket.probe)
            self._saw_redis_time(redis_now)
            if _text(old) == "stale":
                raise StoreUnavailable("the outcome reached Redis too late")
        except StoreUnavailable:
            if ticket.probe and ours:
                self._abandon(generation[2])  # its outcome is lost: free its lease at the next request
            # The local breaker ignores the state effect of a Redis ticket but still counts it.
            self.fallback.after_call(ticket, outcome, latency_s)
            return
        notify(self.listeners, "on_call", self.name, outcome, latency_s)
        self._emit(old, new)

    @property
    def state(self) -> str:
        """CLOSED, OPEN or HALF_OPEN, as every process sees it."""
        return str(self.snapshot()["state"])

    def snapshot(self) -> dict[str, Any]:
        """This breaker's ``/stats/circuit-breakers`` figures, gateway-wide (local while Redis is down)."""
        try:
            reply = self._run(self._scripts.snapshot, self._window_args)
        except StoreUnavailable:
            return self.fallback.snapshot()
        fields = [_text(v) for v in reply]
        state = fields[1] if fields[1] in (CLOSED, OPEN, HALF_OPEN) else CLOSED
        names = ("successes", "failures", "timeouts", "rejects")
        totals = {name: int(value or 0) for name, value in zip(names, fields[5:9], strict=True)}
        totals["rejects"] += self._held_rejects  # refused here, added to Redis with the next call
        window = WindowTotals(calls=int(fields[9]), failures=int(fields[10]), timeouts=int(fields[11]),
                              rejects=int(fields[12]) + self._held_rejects, latency_ms=float(fields[13]))
        return build_snapshot(
            state=state, forced=fields[4] == "1", totals=totals, window=window,
            samples=[float(v) for v in fields[14:]], opened_at=_float_or_none(fields[2]),
            next_attempt_at=_float_or_none(fields[3]), store="redis",
        )

    def force(self, action: str, *, quiet: bool = False) -> dict[str, Any]:
        """Operator control, applied in Redis and to the local fallback, so it holds if Redis goes away.

        ``quiet`` tells no listener of the state change (it was announced where it was made)."""
        if action not in ACTIONS:
            raise ValueError(f"unknown breaker action {action!r}")
        self.forget_open()
        try:
            old, new = self._run(self._scripts.force, [*self._window_args, str(STATE_TTL_MS), action])
        except StoreUnavailable:
            return self.fallback.force(action, quiet=quiet)
        if self.subscription is not None:
            try:
                self.subscription.publish(self.name.encode())  # every process drops its held OPEN answer
            except StoreUnavailable:
                pass  # their subscriptions fail too, which drops what they hold
        self.fallback.force(action, quiet=True)
        if not quiet:
            self._emit(old, new)
        return self.snapshot()
