"""Freshness: lifetimes, ages, reuse, the stale windows and how long a store keeps an entry."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from gateway.cache.policy import freshness
from gateway.cache.policy.directives import parse_cache_control
from tests.support.cache import DATE, T0, h

EXPIRES_VALID = "Thu, 18 Aug 2050 02:01:18 GMT"


@pytest.mark.parametrize("status, headers, expected", [
    (200, h("Cache-Control: s-maxage=10, max-age=60"), (10.0, False)),   # s-maxage beats max-age
    (200, h("Cache-Control: max-age=60", "Expires: " + formatdate(T0 + 999, usegmt=True), "Date: " + DATE),
     (60.0, False)),                                                     # max-age beats Expires
    (200, h("Expires: " + formatdate(T0 + 120, usegmt=True), "Date: " + DATE), (120.0, False)),
    (200, h("Expires: 0", "Date: " + DATE), (0.0, False)),              # invalid Expires: already expired
    (200, h("Expires: " + formatdate(T0 + 120, usegmt=True)), (0.0, False)),  # no Date to subtract from
    (200, h("Cache-Control: max-age=abc"), (0.0, False)),              # malformed: stale
    (200, [], (300.0, True)),                                           # heuristic TTL
    (200, h("Cache-Control: public"), (300.0, True)),
    (203, [], (300.0, True)),
    (300, [], (300.0, True)),
    (301, [], (300.0, True)),
    (308, [], (300.0, True)),
    (302, [], None),
    (404, [], None),
    # explicit freshness applies to every status
    (503, h("Cache-Control: max-age=30"), (30.0, False)),
    (599, h("Cache-Control: max-age=30"), (30.0, False)),
    # Last-Modified: a tenth of its age, for every heuristically cacheable status (RFC 9110 §15.1)
    (200, h("Date: " + DATE, "Last-Modified: " + formatdate(T0 - 1000, usegmt=True)), (100.0, False)),
    (404, h("Date: " + DATE, "Last-Modified: " + formatdate(T0 - 1000, usegmt=True)), (100.0, False)),
    (204, h("Date: " + DATE, "Last-Modified: " + formatdate(T0 - 1000, usegmt=True)), (100.0, False)),
    (405, h("Date: " + DATE, "Last-Modified: " + formatdate(T0 - 1000, usegmt=True)), (100.0, False)),
    (410, h("Date: " + DATE, "Last-Modified: " + formatdate(T0 - 1000, usegmt=True)), (100.0, False)),
    (414, h("Date: " + DATE, "Last-Modified: " + formatdate(T0 - 1000, usegmt=True)), (100.0, False)),
    (501, h("Date: " + DATE, "Last-Modified: " + formatdate(T0 - 1000, usegmt=True)), (100.0, False)),
    (200, h("Date: " + DATE, "Last-Modified: " + formatdate(T0 - 10**8, usegmt=True)), (86400.0, False)),  # a day
    (201, h("Date: " + DATE, "Last-Modified: " + formatdate(T0 - 1000, usegmt=True)), None),
    (503, h("Date: " + DATE, "Last-Modified: " + formatdate(T0 - 1000, usegmt=True)), None),
    (599, h("Date: " + DATE, "Last-Modified: " + formatdate(T0 - 1000, usegmt=True)), None),
    (599, h("Date: " + DATE, "Last-Modified: " + formatdate(T0 - 1000, usegmt=True), "Cache-Control: public"),
     (100.0, False)),                                                    # public: any final status
    (200, h("Cache-Control: no-cache", 'ETag: "a"'), (300.0, True)),
    (200, h("Date: " + DATE, "Last-Modified: " + formatdate(T0 + 10, usegmt=True)), (300.0, True)),  # future: TTL
    # targeted fields (RFC 9213): first valid one wins; Cache-Control and Expires then ignored
    (200, h("Cache-Control: max-age=1", "CDN-Cache-Control: max-age=3600"), (3600.0, False)),
    (200, h("Cache-Control: max-age=3600", "CDN-Cache-Control: max-age=1"), (1.0, False)),
    (200, h("CDN-Cache-Control: max-age=0", "Expires: " + formatdate(T0 + 999, usegmt=True), "Date: " + DATE),
     (0.0, False)),
    (200, h("CDN-Cache-Control: max-age=60", "Expires: 0"), (60.0, False)),
    (200, h("CDN-Cache-Control: foobar, max-age=60"), (60.0, False)),              # unknown directive
    (200, h("CDN-Cache-Control: max-age=99999999999"), (99999999999.0, False)),
    (200, h("Cache-Control: max-age=5", "CDN-Cache-Control: MaX-aGe=60"), (5.0, False)),  # not a valid key
    (200, h("Cache-Control: max-age=5", "CDN-Cache-Control: max-age =60"), (5.0, False)),
    (200, h("Cache-Control: max-age=5", "CDN-Cache-Control: max-age= 60"), (5.0, False)),
    (200, h("CDN-Cache-Control: max-age=60", "Gateway-Cache-Control: max-age=9"), (9.0, False)),
    (200, h("Gateway-Cache-Control: &&", "CDN-Cache-Control: max-age=60"), (60.0, False)),  # invalid: next one
    (404, h("Cache-Control: max-age=30"), (30.0, False)),
    (410, [], None),
])
def test_freshness_lifetime(status: int, headers: list, expected: tuple | None) -> None:
    assert freshness.freshness_lifetime(status, headers, 300.0) == expected


@pytest.mark.parametrize("headers, expected", [
    (h("Expires: " + formatdate(T0 + 120, usegmt=True), "Date: " + DATE), 120.0),
    (h("Expires: Thu, 18 Aug 2050 02:01:18 UTC", "Date: " + DATE), 0.0),       # invalid: already stale
    (h("Expires: " + EXPIRES_VALID, "Expires: " + EXPIRES_VALID, "Date: " + DATE), 0.0),  # several lines
    # an invalid or missing Date does not spoil a valid Expires: the time received stands in
    (h("Expires: " + formatdate(T0 + 120, usegmt=True), "Date: yesterday"), 120.0),
    (h("Expires: " + formatdate(T0 + 120, usegmt=True)), 120.0),
])
def test_expires_lifetime(headers: list, expected: float) -> None:
    assert freshness.freshness_lifetime(200, headers, 300.0, received=T0) == (expected, False)


@pytest.mark.parametrize("headers, request_time, response_time, expected", [
    ([], T0, T0, 0.0),
    (h("Age: 30"), T0, T0, 30.0),
    (h("Age: 30"), T0, T0 + 2, 32.0),                         # plus the response delay
    (h("Date: " + formatdate(T0 - 50, usegmt=True)), T0, T0, 50.0),  # apparent age from Date
    (h("Age: junk"), T0, T0, 0.0),
    # Age: the first member of the first line, ignored unless a whole non-negative number
    (h("Age: 7200, 0"), T0, T0, 7200.0),
    (h("Age: 0, 7200"), T0, T0, 0.0),
    (h("Age: 7200", "Age: 0"), T0, T0, 7200.0),
    (h("Age: -7200"), T0, T0, 0.0),
    (h("Age: 7200.0"), T0, T0, 0.0),
    (h("Date: not a date", "Age: 5"), T0, T0, 5.0),
])
def test_initial_age(headers: list, request_time: float, response_time: float, expected: float) -> None:
    assert freshness.initial_age(headers, request_time, response_time) == pytest.approx(expected, abs=1)


@pytest.mark.parametrize("req, resp, age, lifetime, expected", [
    ("", "", 10, 60, "fresh"),
    ("", "", 60, 60, "stale"),
    ("", "", 61, 60, "stale"),
    ("no-cache", "", 0, 60, "stale"),
    ("", "no-cache", 0, 60, "stale"),
    ("max-age=5", "", 10, 60, "stale"),
    ("max-age=20", "", 10, 60, "fresh"),
    ("min-fresh=55", "", 10, 60, "stale"),
    ("min-fresh=40", "", 10, 60, "fresh"),
    ("max-stale", "", 600, 60, "stale-ok"),
    ("max-stale=10", "", 65, 60, "stale-ok"),
    ("max-stale=10", "", 75, 60, "stale"),
    ("max-stale", "must-revalidate", 65, 60, "stale"),
    ("max-stale", "proxy-revalidate", 65, 60, "stale"),
    ("max-stale", "s-maxage=60", 65, 60, "stale"),
    ("only-if-cached", "", 10, 60, "fresh"),
])
def test_reuse_state(req: str, resp: str, age: float, lifetime: float, expected: str) -> None:
    req_cc = parse_cache_control([("Cache-Control", req)] if req else [])
    resp_cc = parse_cache_control([("Cache-Control", resp)] if resp else [])
    assert freshness.reuse_state(req_cc, resp_cc, age, lifetime) == expected


@pytest.mark.parametrize("resp, grace, error_window, swr_window", [
    ("max-age=60", 300, 300, 0),
    ("max-age=60, stale-if-error=900", 300, 900, 0),
    ("max-age=60, stale-if-error=10", 0, 10, 0),
    ("max-age=60, stale-while-revalidate=30", 300, 300, 30),
    ("max-age=60, must-revalidate, stale-if-error=900", 300, 0, 0),
    ("max-age=60, proxy-revalidate", 300, 0, 0),
    ("no-cache, stale-while-revalidate=30", 300, 0, 0),
    ("s-maxage=60, stale-if-error=900", 300, 0, 0),
])
def test_stale_windows(resp: str, grace: float, error_window: float, swr_window: float) -> None:
    cc = parse_cache_control([("Cache-Control", resp)])
    assert freshness.stale_if_error_window(cc, grace) == error_window
    assert freshness.stale_while_revalidate_window(cc) == swr_window


def cc(text: str) -> dict[str, str | None]:
    return parse_cache_control([("Cache-Control", text)] if text else [])


@pytest.mark.parametrize("req, resp, age, lifetime, expected", [
    ("", "max-age=10, stale-while-revalidate=30", 15, 10, True),
    ("", "max-age=10, stale-while-revalidate=30", 40, 10, True),     # the window's last second
    ("", "max-age=10, stale-while-revalidate=30", 41, 10, False),
    ("", "max-age=10, stale-while-revalidate=30", 5, 10, False),     # not expired: not this rule's case
    ("no-cache", "max-age=10, stale-while-revalidate=30", 15, 10, False),
    ("", "max-age=10, must-revalidate, stale-while-revalidate=30", 15, 10, False),
    ("", "max-age=10", 15, 10, False),
])
def test_serves_while_revalidating(req: str, resp: str, age: float, lifetime: float, expected: bool) -> None:
    assert freshness.serves_while_revalidating(cc(req), cc(resp), age, lifetime) is expected


@pytest.mark.parametrize("resp, age, grace, expected", [
    ("max-age=10", 100, 300, True),
    ("max-age=10", 310, 300, True),
    ("max-age=10", 311, 300, False),
    ("max-age=10, stale-if-error=60", 70, 0, True),
    ("max-age=10, stale-if-error=60", 71, 0, False),
    ("max-age=10, must-revalidate", 11, 300, False),
    ("s-maxage=10, stale-if-error=999", 11, 300, False),
    ("no-cache", 0, 300, False),                                  # forbidden even before expiry
])
def test_serves_on_error(resp: str, age: float, grace: float, expected: bool) -> None:
    assert freshness.serves_on_error(cc(resp), age, 10.0, grace) is expected


@pytest.mark.parametrize("headers, lifetime, initial, grace, expected", [
    (h("Cache-Control: max-age=60"), 60, 0, 300, 360),
    (h("Cache-Control: max-age=60"), 60, 20, 300, 340),                       # its age on arrival counts
    (h("Cache-Control: max-age=60"), 60, 100, 0, 0),                          # stale on arrival, no window
    (h("Cache-Control: max-age=60, stale-if-error=900"), 60, 0, 300, 960),
    (h("Cache-Control: max-age=60, stale-while-revalidate=500"), 60, 0, 0, 560),
    (h("Cache-Control: max-age=1", 'ETag: "a"'), 1, 0, 0, 1 + freshness.REVALIDATE_KEEP_S),
    (h("Cache-Control: max-age=1, must-revalidate, stale-if-error=900"), 1, 0, 0, 901),  # kept, not served
])
def test_kept_for(headers: list, lifetime: float, initial: float, grace: float, expected: float) -> None:
    cache_control = parse_cache_control(headers)
    assert freshness.kept_for(headers, cache_control, lifetime, initial, grace) == expected


def test_dated_keeps_a_date_and_adds_one_when_missing() -> None:
    assert freshness.dated(h("Date: x", "A: 1"), T0) == h("Date: x", "A: 1")
    assert freshness.dated(h("A: 1"), T0) == h("A: 1", "Date: " + DATE)


@pytest.mark.parametrize("headers, heuristic, personal, expected", [
    ([], True, False, h("Cache-Control: max-age=300")),
    ([], True, True, h("Cache-Control: private, max-age=300")),
    ([], False, False, []),                                     # explicit freshness: nothing to say
    (h("Cache-Control: must-revalidate"), True, False, []),     # the upstream said something
])
def test_gateway_ttl_header(headers: list, heuristic: bool, personal: bool, expected: list) -> None:
    assert freshness.gateway_ttl_header(headers, 300.7, heuristic, personal) == expected
