"""Backend chaos: under steady load one service is killed, made slow, made to fail, then restored.

The gateway must only give designed answers (the upstream's own 5xx while it sends them, the JSON
502/503/504, or a STALE entry), open the breaker within its configured failures, close it again
within the reset timeout plus one probe, keep every worker alive, and leave other services alone.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import pytest

from tests.support.chaos import JSON_ERRORS, Answer, Load, fetch, kinds, report, wait_for
from tests.support.processes import RedisServer, SampleServices, start_gateway

pytestmark = pytest.mark.e2e

CB_TIMEOUT = 0.5
RESET = 0.5
VOLUME = 3
WINDOW = 1
ORDER_TARGETS = ["/orders/_debug/echo?cc=no-store", "/orders/1"]
OTHER_TARGETS = ["/restaurants/_debug/echo?cc=no-store", "/delivery/_debug/status/200", "/restaurants/1"]
FAULTS = {
    "down": {"down": True},
    "slow": {"latency_ms": 1200},
    "errors": {"error_rate": 1.0, "status": 500},
}


def breaker(port: int) -> dict:
    answer = fetch(port, "/stats/circuit-breakers")
    assert answer.status == 200, answer
    return json.loads(answer.body)["services"]["order-service"]


def designed(answer: Answer, fault: str | None) -> bool:
    """Whether an order-service answer is one the gateway is designed to give under ``fault``."""
    if answer.status is None:
        return False
    if 200 <= answer.status < 300 or answer.x_cache == "STALE":
        return True
    if answer.status in JSON_ERRORS:
        ok = answer.code == JSON_ERRORS[answer.status]
        return ok and (answer.status != 503 or int(answer.headers.get("retry-after", "0")) >= 1)
    if answer.status == 500 and fault == "errors":
        return json.loads(answer.body).get("error") == "injected_fault"  # the upstream's own answer
    return False


def upstream_failed(answer: Answer) -> bool:
    return answer.status is None or answer.status >= 500 or answer.x_cache == "STALE"


def check_breaker_rule(load: Load, logs: list[dict], windows: list[tuple[str, float, float]],
                       figures: dict[str, dict]) -> None:
    """The breaker opened as its rule says and let one probe through per reset period.

    The gateway's log tells, per request id, the breaker state each request met. Before opening,
    the failures reaching the service can exceed the successes of the rolling window (plus one)
    only by the requests already in flight, and by those another worker let through on its held
    CLOSED answer before the opening reached it (at most one in flight each: the first one's reply
    ends the hold); after that only probes (HALF_OPEN) reach it.
    """
    met = {entry.get("request_id"): entry.get("breaker") for entry in logs}
    assert wait_for(lambda: all(a.request_id in met for a in load.answers[-20:]), 2.0)
    for fault, start, end in windows:
        window = load.between(start - WINDOW - 1, start, lambda a: a.status is not None and a.status < 500
                              and a.x_cache not in ("HIT", "STALE"))
        phase = load.between(start, end)
        closed_failures = [a for a in phase if met.get(a.request_id) == "CLOSED" and upstream_failed(a)]
        probes = [a for a in phase if met.get(a.request_id) == "HALF_OPEN"]
        assert any(met.get(a.request_id) == "OPEN" for a in phase), f"{fault}: nothing was rejected"
        assert len(closed_failures) <= len(window) + 1 + 2 * load.threads, (fault, len(closed_failures), len(window))
        assert len(probes) <= math.ceil((end - start) / RESET) + 1, (fault, len(probes))
        figures[fault].update(failures_before_open=len(closed_failures), window_successes=len(window),
                              probes=len(probes))


def test_service_killed_slowed_and_failing_under_load(clean_samples: SampleServices, redis_server: RedisServer,
                                                      tmp_path: Path, request: pytest.FixtureRequest) -> None:
    env = {**clean_samples.env(), "REDIS_URL": redis_server.url, "HEALTH_CHECK_INTERVAL": "0",
           "CB_TIMEOUT": str(CB_TIMEOUT), "CB_RESET_TIMEOUT": str(RESET), "CB_VOLUME_THRESHOLD": str(VOLUME),
           "CB_ROLLING_WINDOW": str(WINDOW), "CACHE_TTL": "1"}
    with start_gateway(env, 2, log_dir=tmp_path) as gw:
        pids = sorted(gw.worker_pids())
        assert len(pids) == 2
        for target in ORDER_TARGETS + OTHER_TARGETS:
            assert fetch(gw.port, target).status == 200
        orders = Load(gw.port, ORDER_TARGETS, threads=4, pause=0.005)
        others = Load(gw.port, OTHER_TARGETS, threads=2, pause=0.005)
        phases: list[tuple[str | None, float, float]] = []  # (fault, start, end)
        figures: dict[str, dict] = {}
        windows: list[tuple[str, float, float]] = []
        with orders, others:
            time.sleep(0.5)
            phases.append((None, 0.0, time.monotonic()))
            for fault, settings in FAULTS.items():
                started = time.monotonic()
                clean_samples.faults("order-service", **settings)
                assert wait_for(lambda: breaker(gw.port)["state"] != "CLOSED", 3.0), f"{fault}: breaker never opened"
                opened_after = time.monotonic() - started
                time.sleep(2 * RESET)  # long enough for a probe to fail and the breaker to reopen
                restored = time.monotonic()
                clean_samples.reset_faults("order-service")
                phases.append((fault, started, time.monotonic()))  # no request starting later meets the fault

                def recovered(since: float = restored) -> bool:
                    done = orders.between(since, math.inf, lambda a: "echo" in a.target and a.status is not None)
                    return any(a.status == 200 for a in done)

                # A probe in flight at restore time may still time out, then one reset period, then a probe.
                budget = RESET + 2 * CB_TIMEOUT + 0.5
                assert wait_for(recovered, budget + 1.0), f"{fault}: no recovery"
                first_ok = min(a.started for a in orders.between(restored, math.inf)
                               if "echo" in a.target and a.status == 200)
                recovery = first_ok - restored
                assert recovery <= budget, f"{fault}: recovered after {recovery:.2f} s"
                windows.append((fault, started, restored))
                # The breaker is closed once that first success ended (it was the probe or came after it).
                healthy_from = max(a.ended for a in orders.between(first_ok, first_ok + 1e-9))
                time.sleep(0.5)
                phases.append((None, healthy_from, time.monotonic()))
                figures[fault] = {"opened_after_s": round(opened_after, 3), "recovered_after_s": round(recovery, 3)}
        assert sorted(gw.worker_pids()) == pids, "a worker died"

        undesigned = []
        for answer in orders.answers:
            fault = next((f for f, start, end in phases if f and answer.started < end and answer.ended > start), None)
            if not designed(answer, fault):
                undesigned.append(answer)
        assert not undesigned, [(a.status, a.body[:300]) for a in undesigned[:5]]
        faulty = [(start, end) for fault, start, end in phases if fault]
        for fault, start, end in phases:
            if fault is None:  # requests of a healthy period that met no fault at all
                clear = orders.between(start, end, lambda a: not any(a.started < e and a.ended > s for s, e in faulty))
                bad = [a for a in clear if not 200 <= (a.status or 0) < 300]
                assert not bad, [(a.status, a.started - start, a.body[:300]) for a in bad[:5]]
        assert {a.kind() for a in others.answers} == {"2xx"}, kinds(others.answers)
        check_breaker_rule(orders, gw.json_logs(), windows, figures)
        logs = gw.log_text()
        assert "Traceback" not in logs and "unhandled error" not in logs
        report(request, "backend-chaos", requests=len(orders.answers) + len(others.answers),
               faulty_service=kinds(orders.answers), other_services=kinds(others.answers),
               faults=list(FAULTS), lost=sum(a.status is None for a in orders.answers + others.answers),
               worker_restarts=0, **figures)


PREFIXES = {"auth-service": "/auth", "order-service": "/orders", "restaurant-service": "/restaurants",
            "delivery-service": "/delivery", "tracking-service": "/tracking"}


@pytest.mark.soak
def test_random_faults_everywhere_for_ninety_seconds(clean_samples: SampleServices, redis_server: RedisServer,
                                                     tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Every two seconds a random service goes down, slow or failing (and Redis restarts now and then)."""
    env = {**clean_samples.env(), "REDIS_URL": redis_server.url, "HEALTH_CHECK_INTERVAL": "1",
           "CB_TIMEOUT": str(CB_TIMEOUT), "CB_RESET_TIMEOUT": str(RESET), "CB_ROLLING_WINDOW": "2",
           "CACHE_TTL": "2"}
    rng = random.Random(20261127)
    targets = [f"{p}/_debug/{t}" for p in PREFIXES.values() for t in ("echo?cc=no-store", "status/200")]
    faults: list[tuple[str, str, float, float]] = []  # (service, fault, start, end)
    redis_restarts = 0
    with start_gateway(env, 2, log_dir=tmp_path) as gw:
        pids = sorted(gw.worker_pids())
        with Load(gw.port, targets, threads=6, pause=0.005, max_requests=1_000_000) as load:
            deadline = time.monotonic() + 90
            round_ = 0
            while time.monotonic() < deadline:
                round_ += 1
                service, fault = rng.choice(list(PREFIXES)), rng.choice(list(FAULTS))
                start = time.monotonic()
                clean_samples.faults(service, **FAULTS[fault])
                if round_ % 10 == 0:
                    redis_server.restart()
                    redis_restarts += 1
                time.sleep(rng.uniform(0.5, 2.0))
                clean_samples.reset_faults(service)
                faults.append((service, fault, start, time.monotonic()))
                time.sleep(rng.uniform(0.2, 1.5))
            time.sleep(RESET + 2 * CB_TIMEOUT + 1.0)  # every breaker closes again
            settled = time.monotonic()
            time.sleep(1.0)
        assert sorted(gw.worker_pids()) == pids, "a worker died"

    def service_of(answer: Answer) -> str:
        return next(name for name, prefix in PREFIXES.items() if answer.target.startswith(prefix + "/"))

    undesigned = []
    for answer in load.answers:
        met = {f for s, f, start, end in faults if s == service_of(answer) and answer.started < end
               and answer.ended > start}
        recovering = any(s == service_of(answer) and end <= answer.started < end + RESET + 2 * CB_TIMEOUT + 1.0
                         for s, _, _, end in faults)
        if answer.status is None:
            undesigned.append(answer)
        elif not met and not recovering:
            if not 200 <= answer.status < 300:
                undesigned.append(answer)
        elif not designed(answer, "errors" if "errors" in met else None):
            undesigned.append(answer)
    assert not undesigned, [(a.target, a.status, a.body[:200]) for a in undesigned[:5]]
    final = load.between(settled, float("inf"))
    assert final and all(a.status == 200 for a in final), kinds(final)
    assert "Traceback" not in gw.log_text()
    report(request, "chaos-soak", duration_s=90, requests=len(load.answers),
           faults_injected=len(faults), redis_restarts=redis_restarts, answers=kinds(load.answers),
           lost=sum(a.status is None for a in load.answers))
