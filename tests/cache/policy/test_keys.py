"""Keys, Vary and credentials: which stored answers a request may meet; what a write drops."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.cache.policy import keys
from tests.support.cache import SERVICE, h, make_call


@pytest.mark.parametrize("resp, req, expected", [
    (h("Vary: Accept-Encoding"), h("Accept-Encoding: gzip"), ["gzip"]),
    (h("Vary: accept-encoding, Accept"), h("Accept-Encoding: gzip"), [None, "gzip"]),  # sorted names
    (h("Vary: Accept"), [], [None]),                                                 # absent stays absent
    (h("Vary: Accept"), h("Accept: text/html,   application/json"), ["text/html, application/json"]),
    (h("Vary: Foo"), h("Foo: 1", "Foo: 2"), ["1, 2"]),                        # lines combined
    (h("Vary: Foo"), h("Foo:  1 ,2 "), ["1, 2"]),                              # spaces around members
    (h("Vary: Accept-Language"), h("Accept-Language: de, en"), ["de, en"]),
    (h("Vary: Accept-Language"), h("Accept-Language: en, de"), ["de, en"]),    # order
    (h("Vary: Accept-Language"), h("Accept-Language: eN, De"), ["de, en"]),    # case
    (h("Vary: Accept-Language"), h("Accept-Language:  en ,   de"), ["de, en"]),
    (h("Vary: Accept-Language"), h("Accept-Language: en;q=0.5, de"), ["de, en;q=0.5"]),
    (h("Vary: Foo"), h("Foo: B, a"), ["B, a"]),                                # other fields keep case and order
])
def test_vary_values(resp: list, req: list, expected: list) -> None:
    assert keys.vary_values(req, keys.vary_names(resp)) == expected


def test_absent_vary_header_matches_only_absent() -> None:
    names = keys.vary_names(h("Vary: Accept-Language"))
    assert keys.vary_values([], names) != keys.vary_values(h("Accept-Language: "), names)


def test_shared_key_ignores_host_case_and_query_order() -> None:
    key = keys.shared_key(make_call(query="a=1&b=2"))
    assert key == keys.shared_key(make_call(query="b=2&a=1&"))
    assert key == keys.shared_key(replace(make_call(query="a=1&b=2"), host="GW.TEST"))
    assert key != keys.shared_key(make_call(query="a=1"))
    assert key != keys.shared_key(make_call("/orders/2", query="a=1&b=2"))
    assert key != keys.shared_key(replace(make_call(query="a=1&b=2"), host="other.test"))


def test_personal_keys_differ_per_user_and_from_the_shared_key() -> None:
    alice = make_call(headers=h("Authorization: Bearer a"))
    assert keys.personal_key(alice) == keys.personal_key(make_call(headers=h("Authorization: Bearer a")))
    assert keys.personal_key(alice) != keys.personal_key(make_call(headers=h("Authorization: Bearer b")))
    assert keys.personal_key(alice) != keys.shared_key(alice)


def test_lookup_keys() -> None:
    anonymous, alice = make_call(), make_call(headers=h("Cookie: s=1"))
    assert keys.lookup_keys(anonymous, "S") == [("S", False)]
    assert keys.lookup_keys(alice, "S") == [(keys.personal_key(alice), True)]
    sharing = make_call(headers=h("Cookie: s=1"), service=replace(SERVICE, share_public_across_users=True))
    assert keys.lookup_keys(sharing, "S") == [(keys.personal_key(sharing), True), ("S", False)]


@pytest.mark.parametrize("headers, share, cc, expected", [
    ([], False, {"public": None}, False),
    (h("Cookie: s=1"), False, {"public": None}, True),
    (h("Cookie: s=1"), True, {"public": None}, False),          # public and shared across users
    (h("Cookie: s=1"), True, {"s-maxage": "60"}, True),
])
def test_stored_personally(headers: list, share: bool, cc: dict, expected: bool) -> None:
    call = make_call(headers=headers, service=replace(SERVICE, share_public_across_users=share))
    assert keys.stored_personally(call, cc) is expected


@pytest.mark.parametrize("credentials, personal, cc, expected", [
    (False, False, {}, True),
    (True, True, {}, True),
    (True, False, {}, False),                   # a shared entry, not public: not for a credentialed request
    (True, False, {"public": None}, True),
])
def test_reusable_by(credentials: bool, personal: bool, cc: dict, expected: bool) -> None:
    assert keys.reusable_by(credentials, personal, cc) is expected


def test_partial_answers_have_their_own_key() -> None:
    assert keys.partial_key("k") != "k" and keys.partial_key("k").startswith("k")
    assert keys.key_for_status("k", 206) == keys.partial_key("k")
    assert [keys.key_for_status("k", status) for status in (200, 204, 404)] == ["k"] * 3


@pytest.mark.parametrize("method, request_cc, expected", [
    ("GET", {}, True), ("GET", {"max-age": "0"}, True), ("HEAD", {}, False),
    ("GET", {"no-cache": None}, False), ("GET", {"no-store": None}, False),
])
def test_coalescable(method: str, request_cc: dict, expected: bool) -> None:
    assert keys.coalescable(method, request_cc) is expected


def test_only_a_write_that_did_not_fail_invalidates() -> None:
    assert [keys.invalidates(s) for s in (200, 201, 204, 303, 399, 400, 404, 500)] == [True] * 5 + [False] * 3


@pytest.mark.parametrize("path, location, expected", [
    ("/orders/1", None, ["/orders", "/orders/", "/orders/1"]),
    ("/orders/1/", None, ["/orders", "/orders/", "/orders/1", "/orders/1/"]),
    ("/orders", "/orders/9", ["/", "/orders", "/orders/9", "/orders/orders/9"]),
    ("/orders/1", "/9/", ["/orders", "/orders/", "/orders/1", "/orders/9/"]),
    ("/orders/1", "http://elsewhere/orders/9", ["/orders", "/orders/", "/orders/1"]),
    ("/orders/1", "2", ["/orders", "/orders/", "/orders/1", "/orders/2", "/orders/orders/2"]),  # relative
])
def test_invalidation_paths(path: str, location: str | None, expected: list[str]) -> None:
    headers = [("Location", location)] if location else []
    assert keys.invalidation_paths(make_call(path, method="POST"), headers) == expected
