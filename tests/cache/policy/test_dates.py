"""HTTP-dates: the three forms, strictly, and two-digit years."""

from __future__ import annotations

import pytest

from gateway.cache.policy import dates
from gateway.messages import Headers
from tests.support.cache import DATE, T0, h

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
    assert (dates.http_date(value) is not None) is valid


def test_rfc850_two_digit_year_more_than_50_years_ahead_is_in_the_past() -> None:
    now = dates.http_date("Thu, 01 Jan 2026 00:00:00 GMT")
    assert dates.http_date("Sunday, 06-Nov-94 08:49:37 GMT", now) == dates.http_date(
        "Sun, 06 Nov 1994 08:49:37 GMT")
    assert dates.http_date("Thursday, 18-Aug-50 02:01:18 GMT", now) == dates.http_date(EXPIRES_VALID)


@pytest.mark.parametrize("headers, expected", [
    (h("Date: " + DATE), T0),
    (h("Date: " + DATE, "Date: " + DATE), None),      # given twice: no date
    (h("Date: yesterday"), None),
    ([], None),
])
def test_single_date(headers: Headers, expected: float | None) -> None:
    assert dates.single_date(headers, "Date") == expected
