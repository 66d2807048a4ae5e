"""The never-stored rules, each both ways."""

from __future__ import annotations

import pytest

from gateway.cache.policy import storable
from gateway.cache.policy.freshness import freshness_lifetime
from tests.support.cache import h

CREDS = h("Authorization: Bearer a")
COOKIE = h("Cookie: s=1")


@pytest.mark.parametrize("method, req, status, resp, reason", [
    ("GET", [], 200, [], None),
    ("HEAD", [], 200, [], "method"),
    ("POST", [], 200, h("Cache-Control: max-age=60"), "method"),
    ("GET", [], 200, h("Cache-Control: no-store"), "no-store"),
    ("GET", h("Cache-Control: no-store"), 200, [], "no-store"),
    ("GET", [], 200, h("Cache-Control: private"), "private"),
    ("GET", [], 200, h("Cache-Control: private, max-age=60"), "private"),
    ("GET", [], 200, h("Vary: *"), "vary-star"),
    ("GET", [], 200, h("Vary: Accept, *"), "vary-star"),
    ("GET", [], 200, h("Vary: Accept"), None),
    ("GET", [], 200, h("Set-Cookie: a=1"), "set-cookie"),
    ("GET", [], 206, h("Cache-Control: max-age=60"), "status"),                 # no Content-Range
    ("GET", [], 206, h("Cache-Control: max-age=60", "Content-Range: bytes 4-9/10"), None),  # a partial entry
    ("GET", [], 206, h("Cache-Control: max-age=60", "Content-Range: bytes 4-9/*"), "status"),
    ("GET", [], 304, [], "status"),
    ("GET", [], 500, h("Cache-Control: max-age=60"), None),      # explicit freshness: any final status
    ("GET", [], 503, [], "no-freshness"),
    ("GET", [], 599, h("Cache-Control: max-age=60"), None),
    ("GET", [], 600, h("Cache-Control: max-age=60"), "status"),
    ("GET", [], 103, h("Cache-Control: max-age=60"), "status"),    # interim: never stored
    # must-understand: a known status is stored even with no-store, an unknown one never (RFC 9111 §5.2.2.3)
    ("GET", [], 200, h("Cache-Control: max-age=60, no-store, must-understand"), None),
    ("GET", [], 599, h("Cache-Control: max-age=60, no-store, must-understand"), "status"),
    ("GET", [], 599, h("Cache-Control: max-age=60, must-understand"), "status"),
    ("GET", h("Cache-Control: no-store"), 200, h("Cache-Control: max-age=60, no-store, must-understand"),
     "no-store"),
    # a targeted field (RFC 9213) wins over Cache-Control
    ("GET", [], 200, h("Cache-Control: no-store", "CDN-Cache-Control: max-age=60"), None),
    ("GET", [], 200, h("Cache-Control: max-age=60", "CDN-Cache-Control: no-store"), "no-store"),
    ("GET", [], 200, h("Cache-Control: max-age=60", "CDN-Cache-Control: private"), "private"),
    ("GET", [], 200, h("Cache-Control: no-store", "CDN-Cache-Control: max-age=60, &&&"), "no-store"),  # invalid
    ("GET", [], 200, h("Cache-Control: no-store", 'CDN-Cache-Control: max-age="60"'), "no-store"),   # wrong type
    ("GET", [], 200, h("CDN-Cache-Control: max-age=60", "Gateway-Cache-Control: no-store"), "no-store"),
    ("GET", [], 200, h("Content-Type: text/event-stream; charset=utf-8"), "event-stream"),
    ("GET", CREDS, 200, [], "credentials"),
    ("GET", COOKIE, 200, h("Cache-Control: max-age=60"), "credentials"),
    ("GET", CREDS, 200, h("Cache-Control: public"), None),
    ("GET", CREDS, 200, h("Cache-Control: s-maxage=60"), None),
    ("GET", COOKIE, 200, h("Cache-Control: must-revalidate"), None),
    ("GET", [], 404, [], "no-freshness"),
    ("GET", [], 404, h("Cache-Control: max-age=5"), None),
    ("GET", [], 200, h("Cache-Control: max-age=0"), "no-freshness"),        # stale and no validator
    ("GET", [], 200, h("Cache-Control: max-age=0", 'ETag: "x"'), None),    # stale but revalidatable
    ("GET", [], 200, h("Cache-Control: no-cache"), None),                 # stored, revalidated each time
])
def test_not_storable_reason(method: str, req: list, status: int, resp: list, reason: str | None) -> None:
    assert storable.not_storable_reason(method, req, status, resp, 300.0) == reason


def test_zero_heuristic_ttl_stores_nothing() -> None:
    assert storable.not_storable_reason("GET", [], 200, [], 0.0) == "no-freshness"


@pytest.mark.parametrize("resp", [
    h("Cache-Control: no-cache"), h('ETag: "a"'), h("Cache-Control: no-cache", 'ETag: "a"'),
])
def test_zero_heuristic_ttl_still_stores_what_can_be_revalidated(resp: list) -> None:
    assert storable.not_storable_reason("GET", [], 200, resp, 0.0) is None
    assert freshness_lifetime(200, resp, 0.0) == (0.0, True)


@pytest.mark.parametrize("name", storable.OVERRIDE_HEADERS)
def test_a_request_that_may_rewrite_its_url_or_method_is_never_stored(name: str) -> None:
    assert storable.not_storable_reason("GET", [(name, "/admin")], 200, [], 300.0) == "override-header"
