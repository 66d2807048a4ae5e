"""The in-process half of coalescing: one leader per name, its waiters woken when it lets go."""

from __future__ import annotations

import threading

from gateway.cache.coalescing import Coalesced, Inflight, Lead


def test_the_first_to_join_leads_and_the_others_wait_for_it() -> None:
    inflight = Inflight()
    assert inflight.join("k") is None
    event = inflight.join("k")
    assert event is not None and inflight.join("k") is event and not event.is_set()
    assert inflight.join("other") is None  # names are independent
    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(event.wait(2)))
    waiter.start()
    inflight.leave("k")
    waiter.join(2)
    assert woke == [True]
    assert inflight.join("k") is None  # the next one leads anew


def test_leaving_what_was_never_led_is_harmless() -> None:
    Inflight().leave("nobody")


def test_what_coalescing_hands_back_starts_empty() -> None:
    assert Coalesced() == Coalesced(lead=None, found=None, fresh=False)
    assert Lead("k").token is None
