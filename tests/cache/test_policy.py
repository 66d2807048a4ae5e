"""RFC 9111 rules of the shared cache, table-driven: each directive both ways, Expires, Age, Vary, credentials."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from gateway.cache import policy

T0 = 1_700_000_000.0
DATE = formatdate(T0, usegmt=True)


def h(*pairs: str) -> list[tuple[str, str]]:
    """Headers from "Name: value" strings."""
    return [tuple(p.split(": ", 1)) for p in pairs]  # type: ignore[misc]


@pytest.mark.parametrize("lines, expected", [
    (["max-age=60"], {"max-age": "60"}),
    (["public, max-age=60, s-maxage=30"], {"public": None, "max-age": "60", "s-maxage": "30"}),
    (["No-Cache", "MAX-AGE=5"], {"no-cache": None, "max-age": "5"}),
    (['private="Set-Cookie, X-A", max-age=1'], {"private": "Set-Cookie, X-A", "max-age": "1"}),
    (["max-age=1, max-age=9"], {"max-age": "1"}),
    ([" , ,no-store"], {"no-store": None}),
    ([], {}),
])
def test_parse_cache_control(lines: list[str], expected: dict) -> None:
    assert policy.parse_cache_control([("Cache-Control", line) for line in lines]) == expected


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
    assert policy.freshness_lifetime(status, headers, 300.0) == expected


EXPIRES_VALID = "Thu, 18 Aug 2050 02:01:18 GMT"


@pytest.mark.parametrize("value, valid", [
    (EXPIRES_VALID, True),
    ("THU, 18 AUG 2050 02:01:18 gMT", True),              # names in any case
    ("Thursday, 18-Aug-50 02:01:18 GMT", True),           # obsolete RFC 850 form
    ("Thu Aug 18 02:01:18 2050", True),                   # obsolete asctime form
    ("Thu Aug  8 02:01:18 2050", True),
    ("Thu, 18 Aug 2050 02:01:18 UTC", False),
    ("Thu, 18 Aug 2050 02:01:18 AEST", False),
    ("Thu, 18 Aug 2050 02:01:18 +0000", False),
    ("Thu, 18 Aug 50 02:01:18 GMT", False),               # two-digit year in the IMF form
    ("Thu 18 Aug 2050 02:01:18 GMT", False),              # no comma
    ("Thu, 18  Aug  2050 02:01:18 GMT", False),           # several spaces
    ("Thu, 18-Aug-2050 02:01:18 GMT", False),             # dashes
    ("Thu, 18 Aug 2050 02.01.18 GMT", False),             # periods
    ("Thu, 18 Aug 2050 2:01:18 GMT", False),              # one-digit hour
    ("Thu, 32 Aug 2050 02:01:18 GMT", False),
    ("0", False),
    ("", False),
])
def test_http_date_is_strict(value: str, valid: bool) -> None:
    assert (policy.http_date(value) is not None) is valid


def test_rfc850_two_digit_year_more_than_50_years_ahead_is_in_the_past() -> None:
    now = policy.http_date("Thu, 01 Jan 2026 00:00:00 GMT")
    assert policy.http_date("Sunday, 06-Nov-94 08:49:37 GMT", now) == policy.http_date(
        "Sun, 06 Nov 1994 08:49:37 GMT")
    assert policy.http_date("Thursday, 18-Aug-50 02:01:18 GMT", now) == policy.http_date(EXPIRES_VALID)


@pytest.mark.parametrize("headers, expected", [
    (h("Expires: " + formatdate(T0 + 120, usegmt=True), "Date: " + DATE), 120.0),
    (h("Expires: Thu, 18 Aug 2050 02:01:18 UTC", "Date: " + DATE), 0.0),       # invalid: already stale
    (h("Expires: " + EXPIRES_VALID, "Expires: " + EXPIRES_VALID, "Date: " + DATE), 0.0),  # several lines
    # an invalid or missing Date does not spoil a valid Expires: the time received stands in
    (h("Expires: " + formatdate(T0 + 120, usegmt=True), "Date: yesterday"), 120.0),
    (h("Expires: " + formatdate(T0 + 120, usegmt=True)), 120.0),
])
def test_expires_lifetime(headers: list, expected: float) -> None:
    assert policy.freshness_lifetime(200, headers, 300.0, received=T0) == (expected, False)


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
    assert policy.initial_age(headers, request_time, response_time) == pytest.approx(expected, abs=1)


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
    assert policy.not_storable_reason(method, req, status, resp, 300.0) == reason


def test_zero_heuristic_ttl_stores_nothing() -> None:
    assert policy.not_storable_reason("GET", [], 200, [], 0.0) == "no-freshness"


@pytest.mark.parametrize("resp", [
    h("Cache-Control: no-cache"), h('ETag: "a"'), h("Cache-Control: no-cache", 'ETag: "a"'),
])
def test_zero_heuristic_ttl_still_stores_what_can_be_revalidated(resp: list) -> None:
    assert policy.not_storable_reason("GET", [], 200, resp, 0.0) is None
    assert policy.freshness_lifetime(200, resp, 0.0) == (0.0, True)


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
    req_cc = policy.parse_cache_control([("Cache-Control", req)] if req else [])
    resp_cc = policy.parse_cache_control([("Cache-Control", resp)] if resp else [])
    assert policy.reuse_state(req_cc, resp_cc, age, lifetime) == expected


def test_pragma_no_cache_only_without_cache_control() -> None:
    assert "no-cache" in policy.request_cache_control(h("Pragma: no-cache"))
    assert "no-cache" not in policy.request_cache_control(h("Pragma: no-cache", "Cache-Control: max-age=9"))


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
    cc = policy.parse_cache_control([("Cache-Control", resp)])
    assert policy.stale_if_error_window(cc, grace) == error_window
    assert policy.stale_while_revalidate_window(cc) == swr_window


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
    assert policy.vary_values(req, policy.vary_names(resp)) == expected


def test_absent_vary_header_matches_only_absent() -> None:
    names = policy.vary_names(h("Vary: Accept-Language"))
    assert policy.vary_values([], names) != policy.vary_values(h("Accept-Language: "), names)


def test_credential_digest_differs_per_user() -> None:
    a = policy.credential_digest(h("Authorization: Bearer a"))
    assert a != policy.credential_digest(h("Authorization: Bearer b"))
    assert a != policy.credential_digest(h("Cookie: Bearer a"))
    assert a == policy.credential_digest(h("Authorization: Bearer a"))


@pytest.mark.parametrize("req, stored, expected", [
    (h('If-None-Match: "v1"'), h('ETag: "v1"'), True),
    (h('If-None-Match: W/"v1"'), h('ETag: "v1"'), True),           # weak comparison
    (h('If-None-Match: "v0", "v1"'), h('ETag: W/"v1"'), True),
    (h('If-None-Match: "v2"'), h('ETag: "v1"'), False),
    (h("If-None-Match: *"), h('ETag: "v1"'), True),
    (h('If-None-Match: "v1"'), [], False),
    # If-None-Match wins over If-Modified-Since
    (h('If-None-Match: "v2"', "If-Modified-Since: " + DATE), h('ETag: "v1"', "Last-Modified: " + DATE), False),
    (h("If-Modified-Since: " + DATE), h("Last-Modified: " + formatdate(T0 - 10, usegmt=True)), True),
    (h("If-Modified-Since: " + DATE), h("Last-Modified: " + formatdate(T0 + 10, usegmt=True)), False),
    (h("If-Modified-Since: " + DATE), h("Date: " + formatdate(T0 - 10, usegmt=True)), True),
    (h("If-Modified-Since: garbage"), h("Last-Modified: " + DATE), False),
    ([], h('ETag: "v1"'), False),
])
def test_not_modified(req: list, stored: list, expected: bool) -> None:
    assert policy.not_modified(req, stored) is expected


@pytest.mark.parametrize("req, length, expected", [
    (h("Range: bytes=0-1"), 11, (0, 1)),
    (h("Range: bytes=5-"), 11, (5, 10)),                 # open-ended
    (h("Range: bytes=-3"), 11, (8, 10)),                 # suffix
    (h("Range: bytes=-30"), 11, (0, 10)),                # suffix longer than the body
    (h("Range: bytes=3-99"), 11, (3, 10)),               # last past the end: cut to the end
    (h("Range: bytes=11-"), 11, "unsatisfiable"),
    (h("Range: bytes=-0"), 11, "unsatisfiable"),
    (h("Range: bytes=0-1, 3-4"), 11, None),              # several ranges: answered whole
    (h("Range: bytes=5-1"), 11, None),                   # invalid: ignored
    (h("Range: items=0-1"), 11, None),                   # another unit
    (h("Range: bytes=a-b"), 11, None),
    ([], 11, None),
    (h("Range: bytes=0-1", 'If-Range: "v1"'), 11, (0, 1)),
    (h("Range: bytes=0-1", 'If-Range: "v2"'), 11, None),    # stored response changed: whole
    (h("Range: bytes=0-1", 'If-Range: W/"v1"'), 11, None),  # weak tags never match
    (h("Range: bytes=0-1", "If-Range: " + DATE), 11, (0, 1)),
    (h("Range: bytes=0-1", "If-Range: " + formatdate(T0 - 1, usegmt=True)), 11, None),
])
def test_byte_range(req: list, length: int, expected: object) -> None:
    stored = h('ETag: "v1"', "Last-Modified: " + DATE)
    assert policy.byte_range(req, stored, length) == expected


@pytest.mark.parametrize("headers, expected", [
    (h("Content-Range: bytes 4-9/10"), (4, 9, 10)),
    (h("Content-Range: bytes 0-0/1"), (0, 0, 1)),
    (h("Content-Range: bytes 4-9/*"), None),            # complete length unknown
    (h("Content-Range: bytes 9-4/10"), None),
    (h("Content-Range: bytes 4-10/10"), None),          # past the end
    (h("Content-Range: bytes */10"), None),
    (h("Content-Range: items 4-9/10"), None),
    (h("Content-Range: bytes 0-1/10", "Content-Range: bytes 2-3/10"), None),
    ([], None),
])
def test_content_range(headers: list, expected: tuple | None) -> None:
    assert policy.content_range(headers) == expected


def test_the_gateways_own_targeted_field_is_not_sent_downstream() -> None:
    headers = h("Gateway-Cache-Control: max-age=60", "CDN-Cache-Control: max-age=5", "Cache-Control: no-cache")
    assert policy.downstream_headers(headers) == h("CDN-Cache-Control: max-age=5", "Cache-Control: no-cache")


def test_validators_and_refresh() -> None:
    stored = h('ETag: "v1"', "Last-Modified: " + DATE, "Content-Length: 5", "Cache-Control: max-age=1", "X-A: 1")
    assert policy.validators(stored) == h('If-None-Match: "v1"', "If-Modified-Since: " + DATE)
    merged = policy.refresh_headers(stored, h("Cache-Control: max-age=99", "Content-Length: 0"))
    assert ("Cache-Control", "max-age=99") in merged and ("Content-Length", "5") in merged
    assert ("X-A", "1") in merged and ("Cache-Control", "max-age=1") not in merged
