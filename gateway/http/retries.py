"""When a failed attempt is tried again: which requests, after which failures, how long apart, within what budget.

The rules, in the order :class:`RetryPlan` applies them (retries are off unless a service sets them):

* **Which requests.** Idempotent methods (RFC 9110 §9.2.2: GET, HEAD, OPTIONS, PUT, DELETE), and any
  other method only when the request carries an ``Idempotency-Key``. The body is always held whole
  in memory (``MAX_BODY_BYTES``), so it can be sent again byte for byte; a body that could not be
  replayed (a stream) is never retried.
* **After which failures.** A connect error (nothing of the request was sent), for every request
  that may be retried. After the request went out — the service closed or reset the connection
  without an answer, or answered 502, 503 or 504 — only for an idempotent method: the service may
  have acted on it, and a repeat of an idempotent request changes nothing more, while a POST with an
  ``Idempotency-Key`` is left to the client, who can tell whether the service honours the key. A
  timeout is never retried: it has used the time there was.
* **How long apart.** Exponential backoff with full jitter: a retry ``n`` waits a random time up to
  ``min(max, base * 2**(n-1))`` (AWS's "full jitter": clients that failed together spread out).
* **Within what.** The service's ``timeout`` covers every attempt and every wait: a retry that would
  not have as long as the failed attempt took (at least 10 ms) is not made. And a retry budget, as
  Envoy's: the retries of the last ``window`` seconds stay under ``percent`` % of its requests, or
  ``min_retries`` when that is more, so a failing service gets a bounded multiple of its load, never
  ``attempts`` times all of it.

A budget is per worker process: every worker keeps the same share of its own requests.
"""

from __future__ import annotations

import random
from collections import deque

from gateway.clock import Clock, system_clock
from gateway.config.upstream import BudgetSettings, RetrySettings
from gateway.messages import ProxyCall

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRY_STATUSES = frozenset({502, 503, 504})
MIN_ATTEMPT_S = 0.01  # a retry with less time than this left is not worth sending
SLOTS = 10  # a budget's window is counted in this many slots

CONNECT = "connect"  # nothing was sent
SENT = "sent"  # the request went out: no answer came back, or a 502/503/504


class RetryBudget:
    """The retries a service may still make: a share of its requests in a rolling window, with a minimum."""

    def __init__(self, settings: BudgetSettings, clock: Clock = system_clock) -> None:
        self.settings = settings
        self.clock = clock
        self.slot_s = settings.window / SLOTS
        self._slots: deque[list[int]] = deque()  # [slot number, requests, retries], oldest first

    def _current(self) -> list[int]:
        slot = int(self.clock() // self.slot_s)
        while self._slots and self._slots[0][0] <= slot - SLOTS:
            self._slots.popleft()
        if not self._slots or self._slots[-1][0] != slot:
            self._slots.append([slot, 0, 0])
        return self._slots[-1]

    def request(self) -> None:
        """Count one client request sent upstream (its first attempt)."""
        self._current()[1] += 1

    def spend(self) -> bool:
        """Take one retry from the budget if the window has room for it; False (nothing taken) when not."""
        current = self._current()
        requests = sum(slot[1] for slot in self._slots)
        retries = sum(slot[2] for slot in self._slots)
        allowed = max(self.settings.min_retries, int(requests * self.settings.percent / 100))
        if retries >= allowed:
            return False
        current[2] += 1
        return True

    def figures(self) -> tuple[int, int]:
        """Requests and retries in the window now."""
        self._current()
        return sum(slot[1] for slot in self._slots), sum(slot[2] for slot in self._slots)


def may_retry(call: ProxyCall) -> bool:
    """Whether ``call``'s method allows a retry at all: idempotent, or carrying an ``Idempotency-Key``."""
    if not isinstance(call.body, bytes | bytearray):
        return False  # a body that cannot be sent again byte for byte
    return call.method in IDEMPOTENT_METHODS or call.header("Idempotency-Key") is not None


class RetryPlan:
    """One request's retries: asked after each failed attempt whether (and after what wait) to try again."""

    def __init__(self, call: ProxyCall, settings: RetrySettings | None, budget: RetryBudget | None,
                 rng: random.Random | None = None) -> None:
        self.settings = settings
        self.budget = budget
        self.eligible = settings is not None and may_retry(call)
        self.idempotent = call.method in IDEMPOTENT_METHODS
        self.attempts = 1
        self.rng = rng or random
        if budget is not None:
            budget.request()

    def next_wait(self, failure: str, remaining_s: float, last_attempt_s: float) -> tuple[float | None, str | None]:
        """The wait before the next attempt, or None and why not (``budget``/``deadline`` when refused).

        ``failure`` is :data:`CONNECT` or :data:`SENT`; ``remaining_s`` what is left of the service's
        timeout; ``last_attempt_s`` how long the failed attempt took.
        """
        settings = self.settings
        if settings is None or not self.eligible or self.attempts >= settings.attempts:
            return None, None
        if failure != CONNECT and not self.idempotent:
            return None, None  # the service may have acted on it
        cap = min(settings.backoff_max, settings.backoff_base * 2 ** (self.attempts - 1))
        wait = self.rng.uniform(0, cap)
        if remaining_s - wait < max(MIN_ATTEMPT_S, last_attempt_s):
            return None, "deadline"
        if self.budget is not None and not self.budget.spend():
            return None, "budget"
        self.attempts += 1
        return wait, None


def budget_for(settings: RetrySettings | None, clock: Clock = system_clock) -> RetryBudget | None:
    """A service's retry budget, or None when its retries are off."""
    return RetryBudget(settings.budget, clock) if settings is not None else None

