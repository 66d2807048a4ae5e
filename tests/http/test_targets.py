"""Balancing and passive outlier detection of a service's targets, on an injected clock."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from gateway.clock import FakeClock
from gateway.config.settings import ServiceConfig, load_settings
from gateway.config.upstream import OutlierSettings
from gateway.http.targets import Target, TargetSet

URLS = ["http://10.0.0.1:80", "http://10.0.0.2:80", "http://10.0.0.3:80"]


def service(urls: list[str] = URLS, balance: str = "round_robin", **outlier: Any) -> ServiceConfig:
    raw: dict[str, Any] = {"prefix": "/menus", "urls": urls, "balance": balance}
    if outlier:
        raw["outlier_detection"] = outlier
    return load_settings({}, {"services": {"menu": raw}}).services["menu"]


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, ...]] = []

    def on_eject(self, service: str, target: str, seconds: float) -> None:
        self.seen.append(("eject", target, f"{seconds:g}"))

    def on_return(self, service: str, target: str, how: str) -> None:
        self.seen.append(("return", target, how))


def target_set(svc: ServiceConfig, clock: FakeClock | None = None, health: Any = None,
               events: Events | None = None) -> TargetSet:
    urls = svc.urls or (svc.url,)
    return TargetSet(svc, [None] * len(urls), clock or FakeClock(), random.Random(3), health,
                     [events] if events else [])


def by_url(targets: TargetSet, url: str) -> Target:
    return next(t for t in targets.targets if t.url == url)


def fail(targets: TargetSet, url: str, times: int = 1) -> None:
    for _ in range(times):
        targets.record(by_url(targets, url), False)


def test_round_robin_takes_each_target_in_turn() -> None:
    targets = target_set(service())
    assert [targets.pick().url for _ in range(6)] == URLS * 2


def test_a_retry_prefers_a_target_the_request_has_not_tried() -> None:
    targets = target_set(service())
    first = targets.pick()
    second = targets.pick([first])
    third = targets.pick([first, second])
    assert len({first.url, second.url, third.url}) == 3
    assert targets.pick([first, second, third]).url in URLS  # all tried: any in rotation


def test_least_outstanding_picks_the_less_busy_of_two() -> None:
    targets = target_set(service(balance="least_outstanding"))
    busy = by_url(targets, URLS[0])
    for _ in range(5):
        targets.started(busy)
    picks = Counter(targets.pick().url for _ in range(300))
    # Two drawn at random, the less busy wins: the busy one never, the others about equally.
    assert URLS[0] not in picks
    assert 100 < picks[URLS[1]] < 200 and 100 < picks[URLS[2]] < 200
    for _ in range(5):
        targets.finished(busy)
    assert URLS[0] in Counter(targets.pick().url for _ in range(300))


def test_consecutive_failures_eject_for_the_ejection_time() -> None:
    clock, events = FakeClock(), Events()
    targets = target_set(service(consecutive_failures=3, ejection_time=10, max_ejection_time=100), clock,
                         events=events)
    fail(targets, URLS[1], 2)
    targets.record(by_url(targets, URLS[1]), True)  # a success in between resets the count
    fail(targets, URLS[1], 2)
    assert events.seen == []
    fail(targets, URLS[1])
    assert events.seen == [("eject", URLS[1], "10")]
    assert {targets.pick().url for _ in range(10)} == {URLS[0], URLS[2]}
    clock.advance(9.9)
    assert URLS[1] not in {targets.pick().url for _ in range(10)}
    clock.advance(0.1)
    assert URLS[1] in {targets.pick().url for _ in range(10)}
    assert events.seen[-1] == ("return", URLS[1], "time")


def test_a_returned_target_is_on_probation_and_repeated_ejections_grow() -> None:
    clock, events = FakeClock(), Events()
    targets = target_set(service(consecutive_failures=3, ejection_time=10, max_ejection_time=35), clock,
                         events=events)
    fail(targets, URLS[0], 3)
    for expected in ("20", "35", "35"):  # doubled each time, held at the maximum
        clock.advance(100)
        targets.pick()  # the ejection is over: back in rotation
        fail(targets, URLS[0])  # on probation: one failure ejects it again
        assert events.seen[-1] == ("eject", URLS[0], expected)
    clock.advance(35)
    targets.pick()
    targets.record(by_url(targets, URLS[0]), True)  # probation passed
    fail(targets, URLS[0], 2)
    assert events.seen[-1][0] == "return"  # two failures are not enough once it proved itself


def test_a_target_that_stayed_in_long_enough_starts_again_from_the_base_time() -> None:
    clock, events = FakeClock(), Events()
    targets = target_set(service(consecutive_failures=1, ejection_time=10, max_ejection_time=60), clock,
                         events=events)
    fail(targets, URLS[0])
    clock.advance(10)
    targets.pick()
    targets.record(by_url(targets, URLS[0]), True)
    clock.advance(61)  # in rotation for longer than the maximum ejection time
    fail(targets, URLS[0])
    assert events.seen[-1] == ("eject", URLS[0], "10")


def test_never_every_target_ejected() -> None:
    events = Events()
    targets = target_set(service(consecutive_failures=1), events=events)
    for url in URLS:
        fail(targets, url, 5)
    assert [e for e in events.seen if e[0] == "eject"] == [("eject", URLS[0], "30"), ("eject", URLS[1], "30")]
    assert {targets.pick().url for _ in range(6)} == {URLS[2]}  # the last one stays, failing or not


def test_a_single_target_is_never_ejected_nor_spared() -> None:
    targets = target_set(load_settings({}).services["order-service"])
    fail(targets, "http://127.0.0.1:3002", 50)
    assert targets.pick().url == "http://127.0.0.1:3002"
    assert not targets.spared()


def test_a_failure_is_spared_while_another_target_is_in_good_standing() -> None:
    targets = target_set(service(URLS[:2], consecutive_failures=2))
    fail(targets, URLS[0])
    assert targets.spared()  # the second target's last attempt succeeded (none failed yet)
    fail(targets, URLS[1])
    assert not targets.spared()  # both failing: the service's failure, the breaker counts it
    targets.record(by_url(targets, URLS[1]), True)
    assert targets.spared()


def test_an_ejected_target_the_health_checker_sees_failing_stays_out() -> None:
    clock, events = FakeClock(), Events()
    checks: dict[str, tuple[float, bool]] = {}
    targets = target_set(service(URLS[:2], consecutive_failures=1, ejection_time=5), clock,
                         health=lambda name, url: checks.get(url), events=events)
    checks[URLS[0]] = (clock() - 1, True)  # a check from before the ejection does not count
    fail(targets, URLS[0])
    clock.advance(2)
    checks[URLS[0]] = (clock(), False)
    clock.advance(10)  # the ejection time is over
    assert {targets.pick().url for _ in range(4)} == {URLS[1]}
    assert targets.snapshot()[URLS[0]]["ejected"] == 1
    checks[URLS[0]] = (clock(), True)  # a check passes: back
    assert URLS[0] in {targets.pick().url for _ in range(4)}
    assert events.seen[-1] == ("return", URLS[0], "health check")


def test_without_a_check_since_its_ejection_a_target_returns_by_time() -> None:
    clock = FakeClock()
    checks = {URLS[0]: (clock() - 1, False)}  # failed before it was ejected: says nothing of now
    targets = target_set(service(URLS[:2], consecutive_failures=1, ejection_time=5), clock,
                         health=lambda name, url: checks.get(url))
    fail(targets, URLS[0])
    clock.advance(5)
    assert URLS[0] in {targets.pick().url for _ in range(4)}


def test_outlier_detection_off_never_ejects() -> None:
    svc = load_settings({}, {"services": {"menu": {"prefix": "/menus", "urls": URLS,
                                                   "outlier_detection": False}}}).services["menu"]
    assert svc.outlier is None
    targets = target_set(svc)
    fail(targets, URLS[0], 100)
    assert {targets.pick().url for _ in range(3)} == set(URLS)


def test_snapshot_tells_ejection_and_in_flight() -> None:
    clock = FakeClock()
    targets = target_set(service(URLS[:2], consecutive_failures=1, ejection_time=5), clock)
    targets.started(by_url(targets, URLS[1]))
    fail(targets, URLS[0])
    assert targets.snapshot() == {
        URLS[0]: {"ejected": 1, "ejected_until": clock() + 5, "outstanding": 0, "failures": 1},
        URLS[1]: {"ejected": 0, "ejected_until": None, "outstanding": 1, "failures": 0},
    }
    assert OutlierSettings().consecutive_failures == 5  # the default, as Envoy's
