"""Byte ranges: one range cut from a stored body, and what a stored 206 holds."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from gateway.cache.policy import ranges
from tests.support.cache import DATE, T0, h


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
    assert ranges.byte_range(req, stored, length) == expected


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
    assert ranges.content_range(headers) == expected


PARTIAL = h("Content-Range: bytes 4-9/10")


@pytest.mark.parametrize("req, expected", [
    (h("Range: bytes=4-9"), ranges.Cut(4, 9, 10, 0)),
    (h("Range: bytes=6-8"), ranges.Cut(6, 8, 10, 2)),
    (h("Range: bytes=-1"), ranges.Cut(9, 9, 10, 5)),
    (h("Range: bytes=3-5"), None),           # a byte it does not hold
    (h("Range: bytes=0-1, 5-6"), None),      # several ranges
    ([], None),
])
def test_held_range(req: list, expected: ranges.Cut | None) -> None:
    assert ranges.held_range(req, PARTIAL) == expected


def test_a_cut_takes_its_bytes_and_names_them() -> None:
    cut = ranges.Cut(6, 8, 10, 2)
    assert cut.of(b"456789") == b"678" and cut.content_range == "bytes 6-8/10"


@pytest.mark.parametrize("status, headers, size, expected", [
    (206, PARTIAL, 6, True),
    (206, PARTIAL, 5, False),
    (200, [], 5, True),
])
def test_holds_its_range(status: int, headers: list, size: int, expected: bool) -> None:
    assert ranges.holds_its_range(status, headers, size) is expected


OLD = formatdate(T0 - 3600, usegmt=True)  # an hour before DATE: a strong Last-Modified
PART = ("Content-Range: bytes 0-4/10", 'ETag: "v1"')


@pytest.mark.parametrize("headers, expected", [
    (h('ETag: "v1"'), '"v1"'),
    (h('ETag: W/"v1"'), None),                                            # weak: never strong
    (h('ETag: W/"v1"', "Date: " + DATE, "Last-Modified: " + OLD), OLD),   # the weak tag gives way to the date
    (h("Date: " + DATE, "Last-Modified: " + OLD), OLD),
    (h("Date: " + DATE, "Last-Modified: " + formatdate(T0 - 59, usegmt=True)), None),  # under 60 s: weak
    (h("Last-Modified: " + OLD), None),                                   # no Date to compare with
    (h("Date: " + DATE, "Last-Modified: yesterday"), None),
    ([], None),
])
def test_strong_validator(headers: list, expected: str | None) -> None:
    assert ranges.strong_validator(headers) == expected


@pytest.mark.parametrize("req, stored, expected", [
    ([], h(*PART), h("Range: bytes=5-", 'If-Range: "v1"')),
    (h("Range: bytes=6-8"), h(*PART), h("Range: bytes=5-", 'If-Range: "v1"')),  # a range the part lacks
    ([], h("Content-Range: bytes 0-4/10", "Date: " + DATE, "Last-Modified: " + OLD),
     h("Range: bytes=5-", "If-Range: " + OLD)),
    ([], h("Content-Range: bytes 0-4/10"), []),                         # no validator: nothing to match with
    ([], h("Content-Range: bytes 0-4/10", 'ETag: W/"v1"'), []),
    ([], h("Content-Range: bytes 4-9/10", 'ETag: "v1"'), []),           # does not begin at byte 0
    ([], h("Content-Range: bytes 0-9/10", 'ETag: "v1"'), []),           # already whole
    ([], h("Content-Range: bytes 0-4/1000", 'ETag: "v1"'), []),         # the whole would be over the limit
    (h('If-None-Match: "v0"'), h(*PART), []),                           # the client's own condition
    (h("Range: bytes=6-8", 'If-Range: "v1"'), h(*PART), []),
])
def test_completion_headers(req: list, stored: list, expected: list) -> None:
    assert ranges.completion_headers(req, stored, max_bytes=100) == expected


@pytest.mark.parametrize("headers, size, expected", [
    (h("Content-Range: bytes 5-9/10", 'ETag: "v1"'), 5, True),
    (h("Content-Range: bytes 5-9/10", 'ETag: "v2"'), 5, False),          # another representation
    (h("Content-Range: bytes 5-9/10", 'ETag: W/"v1"'), 5, False),        # weak: never combined
    (h("Content-Range: bytes 5-9/10"), 5, False),                        # no validator
    (h("Content-Range: bytes 6-9/10", 'ETag: "v1"'), 4, False),          # a gap
    (h("Content-Range: bytes 5-8/10", 'ETag: "v1"'), 4, False),          # not to the end
    (h("Content-Range: bytes 5-10/11", 'ETag: "v1"'), 6, False),         # another length
    (h("Content-Range: bytes 5-9/10", 'ETag: "v1"'), 4, False),          # body shorter than its range
    (h("Content-Range: bytes 5-9/10", "Date: " + DATE, "Last-Modified: " + OLD), 5, False),  # ETag then a date
])
def test_completes(headers: list, size: int, expected: bool) -> None:
    assert ranges.completes(h(*PART), headers, size) is expected


def test_completes_by_last_modified() -> None:
    stored = h("Content-Range: bytes 0-4/10", "Date: " + DATE, "Last-Modified: " + OLD)
    rest = h("Content-Range: bytes 5-9/10", "Date: " + DATE, "Last-Modified: " + OLD)
    assert ranges.completes(stored, rest, 5)
    changed = h("Content-Range: bytes 5-9/10", "Date: " + DATE, "Last-Modified: " + formatdate(T0 - 60, usegmt=True))
    assert not ranges.completes(stored, changed, 5)


def test_combined_headers_take_the_new_parts_fields_and_drop_the_parts_own() -> None:
    stored = h("Content-Range: bytes 0-4/10", "Content-Length: 5", 'ETag: "v1"', "A: 1", "B: 1", "Age: 30")
    new = h("Content-Range: bytes 5-9/10", "Content-Length: 5", 'ETag: "v1"', "A: 2")
    assert ranges.combined_headers(stored, new) == h("B: 1", 'ETag: "v1"', "A: 2")
