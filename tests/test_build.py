"""build_gateway: every part made once and handed what it needs; nothing started."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.build import build_gateway
from gateway.clock import FakeClock
from gateway.config.settings import load_settings
from gateway.engine import Gateway
from gateway.messages import ProxyCall, ProxyResponse
from tests.support.cache import make_call


def test_each_part_is_handed_the_parts_it_reports_to_and_reads(tmp_path: Path) -> None:
    clock = FakeClock()
    gw = build_gateway(load_settings({}), clock=clock, run_dir=str(tmp_path))
    assert gw.stats.metrics is gw.metrics and gw.stats.history is gw.history and gw.history.metrics is gw.metrics
    assert gw.stats in gw.breakers.listeners and gw.cache.stats is gw.stats
    assert gw.stats.breakers is gw.breakers and gw.stats.cache is gw.cache
    assert gw.metrics.breakers is gw.breakers and gw.metrics.stats is gw.stats
    assert gw.health.metrics is gw.metrics and gw.requests.stats is gw.stats
    assert gw.requests.in_flight is gw.metrics.in_flight
    assert gw.stats.run_dir == gw.health.run_dir == gw.history.run_dir == str(tmp_path)
    assert gw.stats.clock is clock and gw.health.clock is clock and gw.cache.clock is clock
    assert gw.link is None and gw.bus is None  # no Redis, one worker
    assert gw.stats._thread is None and gw.health._thread is None  # nothing runs before start()


def test_the_refresher_is_the_request_flow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gw = build_gateway(load_settings({}), run_dir=str(tmp_path))
    refreshed: list[tuple[ProxyCall, Gateway, bool]] = []

    def flow(call: ProxyCall, engine: Gateway, guard: bool = True) -> ProxyResponse:
        refreshed.append((call, engine, guard))
        return ProxyResponse(status=200, headers=[], body=b"")

    monkeypatch.setattr("gateway.forwarder.forward_request", flow)
    assert gw.cache.refresher is not None
    call = make_call()
    gw.cache.refresher(call)
    assert refreshed == [(call, gw, False)]  # unguarded: no client sent it


def test_several_workers_without_redis_share_a_bus(tmp_path: Path) -> None:
    instance = {"GATEWAY_RUN_DIR": str(tmp_path)}  # gunicorn.conf.py sets it for its workers
    gw = build_gateway(load_settings(instance, {"WEB_CONCURRENCY": "2"}))
    assert gw.bus is not None and gw.breakers.bus is gw.bus
    assert gw.stats.run_dir == str(tmp_path)
    assert build_gateway(load_settings(instance, {"WEB_CONCURRENCY": "1"})).bus is None
