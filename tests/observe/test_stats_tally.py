"""One worker's own counts (gateway/observe/stats_tally.py): what the hooks add, what the flusher keeps."""

from __future__ import annotations

from gateway.observe.stats_report import latency_bin
from gateway.observe.stats_tally import Books, Tally


def test_a_request_counts_its_cache_result_latency_and_upstream_call() -> None:
    tally = Tally()
    tally.request(100, "HIT", 2000, upstream=False)
    tally.request(100, "MISS", 50_000, upstream=True)
    tally.request(100, "BYPASS", 9_000, upstream=True)
    tally.request(101, None, 500, upstream=False)  # not cacheable: a request, no result
    cache, breaker, cumulative = tally.take()
    assert cache == {100: {"req": 3, "hit": 1, "hit_us": 2000, "miss": 1, "miss_us": 50_000, "upstream": 2,
                           "bypass": 1},
                     101: {"req": 1}}
    assert breaker == {} and cumulative == {}


def test_cache_events_are_counted_and_unknown_ones_are_not() -> None:
    tally = Tally()
    assert tally.cache_event(5, "coalesced") and tally.cache_event(5, "upstream_call")
    assert not tally.cache_event(5, "hit")  # a result, counted with its request
    assert tally.take()[0] == {5: {"coalesced": 1, "upstream": 1}}


def test_breaker_calls_fill_the_window_and_the_cumulative_counters() -> None:
    tally = Tally()
    tally.call(7, "orders", "SUCCESS", 1.5)
    tally.call(7, "orders", "TIMEOUT", 30.0)
    tally.call(8, "orders", "FAILURE", 2.0)
    tally.count("orders|rej")
    _, breaker, cumulative = tally.take()
    assert breaker[7] == {"orders|ok": 1, "orders|fail": 1, "orders|us": 31_500,
                          f"orders|h{latency_bin(1.5)}": 1, f"orders|h{latency_bin(30.0)}": 1}
    assert breaker[8]["orders|fail"] == 1
    assert cumulative == {"orders|ok": 1, "orders|fail": 2, "orders|to": 1, "orders|rej": 1}


def test_take_leaves_an_empty_tally() -> None:
    tally = Tally()
    tally.count("rl/orders|limited")
    assert tally.take()[2] == {"rl/orders|limited": 1}
    assert tally.take() == ({}, {}, {})


def test_books_keep_each_family_for_its_own_history() -> None:
    books = Books(cache_history=300, breaker_history=12)
    books.add({100: {"req": 1}}, {100: {"a|ok": 1}}, {"a|ok": 1}, now=100)
    books.add({100: {"req": 2}}, {}, {"a|ok": 2}, now=111)
    assert books.cache == {100: {"req": 3}} and books.breaker == {100: {"a|ok": 1}}
    books.add({}, {}, {}, now=112)  # the breaker bucket is past its 12 s, the cache one is not
    assert books.cache == {100: {"req": 3}} and books.breaker == {}
    assert books.cumulative == {"a|ok": 3}  # cumulative counters never age


def test_unsent_deltas_are_held_until_sent_and_expire_with_their_history() -> None:
    books = Books(cache_history=300, breaker_history=12)
    assert not books.hold({}, {}, {})
    assert books.hold({100: {"req": 1}}, {100: {"a|ok": 1}}, {"a|ok": 1})
    assert books.hold({}, {}, {"a|ok": 1})  # still waiting: added to what is held
    assert books.unsent == ({100: {"req": 1}}, {100: {"a|ok": 1}}, {"a|ok": 2})
    books.expire_unsent(now=120)  # Redis down for long: the breaker bucket is dropped, the rest waits
    assert books.unsent == ({100: {"req": 1}}, {}, {"a|ok": 2})
    books.sent()
    assert books.unsent == ({}, {}, {})


def test_a_reset_forgets_one_service_everywhere_but_the_cache_counts() -> None:
    books = Books(cache_history=300, breaker_history=12)
    books.add({1: {"req": 1}}, {1: {"a|ok": 1, "b|ok": 1}}, {"a|ok": 1, "b|fail": 1}, now=1)
    books.hold({}, {1: {"a|fail": 1}}, {"a|rej": 1, "b|rej": 1})
    books.forget("a")
    assert books.breaker == {1: {"b|ok": 1}} and books.cumulative == {"b|fail": 1}
    assert books.unsent == ({}, {1: {}}, {"b|rej": 1}) and books.cache == {1: {"req": 1}}
