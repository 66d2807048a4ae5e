"""The Gateway starts and stops its parts' background work in one place."""

from __future__ import annotations

from pathlib import Path

from gateway.build import build_gateway
from gateway.config.settings import BUILTIN_SERVICES, load_settings

# Every service on the discard port: the health poller's checks are refused at once.
DEAD = {variable: "http://127.0.0.1:9" for _, _, variable, _, _ in BUILTIN_SERVICES}


def test_start_runs_the_flusher_and_the_poller_once_and_stop_ends_them(tmp_path: Path) -> None:
    gw = build_gateway(load_settings({}, {**DEAD, "HEALTH_CHECK_INTERVAL": "30"}), run_dir=str(tmp_path))
    gw.start()
    flusher, poller = gw.stats._thread, gw.health._thread
    assert flusher is not None and flusher.is_alive() and poller is not None and poller.is_alive()
    gw.start()
    assert (gw.stats._thread, gw.health._thread) == (flusher, poller)  # nothing started twice
    gw.stop()
    assert gw.stats._thread is None and gw.health._thread is None and not flusher.is_alive()


def test_start_without_health_checks(tmp_path: Path) -> None:
    gw = build_gateway(load_settings({}, {**DEAD, "HEALTH_CHECK_INTERVAL": "30"}), run_dir=str(tmp_path))
    gw.start(health_checks=False)
    try:
        assert gw.stats._thread is not None and gw.health._thread is None
    finally:
        gw.stop()
