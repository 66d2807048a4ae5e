"""Retry rules and the retry budget on an injected clock: which requests, after which failures, how many, how spaced."""

from __future__ import annotations

import random

import pytest

from gateway.clock import FakeClock
from gateway.config.settings import load_settings
from gateway.config.upstream import BudgetSettings, RetrySettings
from gateway.http.retries import CONNECT, SENT, RetryBudget, RetryPlan, may_retry
from gateway.messages import ProxyCall

SERVICE = load_settings({}).services["order-service"]


def call(method: str = "GET", headers: list[tuple[str, str]] | None = None) -> ProxyCall:
    return ProxyCall(service=SERVICE, method=method, target="/1", path="/orders/1", query="", host="gw",
                     headers=headers or [], body=b"", request_id="r", client_ip="127.0.0.1")


def plan(method: str = "GET", headers: list[tuple[str, str]] | None = None, attempts: int = 3,
         budget: RetryBudget | None = None) -> RetryPlan:
    settings = RetrySettings(attempts=attempts, backoff_base=0.1, backoff_max=0.4)
    return RetryPlan(call(method, headers), settings, budget, random.Random(7))


@pytest.mark.parametrize(("method", "headers", "expected"), [
    ("GET", [], True), ("HEAD", [], True), ("OPTIONS", [], True), ("PUT", [], True), ("DELETE", [], True),
    ("POST", [], False), ("PATCH", [], False),
    ("POST", [("Idempotency-Key", "k-1")], True), ("PATCH", [("idempotency-key", "k-2")], True),
])
def test_which_requests_may_be_retried(method: str, headers: list[tuple[str, str]], expected: bool) -> None:
    assert may_retry(call(method, headers)) is expected


def test_a_body_that_cannot_be_replayed_is_never_retried() -> None:
    streamed = call("PUT")
    streamed.body = iter([b"chunk"])  # type: ignore[assignment]
    assert not may_retry(streamed)


@pytest.mark.parametrize(("method", "headers", "phase", "retried"), [
    ("GET", [], CONNECT, True),
    ("GET", [], SENT, True),
    ("PUT", [], SENT, True),
    ("DELETE", [], SENT, True),
    ("POST", [], CONNECT, False),  # no key: never
    ("POST", [("Idempotency-Key", "k")], CONNECT, True),  # nothing of it was sent
    ("POST", [("Idempotency-Key", "k")], SENT, False),  # the service may have acted on it
    ("PATCH", [("Idempotency-Key", "k")], SENT, False),
])
def test_after_which_failures(method: str, headers: list[tuple[str, str]], phase: str, retried: bool) -> None:
    wait, refused = plan(method, headers).next_wait(phase, remaining_s=5.0, last_attempt_s=0.01)
    assert (wait is not None) is retried and refused is None


def test_attempts_count_the_first_one() -> None:
    retries = plan(attempts=3)
    assert retries.next_wait(SENT, 5.0, 0.01)[0] is not None
    assert retries.next_wait(SENT, 5.0, 0.01)[0] is not None
    assert retries.next_wait(SENT, 5.0, 0.01) == (None, None)  # three attempts made
    assert retries.attempts == 3


def test_backoff_is_jittered_and_grows_up_to_its_cap() -> None:
    rng = random.Random(7)
    settings = RetrySettings(attempts=10, backoff_base=0.1, backoff_max=0.4)
    firsts = [RetryPlan(call(), settings, None, rng).next_wait(SENT, 100.0, 0.0)[0] for _ in range(200)]
    assert all(w is not None and 0 <= w <= 0.1 for w in firsts)
    assert len(set(firsts)) == 200 and max(firsts) > 0.09 and min(firsts) < 0.01  # spread over the whole range
    retries = RetryPlan(call(), settings, None, rng)
    for cap in (0.1, 0.2, 0.4, 0.4, 0.4):  # doubling from the base, then held at the cap
        wait = retries.next_wait(SENT, 100.0, 0.0)[0]
        assert wait is not None and 0 <= wait <= cap


def test_no_retry_past_the_service_timeout() -> None:
    retries = plan()
    # Too little left for an attempt as long as the last one: refused, and said why.
    assert retries.next_wait(SENT, remaining_s=0.3, last_attempt_s=0.5) == (None, "deadline")
    assert retries.next_wait(SENT, remaining_s=0.005, last_attempt_s=0.0) == (None, "deadline")
    assert retries.attempts == 1


def test_the_budget_is_a_share_of_the_windows_requests_with_a_minimum() -> None:
    clock = FakeClock()
    budget = RetryBudget(BudgetSettings(percent=20, min_retries=2, window=10), clock)
    for _ in range(5):
        budget.request()
    assert budget.spend() and budget.spend()  # the minimum: 2, though 20 % of 5 is 1
    assert not budget.spend()
    for _ in range(15):  # 20 requests in the window: 20 % is 4
        budget.request()
    assert budget.spend() and budget.spend()
    assert not budget.spend()
    assert budget.figures() == (20, 4)


def test_the_budget_window_rolls() -> None:
    clock = FakeClock()
    budget = RetryBudget(BudgetSettings(percent=10, min_retries=1, window=10), clock)
    budget.request()
    assert budget.spend() and not budget.spend()
    clock.advance(5)
    assert not budget.spend()  # the retry of 5 s ago is still in the window
    clock.advance(5)
    assert budget.spend()  # it has left the window
    assert budget.figures() == (0, 1)


def test_a_refused_retry_spends_nothing_and_says_budget() -> None:
    clock = FakeClock()
    budget = RetryBudget(BudgetSettings(percent=0, min_retries=1, window=10), clock)
    first, second = plan(budget=budget), plan(budget=budget)  # each plan counts its request
    assert first.next_wait(SENT, 5.0, 0.0)[0] is not None
    assert second.next_wait(SENT, 5.0, 0.0) == (None, "budget")
    assert budget.figures() == (2, 1)
