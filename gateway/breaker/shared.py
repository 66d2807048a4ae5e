"""The circuit breaker shared by every worker and instance: state, probe lease and window in Redis.

Each decision is one atomic Lua script (one EVALSHA; the ``.lua`` files beside this module, run by
``gateway.breaker.scripts``) against Redis's own clock, so two gateway processes see one breaker per
service and exactly one probe goes through gateway-wide. Keys (made by ``scripts.breaker_keys``), all
with a TTL refreshed while in use (``{name}`` is a hash tag keeping a service's keys in one cluster slot;
every key a script touches is one of its KEYS)::

    <prefix>cb:{name}:state   hash  state, gen, born, opened_at, next_at, forced, lease, lease_by
    <prefix>cb:{name}:totals  hash  successes, failures, timeouts, rejects (since start or reset)
    <prefix>cb:{name}:lat     list  "bucket:ms" latency samples, newest first, capped
    <prefix>cb:{name}:w       hash  <bucket>:c, :f, :t, :r, :s (calls, failures, timeouts, rejects, latency
                                    sum ms) of the window's buckets, and last (the newest bucket written)

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

While the circuit is CLOSED a call costs no round trip. A process that Redis answered CLOSED holds
that answer for HOLD_SECONDS (while its subscription to the breaker channel is live) and lets calls
through on it; their successes, which never change a CLOSED circuit's state, are counted here and
told in one script (``told.lua``) at least every TOLD_SECONDS while calls go on, with the next
failure (so the rule that opens the circuit sees them; a failure waits for a batch already on its
way, see ``gateway.breaker.batch``), or with the stats flush. A failure is told at once. The script
that opens a circuit announces it on the channel, and every process drops what it holds at that
moment, so the next call anywhere meets the OPEN circuit; a forced state is announced the same way.
So the window's successes of other processes may trail by up to TOLD_SECONDS; this process's own are
in its snapshot at once.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from dataclasses import asdict
from typing import Any

from gateway.breaker.batch import LATENCY_SAMPLES, Batches, Told
from gateway.breaker.rules import (
    ACTIONS,
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerCalls,
    BreakerListener,
    LocalBreaker,
    Outcome,
    Ticket,
    notify,
)
from gateway.breaker.scripts import BreakerScripts, LuaScript, LuaValue, breaker_keys, forced_channel
from gateway.breaker.window import WindowTotals, bucket_layout, build_snapshot
from gateway.clock import Clock
from gateway.config.settings import ServiceConfig
from gateway.errors import CircuitOpen
from gateway.redis.link import RedisLink, StoreUnavailable
from gateway.redis.subscription import Subscription

STATE_TTL_MS = 86_400_000  # an idle breaker's state is forgotten after a day without traffic
HOLD_SECONDS = 0.5  # how long a process may act on an OPEN (or CLOSED) answer without asking Redis again
ABANDONED_KEPT = 16  # calls whose lease may need freeing, named at the next request (the newest kept)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _float_or_none(value: Any) -> float | None:
    text = _text(value)
    return float(text) if text else None


class SharedBreaker(BreakerCalls):
    """One service's breaker kept in Redis, with its in-process twin as the fallback."""

    def __init__(self, service: ServiceConfig, link: RedisLink, scripts: BreakerScripts,
                 fallback: LocalBreaker, listeners: list[BreakerListener], now: Clock | None = None,
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
        self._closed_until = 0.0  # monotonic time until which a call goes ahead without asking Redis
        self._closed_gen = ""  # the generation of the CLOSED answer held
        self._batches = Batches()  # successes counted here, not yet told to Redis
        self._batching = subscription is not None and service.breaker.closed_hold > 0
        self.service = service
        self.settings = service.breaker
        self.fallback = fallback
        self._on_fallback = False  # whether the last call had to use the local breaker
        self.listeners = listeners
        self._link = link
        self._scripts = scripts
        self._now = now  # tests only: replaces Redis's TIME
        self._keys = breaker_keys(link, service.name).by_name()
        width, count = bucket_layout(self.settings.rolling_window)
        # What every call of a script may read, by name: each breaker setting (ARGV.reset_timeout...)
        # and how its window and keys are laid out.
        self._standing: dict[str, LuaValue] = {
            **asdict(self.settings), "bucket_width": width, "buckets": count,
            "window_ttl_ms": int((self.settings.rolling_window + width) * 1000) + 1000,
            "state_ttl_ms": STATE_TTL_MS, "lease_seconds": self._lease_seconds, "latency_samples": LATENCY_SAMPLES,
            "channel": forced_channel(link), "service": service.name,
        }
        self._offset: float | None = None  # Redis's TIME minus the local clock, from the last reply
        self._abandoned: list[str] = []  # calls that may hold a lease nobody will hand back
        self._call_ids = itertools.count()
        # Redis time of the last success of a call decided by the local breaker ('' after a failure):
        # told to Redis at the next request, where it closes a circuit that opened before it.
        self._proven = ""

    def _local_now(self) -> float:
        """The clock set against Redis's TIME (the scripts' clock itself when tests replace it)."""
        return self._now() if self._now is not None else time.monotonic()

    def _not_after(self) -> float | None:
        """The latest Redis time at which this call still waits for its answer (None until Redis's time is known)."""
        if self._offset is None:
            return None
        return self._local_now() + self._offset + self._link.socket_timeout

    def _saw_redis_time(self, now: Any) -> None:
        try:
            self._offset = float(_text(now)) - self._local_now()
        except ValueError:
            pass

    def _abandon(self, call_id: str) -> None:
        """Remember a call whose lease (if Redis granted one) nobody will hand back."""
        self._abandoned = [*self._abandoned[-(ABANDONED_KEPT - 1):], call_id]

    def _run(self, script: LuaScript, args: dict[str, LuaValue], always: bool = False) -> list[Any]:
        """Run ``script`` with this breaker's keys, its standing arguments and ``args`` (raises StoreUnavailable)."""
        named = {"now": None if self._now is None else self._now(), **self._standing, **args}
        reply: list[Any] = self._link.run(lambda client: script(client, self._keys, named), always=always)
        return reply

    def _emit(self, old: Any, new: Any) -> None:
        old, new = _text(old), _text(new)
        if old and new and old != new:
            notify(self.listeners, "on_state_change", self.name, old, new)

    def before_call(self) -> Ticket:
        """A ticket: on a held CLOSED answer, else from Redis (one EVALSHA), else from the local breaker."""
        if self._closed_until:
            # quiet: no announcement waits unread (an opening Redis wrote with its answer to the call that
            # opened it, while this request came in first).
            if self._monotonic() < self._closed_until and self.subscription is not None and self.subscription.quiet():
                return Ticket(self.name, False, ("redis", self._closed_gen, ""), self.fallback.clock())
            self._closed_until = 0.0
        if self._open_until:
            self._refuse_if_held()
        # Taken before the round trip, as a batch of successes is: a snapshot read meanwhile (another
        # request, in the same process) must not add them to counts Redis may already hold.
        held, self._held_rejects = self._held_rejects, 0
        call_id = f"{os.getpid()}.{id(self):x}.{next(self._call_ids)}"
        abandoned, proven = self._abandoned, self._proven
        sent = self._link.is_up  # otherwise the link refuses at once, and Redis never hears of this call
        try:
            verdict, gen, retry_after, old, new, hold, redis_now = self._run(self._scripts.before, {
                "held_rejects": held, "not_after": self._not_after(), "call_id": call_id,
                "abandoned": " ".join(abandoned), "grant_seconds": self._link.socket_timeout, "proven": proven,
            })
            self._saw_redis_time(redis_now)
            if _text(verdict) == "stale":
                raise StoreUnavailable("the breaker's answer came too late")
            if _text(verdict) == "probe":
                verdict = self._confirm(call_id)
        except StoreUnavailable:
            self._held_rejects += held  # sent again with a later call, as before the round trip
            if sent:
                self._abandon(call_id)  # Redis may have granted it the lease before going quiet
            return self._fallback_before_call()
        self._abandoned = self._abandoned[len(abandoned):]  # named, so freed
        if self._proven == proven:
            self._proven = ""  # told
        self._on_fallback = False
        self._emit(old, new)
        verdict = _text(verdict)
        if verdict == "lost":  # another call has the probe by now
            notify(self.listeners, "on_reject", self.name)
            raise CircuitOpen(service=self.name, retry_after=1)
        if verdict == "reject":
            self._hold_open(_text(hold))
            notify(self.listeners, "on_reject", self.name)
            raise CircuitOpen(service=self.name, retry_after=int(retry_after))
        if verdict == "go":
            self._hold_closed(_text(gen))
        started = self.fallback.clock()
        return Ticket(self.name, verdict == "probe", ("redis", _text(gen), call_id), started)

    def _hold_closed(self, gen: str) -> None:
        """Remember a CLOSED answer for ``closed_hold`` seconds, while an opening anywhere would reach us."""
        if self._batching and self.subscription is not None and self.subscription.ensure():
            self._closed_gen, self._closed_until = gen, self._monotonic() + self.settings.closed_hold

    def _saw_generation(self, current: Any) -> None:
        """Drop a held CLOSED answer whose generation Redis no longer has (its keys were flushed or evicted)."""
        if self._closed_until and _text(current) != self._closed_gen:
            self._closed_until = 0.0

    @property
    def _lease_seconds(self) -> float:
        """How long a confirmed probe may take before another call may probe."""
        return float(self.service.timeout) + 1

    def _confirm(self, call_id: str) -> str:
        """Make the lease granted to ``call_id`` last for the probe; ``probe``, or ``lost`` (or StoreUnavailable)."""
        answer, redis_now = self._run(self._scripts.confirm, {"call_id": call_id, "not_after": self._not_after()})
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
        """Add the rejects answered and successes counted here to Redis's counters (the stats flusher calls this).

        Otherwise they would wait for this process's next call to reach Redis, which may never come.
        """
        if self._batches.counting.count:
            self._tell()
        held, self._held_rejects = self._held_rejects, 0  # taken before the round trip (see before_call)
        if held <= 0:
            return
        try:
            self._run(self._scripts.held, {"held_rejects": held})
        except StoreUnavailable:
            self._held_rejects += held

    @property
    def refusing(self) -> bool:
        """True while this process holds a recent OPEN answer from Redis (calls are refused without asking)."""
        return bool(self._open_until) and self._monotonic() < self._open_until and self.subscription is not None \
            and self.subscription.live

    def forget_open(self) -> None:
        """Drop the remembered OPEN or CLOSED answer (the state changed somewhere, or the subscription restarted)."""
        self._open_until = 0.0
        self._closed_until = 0.0

    def after_call(self, ticket: Ticket, outcome: Outcome, latency_s: float) -> None:
        """Report a call's end to Redis (one EVALSHA), or to the local breaker while Redis is unavailable."""
        generation = ticket.generation
        ours = isinstance(generation, tuple) and generation[0] == "redis"
        if not ours and self._offset is not None:  # decided here while Redis was unreachable
            self._proven = repr(self._local_now() + self._offset) if outcome is Outcome.SUCCESS else ""
        gen = generation[1] if ours else ""
        latency_ms = round(latency_s * 1000, 3)
        if ours and not ticket.probe and outcome is Outcome.SUCCESS and self._batching and self._link.is_up:
            # A success never changes a CLOSED circuit: counted here, told in a batch (see the module's notes).
            counting = self._batches.counting
            if counting.count and counting.generation != gen:
                self._tell()
            self._batches.counting.add(gen, latency_ms, self._monotonic())
            if self._batches.due(self._monotonic()):
                self._tell()
            notify(self.listeners, "on_call", self.name, outcome, latency_s)
            return
        code = {Outcome.SUCCESS: "s", Outcome.FAILURE: "f", Outcome.TIMEOUT: "t"}[outcome]
        told = Told()
        if not ticket.probe:  # taken before the round trip: calls ending meanwhile start the next batch
            # and after the batch on its way, if any, has been answered (see gateway.breaker.batch)
            told = self._batches.take_for_failure(self._link.socket_timeout)
        args: dict[str, LuaValue] = {"generation": gen, "probe": ticket.probe, "outcome": code,
                                     "latency_ms": latency_ms, "not_after": self._not_after(), **told.args()}
        try:
            # A probe's outcome is sent even while the link skips Redis: a stalled Redis runs it as it
            # wakes up (late, it still settles the state), before the calls that come after.
            old, new, redis_now, current = self._run(self._scripts.after, args, always=ticket.probe)
            self._saw_redis_time(redis_now)
            self._saw_generation(current)
            if _text(old) == "stale":
                raise StoreUnavailable("the outcome reached Redis too late")
        except StoreUnavailable:
            self._lose_told(told)
            if ticket.probe and ours:
                self._abandon(generation[2])  # its outcome is lost: free its lease at the next request
            # The local breaker ignores the state effect of a Redis ticket but still counts it.
            self.fallback.after_call(ticket, outcome, latency_s)
            return
        if _text(new) == OPEN:
            self._closed_until = 0.0  # (the script announced it to every other process)
        notify(self.listeners, "on_call", self.name, outcome, latency_s)
        self._emit(old, new)

    def _tell(self) -> None:
        """Tell Redis the successes counted here (one EVALSHA)."""
        told = self._batches.take()
        if not told.count:  # another request took it first
            return
        try:
            answer, redis_now, current = self._run(self._scripts.told, {"not_after": self._not_after(), **told.args()})
            self._saw_redis_time(redis_now)
            self._saw_generation(current)
        except StoreUnavailable:
            self._lose_told(told)
            return
        finally:
            told.done()
        if _text(answer) == "stale":  # reached Redis after this process stopped waiting: not counted there
            self._lose_told(told)

    def _lose_told(self, told: Told) -> None:
        """Telling failed: the local breaker counts the successes, as it counts a Redis ticket returned during an
        outage; never sent again (Redis may have counted them before going quiet, and must not twice)."""
        self.fallback.count_successes(told.count)

    @property
    def state(self) -> str:
        """CLOSED, OPEN or HALF_OPEN, as every process sees it."""
        return str(self.snapshot()["state"])

    def snapshot(self) -> dict[str, Any]:
        """This breaker's ``/stats/circuit-breakers`` figures, gateway-wide (local while Redis is down)."""
        try:
            reply = self._run(self._scripts.snapshot, {})
        except StoreUnavailable:
            return self.fallback.snapshot()
        fields = [_text(v) for v in reply]
        state = fields[1] if fields[1] in (CLOSED, OPEN, HALF_OPEN) else CLOSED
        names = ("successes", "failures", "timeouts", "rejects")
        totals = {name: int(value or 0) for name, value in zip(names, fields[5:9], strict=True)}
        # Refused or let through here, not yet told to Redis: this process's counts agree with its calls.
        told = self._batches.counting
        totals["rejects"] += self._held_rejects
        totals["successes"] += told.count
        window = WindowTotals(calls=int(fields[9]) + told.count, failures=int(fields[10]), timeouts=int(fields[11]),
                              rejects=int(fields[12]) + self._held_rejects, latency_ms=float(fields[13]) + told.ms)
        return build_snapshot(
            state=state, forced=fields[4] == "1", totals=totals, window=window,
            samples=[*(float(v) for v in told.samples), *(float(v) for v in fields[14:])],
            opened_at=_float_or_none(fields[2]),
            next_attempt_at=_float_or_none(fields[3]), store="redis",
        )

    def force(self, action: str, *, quiet: bool = False) -> dict[str, Any]:
        """Operator control, applied in Redis and to the local fallback, so it holds if Redis goes away.

        ``quiet``: tell no listener of the state change (it was told where the action was taken).
        """
        if action not in ACTIONS:
            raise ValueError(f"unknown breaker action {action!r}")
        self.forget_open()
        if self._batches.counting.count:
            self._tell()  # before the counters may be reset
        try:
            old, new = self._run(self._scripts.force, {"action": action})
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


class SharedBreakers:
    """The shared kind of breaker, for a registry: wraps each service's local breaker in one kept in Redis.

    One per registry: the scripts are registered once, and one subscription carries the forced
    states announced by any process, so no process keeps answering an OPEN it remembers.
    """

    def __init__(self, link: RedisLink, now: Clock | None = None) -> None:
        self.link = link
        self.now = now  # tests only: replaces Redis's TIME inside the scripts, to drive time exactly
        self.scripts = BreakerScripts(link)
        self.made: dict[str, SharedBreaker] = {}
        self.subscription = Subscription(link, forced_channel(link), self._forget_open, self._forget_all)

    def __call__(self, service: ServiceConfig, local: LocalBreaker, listeners: list[BreakerListener]) -> SharedBreaker:
        """The shared breaker of ``service``, falling back to ``local`` while Redis is unreachable."""
        breaker = SharedBreaker(service, self.link, self.scripts, local, listeners, self.now,
                                subscription=self.subscription)
        self.made[service.name] = breaker
        return breaker

    def _forget_open(self, name: bytes) -> None:
        breaker = self.made.get(name.decode(errors="replace"))
        if breaker is not None:
            breaker.forget_open()

    def _forget_all(self) -> None:
        for breaker in self.made.values():
            breaker.forget_open()
