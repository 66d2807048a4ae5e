"""Entries: built from an upstream answer or a 304, their ages and variants, an encoding that trusts nothing."""

from __future__ import annotations

import pickle

import msgpack
import pytest

from gateway.cache.entry import Entry, arrived, decode, encode, revalidated
from tests.support.cache import DATE, T0, h, make_call


def test_an_arrived_answer_is_dated_and_given_its_lifetime_and_variant() -> None:
    call = make_call(headers=h("Accept: json"))
    entry = arrived(call, 200, h("Cache-Control: max-age=60", "Vary: Accept"), b"b", 0.5, T0)
    assert entry.headers == h("Cache-Control: max-age=60", "Vary: Accept", "Date: " + DATE)
    assert (entry.request_time, entry.response_time, entry.lifetime, entry.heuristic) == (T0 - 0.5, T0, 60.0, False)
    assert (entry.vary_names, entry.vary_values, entry.personal) == (["accept"], ["json"], False)
    assert entry.matches(h("Accept: json")) and not entry.matches(h("Accept: xml")) and not entry.matches([])


def test_an_arrived_answer_without_freshness_gets_the_services_ttl_and_credentials_make_it_personal() -> None:
    entry = arrived(make_call(headers=h("Cookie: s=1")), 200, h("Cache-Control: must-revalidate"), b"", 0.0, T0)
    assert (entry.lifetime, entry.heuristic, entry.personal) == (300.0, True, True)
    assert arrived(make_call(), 302, [], b"", 0.0, T0).lifetime == 0.0  # nothing applies


def test_a_304_refreshes_headers_times_and_lifetime() -> None:
    entry = arrived(make_call(), 200, h("Cache-Control: max-age=10", 'ETag: "v1"', "X-A: 1"), b"b", 0.0, T0)
    later = revalidated(entry, h("Cache-Control: max-age=99"), 0.25, T0 + 50, 300.0)
    assert (later.lifetime, later.response_time, later.request_time, later.body) == (99.0, T0 + 50, T0 + 49.75, b"b")
    assert ("X-A", "1") in later.headers and later.age(T0 + 50) == pytest.approx(0.25)
    assert entry.lifetime == 10.0  # the stored entry itself is never changed


def test_age_counts_the_age_on_arrival_and_the_time_resident() -> None:
    entry = arrived(make_call(), 200, h("Cache-Control: max-age=60", "Age: 7"), b"", 0.0, T0)
    assert entry.initial_age == 7 and entry.age(T0 + 10) == 17 and entry.age(T0 - 5) == 7
    assert entry.reuse({}, T0 + 52) == "fresh" and entry.reuse({}, T0 + 53) == "stale"
    assert entry.reuse({"max-age": "5"}, T0) == "stale"


def test_kept_for_covers_freshness_and_the_stale_windows() -> None:
    entry = arrived(make_call(), 200, h("Cache-Control: max-age=60, stale-if-error=600"), b"", 0.0, T0)
    assert entry.kept_for(grace=300.0) == 660.0 and entry.kept_for(grace=900.0) == 960.0


def test_the_variant_id_is_stable_and_differs_per_vary_value() -> None:
    one = arrived(make_call(headers=h("Accept: a")), 200, h("Vary: Accept"), b"", 0.0, T0)
    same = arrived(make_call(headers=h("Accept: a")), 200, h("Vary: Accept"), b"other", 0.0, T0 + 9)
    other = arrived(make_call(headers=h("Accept: b")), 200, h("Vary: Accept"), b"", 0.0, T0)
    assert one.variant_id() == same.variant_id() != other.variant_id() and len(one.variant_id()) == 16


def test_an_entry_survives_its_encoding() -> None:
    entry = arrived(make_call(headers=h("Cookie: s", "Accept: a")), 206,
                    h("Cache-Control: public", "Vary: Accept, X-None", "Content-Range: bytes 0-0/2"), b"\0", 0.1, T0)
    back = decode(encode(entry))
    assert back == entry and back is not entry and back.vary_values == ["a", None]


def valid() -> dict:
    return msgpack.unpackb(encode(Entry(200, h("A: 1"), b"b", T0, T0, 1.0, False, False)), raw=False)


@pytest.mark.parametrize("change", [
    {"f": 2}, {"s": "200"}, {"b": "text"}, {"h": [["A"]]}, {"h": [["A", 1]]}, {"qt": True}, {"lt": "1"},
    {"vn": ["a"], "vv": []}, {"vv": [1], "vn": ["a"]}, {"vn": [1], "vv": [None]},
])
def test_anything_not_exactly_an_entry_decodes_to_a_miss(change: dict) -> None:
    assert decode(msgpack.packb({**valid(), **change}, use_bin_type=True)) is None


@pytest.mark.parametrize("raw", [pickle.dumps({"s": 200}), b"", b"\xc1", "text", None, msgpack.packb([1, 2])])
def test_garbage_decodes_to_a_miss(raw: object) -> None:
    assert decode(raw) is None


def test_a_missing_field_decodes_to_a_miss() -> None:
    data = valid()
    del data["hu"]
    assert decode(msgpack.packb(data, use_bin_type=True)) is None
    assert decode(msgpack.packb(valid(), use_bin_type=True)) is not None
