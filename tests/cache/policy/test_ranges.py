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
