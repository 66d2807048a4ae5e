"""The injectable clocks."""

from __future__ import annotations

import time

from gateway.clock import FakeClock, system_clock


def test_the_fake_clock_moves_only_when_told() -> None:
    clock = FakeClock(start=100.0)
    assert clock() == clock() == 100.0
    clock.advance(2.5)
    assert clock() == 102.5


def test_the_system_clock_is_epoch_seconds() -> None:
    assert abs(system_clock() - time.time()) < 60
