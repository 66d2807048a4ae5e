"""Prometheus metrics: names, bounded labels, sums, and the multiprocess merge over workers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.breaker.core import Outcome
from gateway.clock import FakeClock
from gateway.config.settings import load_settings
from gateway.observe.metrics import Metrics
from gateway.observe.stats import GatewayStats

REPO = Path(__file__).resolve().parents[2]


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
    from gateway.config.settings import load_settings
    from gateway.observe.metrics import Metrics
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


def test_requests_by_code_and_breaker_outcomes(tmp_path: Path) -> None:
    stats, metrics = fed_stats(tmp_path)
    stats.record_request("order-service", "GET", 404, None, 0.001, 0.001)
    stats.record_request("order-service", "GET", 404, None, 0.001, 0.001)
    stats.record_request("order-service", "GET", 503, None, 0.001, 0.001)
    stats.record_request("order-service", "GET", 999, None, 0.001, None)
    for outcome in (Outcome.SUCCESS, Outcome.SUCCESS, Outcome.FAILURE, Outcome.TIMEOUT):
        stats.on_call("order-service", outcome, 0.01)
    stats.on_reject("order-service")
    found = samples(metrics.render()[0].decode())
    assert total(found, "gateway_requests_total", code="404", status_class="4xx") == 2
    assert total(found, "gateway_requests_total", code="503", status_class="5xx") == 1
    assert total(found, "gateway_requests_total", code="other", status_class="other") == 1
    calls = {o: total(found, "gateway_breaker_calls_total", service="order-service", outcome=o)
             for o in ("success", "failure", "timeout", "reject")}
    assert calls == {"success": 2, "failure": 1, "timeout": 1, "reject": 1}
    assert total(found, "gateway_breaker_calls_total", service="auth-service", outcome="reject") == 0  # exists at 0


class FakeStats:
    def __init__(self, entries: int | None, used: int | None) -> None:
        self.size = (entries, used)

    def cache_size(self) -> tuple[int | None, int | None]:
        return self.size


def test_scrape_time_metrics(tmp_path: Path) -> None:
    from gateway import __version__

    metrics = Metrics(load_settings({}))
    metrics.stats = FakeStats(3, 4096)
    found = samples(metrics.render()[0].decode())
    build = [ls for (n, ls) in found if n == "gateway_build_info"]
    assert len(build) == 1 and ("version", __version__) in build[0]
    assert found[("gateway_cache_entries", ())] == 3 and found[("gateway_cache_bytes", ())] == 4096
    assert found[("gateway_requests_in_flight", ())] == 0
    own = (("pid", str(os.getpid())),)
    assert found[("process_resident_memory_bytes", own)] > 0
    assert ("process_cpu_seconds_total", own) in found and ("process_open_fds", own) in found
    metrics.in_flight.inc()
    assert samples(metrics.render()[0].decode())[("gateway_requests_in_flight", ())] == 1


def test_cache_size_comes_from_the_stats(tmp_path: Path) -> None:
    from gateway.cache.responses import ResponseCache

    settings = load_settings({})
    stats = GatewayStats(settings, None, FakeClock(), str(tmp_path), flush_interval=0)
    cache = ResponseCache(settings, None, stats=stats)
    stats.cache = cache
    assert stats.cache_size() == (0, 0)


def test_openmetrics_when_the_scraper_asks(tmp_path: Path) -> None:
    stats, metrics = fed_stats(tmp_path)
    stats.record_request("order-service", "GET", 200, "HIT", 0.002, None)
    body, content_type = metrics.render("application/openmetrics-text;version=1.0.0,text/plain;q=0.5")
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    text = body.decode()
    assert text.endswith("# EOF\n") and "gateway_requests_total{" in text
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families

    names = {f.name for f in openmetrics_families(text)}
    assert {"gateway_requests", "gateway_build_info", "process_cpu_seconds"} <= names
    assert metrics.render("text/plain")[1].startswith("text/plain; version=0.0.4")
    assert metrics.render("*/*")[1].startswith("text/plain; version=0.0.4")


def promtool_check(text: bytes) -> None:
    """Run ``promtool check metrics`` on an exposition (skips with a hint where promtool is missing)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not found: install Debian's prometheus package (apt-get install prometheus)")
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=30)
    assert done.returncode == 0, (done.stdout + done.stderr).decode()


def test_promtool_accepts_the_exposition(tmp_path: Path) -> None:
    stats, metrics = fed_stats(tmp_path)
    stats.record_request("order-service", "GET", 200, "HIT", 0.002, None)
    stats.on_call("order-service", Outcome.TIMEOUT, 0.01)
    stats.on_state_change("order-service", "CLOSED", "OPEN")
    metrics.set_service_up("order-service", True)
    promtool_check(metrics.render()[0])
