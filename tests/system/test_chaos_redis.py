"""Redis chaos: under load the shared store is killed and restarted, frozen (SIGSTOP) and put to sleep.

A store that fails must never fail a request: every answer stays 2xx from healthy services, the
cache says BYPASS while Redis is gone, the gateway reconnects by itself and HITs again, and the
breakers fall back to each worker's own and return to the shared one.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest

from tests.support.chaos import Answer, Load, fetch, kinds, report, wait_for
from tests.support.processes import SampleServices, start_gateway
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.e2e

TOKEN = "redis-chaos-admin"
CACHED = ["/restaurants/1", "/restaurants/2", "/orders/1"]
TARGETS = [*CACHED, "/tracking/_debug/status/200"]
# A request may meet a few Redis timeouts (lookup, breaker, store) before the link skips Redis.
SLOW_STORE_BOUND_S = 1.5


def hits_again(load: Load, since: float) -> bool:
    """Whether every cached target was answered HIT by a request started after ``since``."""
    recent = load.between(since, float("inf"), lambda a: a.x_cache == "HIT")
    return {a.target for a in recent} >= set(CACHED)


def test_redis_killed_restarted_frozen_and_sleeping(clean_samples: SampleServices, redis_server_factory,  # noqa: ANN001
                                                    tmp_path: Path, request: pytest.FixtureRequest) -> None:
    redis_server = redis_server_factory("--enable-debug-command", "yes")
    env = {**clean_samples.env(), "REDIS_URL": redis_server.url, "HEALTH_CHECK_INTERVAL": "0",
           "ADMIN_TOKEN": TOKEN, "CB_RESET_TIMEOUT": "0.5", "CB_TIMEOUT": "1"}
    figures: dict[str, object] = {}
    with start_gateway(env, 2, log_dir=tmp_path) as gw:
        pids = sorted(gw.worker_pids())
        with Load(gw.port, TARGETS, threads=4, pause=0.005) as load:
            assert wait_for(lambda: hits_again(load, 0.0), 3.0)

            # 1. Killed: BYPASS, no errors, and the breakers fall back to each worker's own.
            killed = time.monotonic()
            redis_server.kill()
            time.sleep(1.0)
            gone = load.between(killed + 0.3, time.monotonic(), lambda a: a.target in CACHED)
            assert gone and all(a.x_cache == "BYPASS" for a in gone), kinds(gone)
            assert b'"redis":"down"' in fetch(gw.port, "/health").body.replace(b" ", b"")
            clean_samples.faults("delivery-service", error_rate=1.0, status=500)
            local = [fetch(gw.port, "/delivery/_debug/status/200").status for _ in range(12)]
            clean_samples.reset_faults("delivery-service")
            assert 503 in local, local  # the in-process breakers still open
            figures["fallback_breaker_answers"] = local

            # 2. Restarted (empty): reconnects by itself and HITs again.
            restarted = time.monotonic()
            redis_server.start()
            assert wait_for(lambda: hits_again(load, restarted), 5.0), "no HIT after Redis came back"
            figures["hit_again_after_restart_s"] = round(
                min(a.started for a in load.between(restarted, float("inf"), lambda a: a.x_cache == "HIT"))
                - restarted, 3)

            # 3. Frozen with SIGSTOP: answers stay 2xx and none waits long on the store.
            frozen = time.monotonic()
            redis_server.pause(1.0).join()
            assert wait_for(lambda: hits_again(load, frozen + 1.0), 5.0), "no HIT after SIGCONT"

            # 4. DEBUG SLEEP: Redis busy for a second.
            sleeping = time.monotonic()
            sleeper = threading.Thread(target=lambda: redis_server.client(socket_timeout=5).execute_command(
                "DEBUG", "SLEEP", "1"))
            sleeper.start()
            sleeper.join()
            assert wait_for(lambda: hits_again(load, sleeping + 1.0), 5.0), "no HIT after DEBUG SLEEP"
        answers = load.answers

    # Every answer of the load, through every fault, came from a healthy service: 2xx.
    failed: list[Answer] = [a for a in answers if a.status is None or not 200 <= a.status < 300]
    assert not failed, failed[:5]
    for start, name in ((frozen, "sigstop"), (sleeping, "debug_sleep")):
        during = load.between(start, start + 1.0)
        slowest = max(a.ended - a.started for a in during)
        assert slowest < SLOW_STORE_BOUND_S, (name, slowest)
        figures[f"{name}_slowest_answer_s"] = round(slowest, 3)
        figures[f"{name}_answers"] = kinds(during)
    assert sorted(gw.worker_pids()) == pids or not gw.running()
    report(request, "redis-chaos", requests=len(answers), answers=kinds(answers),
           x_cache={c: sum(a.x_cache == c for a in answers) for c in ("HIT", "MISS", "BYPASS")},
           faults=["kill", "restart", "sigstop 1s", "debug sleep 1s"], lost=0, **figures)


def test_breaker_returns_to_the_shared_one_after_redis_comes_back(clean_samples: SampleServices,
                                                                  redis_server_factory,  # noqa: ANN001
                                                                  tmp_path: Path) -> None:
    redis_server = redis_server_factory()
    env = {**clean_samples.env(), "REDIS_URL": redis_server.url, "HEALTH_CHECK_INTERVAL": "0",
           "ADMIN_TOKEN": TOKEN, "CB_RESET_TIMEOUT": "30"}
    with start_gateway(env, 2, log_dir=tmp_path) as gw:
        assert fetch(gw.port, "/delivery/_debug/status/200").status == 200
        redis_server.kill()
        assert [fetch(gw.port, "/delivery/_debug/status/200").status for _ in range(4)] == [200] * 4
        redis_server.start()
        # Once the link has reconnected, a state forced through one worker holds for both: the breaker
        # lives in Redis again, not in the worker that took the admin request.
        assert wait_for(lambda: b'"redis":"up"' in fetch(gw.port, "/health").body.replace(b" ", b""), 5.0)
        time.sleep(1.2)  # past the link's skip period in every worker
        forced = fetch(gw.port, "/admin/circuit-breakers/delivery-service/open", "POST",
                       {"Authorization": f"Bearer {TOKEN}"})
        assert forced.status == 200, forced
        assert [fetch(gw.port, "/delivery/_debug/status/200").status for _ in range(20)] == [503] * 20
        keys = [k.decode() for k in redis_server.client().scan_iter("gw:cb:*")]
        assert any("delivery" in k for k in keys), keys


# -- Redis faults while breakers move ------------------------------------------------------------
#
# Each phase: a service fails until its breaker is open in Redis, then Redis fails in one way while
# the service comes back. Judged phase by phase: no answer is lost, no 500 comes from the gateway
# itself, the services that never failed answer 2xx throughout, and the recovered one answers only
# 2xx once the reset timeout, one probe (at most CB_TIMEOUT) and one Redis timeout have passed.

RESET_S = 0.5
PROBE_S = 1.0  # CB_TIMEOUT: the longest a probe may take
REDIS_TIMEOUT_S = 0.25  # the link's socket timeout
FAULT_S = 1.5
SLOW_PROBE_MS = 400  # "during a probe" phases: the recovered service answers slowly, so a probe is out
FLAKY = "/tracking/_debug/status/200"  # tracking-service: not cached, every request meets the breaker
# The faults that once shut a healthy service out run in `make test`; the others in `make soak`.
PHASES = [*("stall_during_a_probe", "drop_during_a_probe", "kill_during_a_probe", "stall"),
          *(pytest.param(p, marks=pytest.mark.soak)
            for p in ("slow", "slower_than_the_timeout", "drop_mid_reply", "restart_empty"))]


def gateway_failures(answers: list[Answer]) -> list[Answer]:
    """Answers the gateway failed: none at all, or its own 500 (a 500 from a service is passed on as it is)."""
    return [a for a in answers if a.status is None or (a.status == 500 and a.code == "internal_error")]


def apply_fault(phase: str, redis_server, proxy: TcpProxy) -> None:  # noqa: ANN001
    if phase.startswith("stall"):
        redis_server.signal_group(signal.SIGSTOP)
    elif phase == "slow":
        proxy.latency = 0.1  # every reply late, within the link's timeout
    elif phase == "slower_than_the_timeout":
        proxy.latency = 0.4
    elif phase.startswith("drop"):
        proxy.drop_replies = True
    elif phase.startswith("kill"):
        redis_server.kill()
    elif phase == "restart_empty":
        redis_server.restart()


def clear_fault(phase: str, redis_server, proxy: TcpProxy) -> None:  # noqa: ANN001
    if phase.startswith("stall"):
        redis_server.resume()
    elif phase.startswith("kill"):
        redis_server.start()  # empty: no persistence
    proxy.reset()


@pytest.mark.parametrize("phase", PHASES)
def test_breakers_keep_their_rules_whatever_redis_does(clean_samples: SampleServices, redis_server_factory,  # noqa: ANN001
                                                       tmp_path: Path, request: pytest.FixtureRequest,
                                                       phase: str) -> None:
    redis_server = redis_server_factory()
    with TcpProxy(redis_server.port) as proxy:
        env = {**clean_samples.env(), "REDIS_URL": proxy.url, "HEALTH_CHECK_INTERVAL": "0",
               "CB_RESET_TIMEOUT": str(RESET_S), "CB_TIMEOUT": str(PROBE_S), "CB_ROLLING_WINDOW": "2"}
        with start_gateway(env, 2, log_dir=tmp_path) as gw, \
                Load(gw.port, [*CACHED, FLAKY], threads=4, pause=0.005) as load:
            assert wait_for(lambda: hits_again(load, 0.0), 5.0)
            # The service fails until its breaker is open gateway-wide.
            failing = time.monotonic()
            clean_samples.faults("tracking-service", error_rate=1.0, status=500)
            assert wait_for(lambda: load.between(failing, float("inf"), lambda a: a.target == FLAKY
                                                 and a.code == "circuit_open"), 5.0), "the breaker never opened"
            if phase.endswith("during_a_probe"):
                # Back, but slow: wait until the probe is out, then fail Redis under it.
                clean_samples.reset_stats("tracking-service")
                clean_samples.faults("tracking-service", error_rate=0.0, latency_ms=SLOW_PROBE_MS)
                healed = time.monotonic()
                assert wait_for(lambda: clean_samples.stats("tracking-service")["requests"] >= 1, 5.0, 0.01)
                faulted = time.monotonic()
                apply_fault(phase, redis_server, proxy)
            else:
                faulted = time.monotonic()
                apply_fault(phase, redis_server, proxy)
                clean_samples.reset_faults("tracking-service")
                healed = time.monotonic()
            time.sleep(FAULT_S)  # the fault lasts
            cleared = time.monotonic()
            clear_fault(phase, redis_server, proxy)
            assert wait_for(lambda: hits_again(load, cleared + REDIS_TIMEOUT_S), 10.0), "no HIT after the fault"
            settled = healed + RESET_S + PROBE_S + REDIS_TIMEOUT_S
            time.sleep(max(0.0, settled + 1.0 - time.monotonic()))  # answers well past the bound
            ended = time.monotonic()
        answers = load.answers
        clean_samples.reset_faults("tracking-service")
    phase_answers = [a for a in answers if a.started >= failing]
    failed = gateway_failures(phase_answers)
    assert not failed, [(a.target, a.status, a.error, a.body[:100]) for a in failed[:5]]
    never_failed = [a for a in phase_answers if a.target in CACHED]
    assert never_failed and all(200 <= (a.status or 0) < 300 for a in never_failed), kinds(never_failed)
    recovered = [a for a in phase_answers if a.target == FLAKY and a.started >= settled]
    shut_out = [a for a in recovered if not 200 <= (a.status or 0) < 300]
    assert recovered and not shut_out, (kinds(shut_out), [round(a.started - healed, 3) for a in shut_out[:10]])
    first_2xx = min((a.started for a in phase_answers if a.target == FLAKY and a.started >= healed
                     and a.status == 200), default=float("nan"))
    report(request, "redis-faults-breakers", phase=phase, requests=len(phase_answers),
           answers=kinds(phase_answers), gateway_failures=len(failed), shut_out_after_bound=len(shut_out),
           fault_s=round(cleared - faulted, 3), first_2xx_after_heal_s=round(first_2xx - healed, 3),
           bound_s=round(settled - healed, 3), judged_s=round(ended - settled, 3))
