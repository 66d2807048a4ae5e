"""Process lifecycle (gateway/observe/lifecycle.py): when this worker started, and whether it is draining."""

from __future__ import annotations

import time

from gateway.observe.lifecycle import Lifecycle


def test_a_new_worker_is_serving_since_it_was_built() -> None:
    before = time.time()
    lifecycle = Lifecycle()
    assert before <= lifecycle.started_at <= time.time()
    assert lifecycle.draining is False


def test_drain_is_for_good() -> None:
    lifecycle = Lifecycle()
    lifecycle.drain()
    lifecycle.drain()
    assert lifecycle.draining is True
