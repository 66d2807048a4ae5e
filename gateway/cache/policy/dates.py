"""HTTP-dates (RFC 9110 §5.6.7): the three forms recipients must accept, and nothing else."""

from __future__ import annotations

import calendar
import re
import time

from gateway.messages import Headers, header_values

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAY = r"(?:mon|tue|wed|thu|fri|sat|sun)"
_MONTH = r"(?P<month>jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)"
_TIME = r"(?P<h>\d\d):(?P<m>\d\d):(?P<s>\d\d)"
# The three forms of RFC 9110 §5.6.7, exactly (names in any case): IMF-fixdate, then the obsolete
# RFC 850 and asctime forms recipients must still accept. Anything else is not a date.
_DATE_FORMS = (
    re.compile(rf"{_DAY}, (?P<d>\d\d) {_MONTH} (?P<y>\d{{4}}) {_TIME} gmt", re.IGNORECASE),
    re.compile(r"(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday), "
               rf"(?P<d>\d\d)-{_MONTH}-(?P<yy>\d\d) {_TIME} gmt", re.IGNORECASE),
    re.compile(rf"{_DAY} {_MONTH} (?P<d>[ \d]\d) {_TIME} (?P<y>\d{{4}})", re.IGNORECASE),
)


def http_date(value: str | None, now: float | None = None) -> float | None:
    """Parse an HTTP-date (RFC 9110 §5.6.7) into epoch seconds; None when absent or not exactly one.

    A two-digit RFC 850 year more than 50 years ahead of ``now`` is taken to be in the past.
    """
    if not value:
        return None
    for form in _DATE_FORMS:
        match = form.fullmatch(value.strip(" \t"))
        if match is None:
            continue
        parts = match.groupdict()
        if parts.get("yy") is not None:
            current = time_year(now)
            year = current - current % 100 + int(parts["yy"])
            if year > current + 50:
                year -= 100
        else:
            year = int(parts["y"])
        fields = (year, _MONTHS.index(parts["month"].lower()) + 1, int(parts["d"]),
                  int(parts["h"]), int(parts["m"]), int(parts["s"]))
        if not (1 <= fields[2] <= 31 and fields[3] <= 23 and fields[4] <= 59 and fields[5] <= 60):
            return None
        return float(calendar.timegm((*fields, 0, 0, 0)))
    return None


def time_year(now: float | None) -> int:
    """The UTC year at ``now`` (the current time when None)."""
    return time.gmtime(now).tm_year


def single_date(headers: Headers, name: str, now: float | None = None) -> float | None:
    """The date in header ``name``; None when absent, invalid or given more than once."""
    lines = header_values(headers, name)
    if len(lines) != 1:
        return None
    return http_date(lines[0], now)
