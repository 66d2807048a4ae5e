"""Prometheus metrics: names, bounded labels, sums, and the multiprocess merge over workers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from gateway.breaker import Outcome
from gateway.clock import FakeClock
from gateway.config import load_settings
from gateway.metrics import Metrics
from gateway.stats import GatewayStats

REPO = Path(__file__).resolve().parent.parent


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by name and sorted labels."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def total(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in found.items() if n == name and all((k, x) in ls for k, x in labels.items()))


def fed_stats(tmp_path: Path) -> tuple[GatewayStats, Metrics]:
    settings = load_settings({})
    stats = GatewayStats(settings, None, FakeClock(), str(tmp_path), flush_interval=0)
    metrics = Metrics(settings)
    stats.metrics = metrics
    return stats, metrics


def test_requests_and_cache_counters(tmp_path: Path) -> None:
    stats, metrics = fed_stats(tmp_path)
    for _ in range(5):
        stats.record_request("order-service", "GET", 200, "HIT", 0.002, None)
    stats.record_request("order-service", "GET", 200, "MISS", 0.03, 0.02)
    stats.record_request("order-service", "BREW", 405, None, 0.001, None)
    stats.record_request("no-such-service", "POST", 502, "BYPASS", 0.1, 0.1)
    stats.record_cache("coalesced")
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain; version=")
    found = samples(body.decode())
    assert total(found, "gateway_requests_total") == 8
    assert total(found, "gateway_requests_total", cache="hit", status_class="2xx", method="GET") == 5
    assert total(found, "gateway_requests_total", method="OTHER", cache="none", status_class="4xx") == 1
    assert total(found, "gateway_requests_total", service="other", status_class="5xx") == 1
    assert total(found, "gateway_request_duration_seconds_count") == 8
    assert total(found, "gateway_request_duration_seconds_sum") == 0.002 * 5 + 0.03 + 0.001 + 0.1
    assert total(found, "gateway_upstream_duration_seconds_count") == 2
    assert total(found, "gateway_cache_events_total", event="hit") == 5
    assert total(found, "gateway_cache_events_total", event="coalesced") == 1
    assert total(found, "gateway_cache_events_total", event="upstream_call") == 2
    labels = {dict(ls).get("service") for (_, ls) in found if dict(ls).get("service")}
    assert labels <= set(load_settings({}).services) | {"other"}


def test_breaker_metrics(tmp_path: Path) -> None:
    stats, metrics = fed_stats(tmp_path)
    stats.on_call("delivery-service", Outcome.FAILURE, 0.01)
    stats.on_state_change("delivery-service", "CLOSED", "OPEN")
    stats.on_reject("delivery-service")
    stats.on_reject("delivery-service")
    found = samples(metrics.render()[0].decode())
    assert found[("gateway_breaker_state", (("service", "delivery-service"),))] == 2
    key = ("gateway_breaker_transitions_total", (("from", "CLOSED"), ("service", "delivery-service"), ("to", "OPEN")))
    assert found[key] == 1
    assert found[("gateway_breaker_rejects_total", (("service", "delivery-service"),))] == 2
    assert found[("gateway_breaker_rejects_total", (("service", "order-service"),))] == 0
    metrics.set_service_up("order-service", False)
    found = samples(metrics.render()[0].decode())
    assert found[("gateway_service_up", (("service", "order-service"),))] == 0


WORKER = textwrap.dedent("""
    import sys
    from gateway.config import load_settings
    from gateway.metrics import Metrics
    metrics = Metrics(load_settings({}))
    assert metrics.multiprocess
    for _ in range(int(sys.argv[1])):
        metrics.observe_request("order-service", "GET", 200, "HIT", 0.001, None)
    metrics.breaker_transition("order-service", "CLOSED", sys.argv[2])
    if sys.argv[3] == "render":
        sys.stdout.write(metrics.render()[0].decode())
""")


def test_multiprocess_sums_over_workers(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(REPO)}

    def worker(*args: str) -> str:
        done = subprocess.run([sys.executable, "-c", WORKER, *args], env=env, capture_output=True, text=True,
                              timeout=60, cwd=REPO)
        assert done.returncode == 0, done.stderr
        return done.stdout

    worker("3", "OPEN", "quiet")
    found = samples(worker("4", "CLOSED", "render"))
    assert total(found, "gateway_requests_total") == 7
    assert total(found, "gateway_request_duration_seconds_count") == 7
    # Embedded mode: the worst breaker of the workers counts (both still have their files here).
    assert total(found, "gateway_breaker_state", service="order-service") == 2
