"""Circuit breakers end to end: gunicorn workers, sample services switched to failing, shared Redis."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.support.chaos import wait_for
from tests.support.processes import RedisServer, SampleServices, start_gateway
from tests.support.topology import SharedRedis

pytestmark = pytest.mark.e2e


def get(url: str, path: str, **kwargs) -> requests.Response:  # noqa: ANN003
    return requests.get(url + path, timeout=5, **kwargs)


def breaker_stats(url: str, service: str = "tracking-service") -> dict:
    return get(url, "/stats/circuit-breakers").json()["services"][service]


def test_defaults_open_on_the_third_failure_and_recover(clean_samples: SampleServices, tmp_path: Path) -> None:
    env = {**clean_samples.env(), "HEALTH_CHECK_INTERVAL": "0", "CB_RESET_TIMEOUT": "0.6"}
    with start_gateway(env, 1, log_dir=tmp_path) as gw:
        # tracking-service is not cached, so every 200 below is a call to it.
        clean_samples.faults("tracking-service", error_rate=1.0, status=500)
        statuses = [get(gw.url, "/tracking/_debug/status/200").status_code for _ in range(4)]
        assert statuses == [500, 500, 500, 503]
        answer = get(gw.url, "/tracking/_debug/status/200")
        assert answer.status_code == 503
        assert answer.json()["error"]["code"] == "circuit_open"
        assert int(answer.headers["Retry-After"]) >= 1
        calls_while_open = clean_samples.stats("tracking-service")["requests"]
        assert calls_while_open == 3  # nothing reached the service while open

        clean_samples.reset_faults("tracking-service")
        time.sleep(0.7)
        assert get(gw.url, "/tracking/_debug/status/200").status_code == 200  # the probe
        assert get(gw.url, "/tracking/_debug/status/200").status_code == 200
        assert breaker_stats(gw.url, "tracking-service")["state"] == "CLOSED"
        counts = ("fires", "successes", "failures", "rejects")
        wait_for(lambda: [breaker_stats(gw.url, "tracking-service")[k] for k in counts] == [7, 2, 3, 2], 3.0)
        assert [breaker_stats(gw.url, "tracking-service")[k] for k in counts] == [7, 2, 3, 2]


def test_dead_service_opens_with_502s_then_503(clean_samples: SampleServices, tmp_path: Path) -> None:
    env = {**clean_samples.env(), "HEALTH_CHECK_INTERVAL": "0"}
    with start_gateway(env, 1, log_dir=tmp_path) as gw:
        clean_samples.faults("tracking-service", down=True)
        statuses = [get(gw.url, "/tracking/_debug/status/200").status_code for _ in range(4)]
        assert statuses == [502, 502, 502, 503]


def test_two_workers_share_one_breaker_through_redis(clean_samples: SampleServices, redis_server: RedisServer,
                                                     tmp_path: Path) -> None:
    env = {**clean_samples.env(), "HEALTH_CHECK_INTERVAL": "0", "REDIS_URL": redis_server.url,
           "CB_RESET_TIMEOUT": "30"}
    with start_gateway(env, 2, log_dir=tmp_path) as gw:
        clean_samples.faults("tracking-service", error_rate=1.0, status=500)
        # A new connection per request, so both workers take turns; per-worker breakers would let
        # three failures through each.
        statuses = [get(gw.url, "/tracking/_debug/status/200").status_code for _ in range(20)]
        assert statuses == [500] * 3 + [503] * 17
        assert clean_samples.stats("tracking-service")["requests"] == 3
        assert len(gw.worker_pids()) == 2


def test_two_instances_see_one_breaker_and_let_one_probe_through(clean_samples: SampleServices,
                                                                 shared_redis: SharedRedis, tmp_path: Path) -> None:
    """On one redis-server, a Sentinel set and a Redis Cluster in turn."""
    env = {**clean_samples.env(), "HEALTH_CHECK_INTERVAL": "0", **shared_redis.env(),
           "WEB_CONCURRENCY": "1", "CB_RESET_TIMEOUT": "0.5", "CB_TIMEOUT": "3"}
    with start_gateway(env, 1, log_dir=tmp_path / "a") as one, start_gateway(env, 1, log_dir=tmp_path / "b") as two:
        clean_samples.faults("tracking-service", error_rate=1.0, status=500)
        assert [get(one.url, "/tracking/_debug/status/200").status_code for _ in range(3)] == [500, 500, 500]
        assert get(two.url, "/tracking/_debug/status/200").status_code == 503  # opened by the other instance
        assert breaker_stats(two.url)["state"] == "OPEN"

        clean_samples.reset_faults("tracking-service")
        clean_samples.reset_stats("tracking-service")
        time.sleep(0.6)
        # A slow probe: while it is out, every other request through either instance gets 503.
        with ThreadPoolExecutor(12) as pool:
            probe = pool.submit(get, one.url, "/tracking/_debug/slow-headers?ms=800")
            assert wait_for(lambda: clean_samples.stats("tracking-service")["requests"] == 1, 3.0, 0.01)
            others = list(pool.map(lambda i: get((one, two)[i % 2].url, "/tracking/_debug/status/200").status_code,
                                   range(10)))
            assert probe.result().status_code == 200
        assert others == [503] * 10
        assert clean_samples.stats("tracking-service")["requests"] == 1
        assert get(two.url, "/tracking/_debug/status/200").status_code == 200
        assert breaker_stats(one.url)["state"] == "CLOSED"


def test_redis_killed_mid_test_falls_back_to_local_breakers(clean_samples: SampleServices,
                                                            redis_server: RedisServer, tmp_path: Path) -> None:
    env = {**clean_samples.env(), "HEALTH_CHECK_INTERVAL": "0", "REDIS_URL": redis_server.url}
    with start_gateway(env, 1, log_dir=tmp_path) as gw:
        assert get(gw.url, "/tracking/_debug/status/200").status_code == 200
        redis_server.kill()
        statuses = [get(gw.url, "/tracking/_debug/status/200").status_code for _ in range(5)]
        assert statuses == [200] * 5
        clean_samples.faults("tracking-service", error_rate=1.0, status=500)
        statuses = [get(gw.url, "/tracking/_debug/status/200").status_code for _ in range(7)]
        # The in-process fallback has the same rules: 6 failures of 11 calls is over 50 %.
        assert statuses == [500] * 6 + [503]
        health = get(gw.url, "/health").json()
        assert health["redis"] == "down" and health["status"] == "ok"
        assert "Traceback" not in gw.log_text()
        assert all(json.loads(line).get("status", 200) != 500 for line in gw.stdout_text().splitlines()
                   if line.startswith("{") and '"message": "request"' in line and "_debug/status" not in line)
