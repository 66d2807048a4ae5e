"""Byte ranges (RFC 9110 §14): cutting one range from a stored body, and stored partial (206) answers."""

from __future__ import annotations

import re
from typing import NamedTuple

from gateway.cache.policy.dates import http_date
from gateway.messages import Headers, header_value, header_values


class Cut(NamedTuple):
    """Bytes ``first``-``last`` of a representation ``length`` long, found at ``start`` in a stored body."""

    first: int
    last: int
    length: int
    start: int

    def of(self, body: bytes) -> bytes:
        """The bytes of the cut in ``body``."""
        return body[self.start:self.start + self.last - self.first + 1]

    @property
    def content_range(self) -> str:
        """The ``Content-Range`` of the cut."""
        return f"bytes {self.first}-{self.last}/{self.length}"


def byte_range(request_headers: Headers, stored_headers: Headers, length: int) -> tuple[int, int] | str | None:
    """The one byte range a GET asks of a complete stored body: ``(first, last)``, ``"unsatisfiable"``, or None.

    None means answer the whole body (no ``Range``, a unit other than bytes, several ranges, a
    malformed one, or an ``If-Range`` that does not match the stored response) (RFC 9110 §14).
    """
    lines = header_values(request_headers, "Range")
    if len(lines) != 1:
        return None
    unit, _, spec = lines[0].strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    if_range = header_value(request_headers, "If-Range")
    if if_range is not None and not _if_range_matches(if_range.strip(), stored_headers):
        return None
    first_text, dash, last_text = spec.strip().partition("-")
    if not dash or not (first_text.isdigit() or last_text.isdigit()):
        return None
    if not first_text:  # a suffix: the last N bytes
        suffix = int(last_text)
        if suffix == 0:
            return "unsatisfiable"
        return max(0, length - suffix), length - 1
    if last_text and not last_text.isdigit():
        return None
    first = int(first_text)
    if last_text and int(last_text) < first:
        return None  # invalid: ignored
    last = int(last_text) if last_text else length - 1
    if first >= length:
        return "unsatisfiable"
    return first, min(last, length - 1)


def _if_range_matches(if_range: str, stored_headers: Headers) -> bool:
    """If-Range: a strong ETag equal to the stored one, or exactly the stored Last-Modified."""
    if if_range.startswith('"') or if_range.startswith("W/"):
        etag = header_value(stored_headers, "ETag")
        return etag is not None and not if_range.startswith("W/") and etag.strip() == if_range
    modified = header_value(stored_headers, "Last-Modified")
    return modified is not None and http_date(if_range) is not None and http_date(if_range) == http_date(modified)


def content_range(headers: Headers) -> tuple[int, int, int] | None:
    """A 206's one ``Content-Range: bytes first-last/length`` as numbers; None for anything else."""
    lines = header_values(headers, "Content-Range")
    if len(lines) != 1:
        return None
    match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", lines[0].strip())
    if match is None:
        return None
    first, last, length = (int(group) for group in match.groups())
    if not first <= last < length:
        return None
    return first, last, length


def held_range(request_headers: Headers, stored_headers: Headers) -> Cut | None:
    """The one range a GET asks, when a stored partial answer holds every byte of it; None otherwise."""
    stored = content_range(stored_headers)
    if stored is None:
        return None
    first_held, last_held, length = stored
    wanted = byte_range(request_headers, stored_headers, length)
    if not isinstance(wanted, tuple) or not first_held <= wanted[0] <= wanted[1] <= last_held:
        return None
    return Cut(wanted[0], wanted[1], length, wanted[0] - first_held)


def holds_its_range(status: int, headers: Headers, size: int) -> bool:
    """False for a 206 whose body is not exactly the range it claims (it is never stored); True otherwise."""
    if status != 206:
        return True
    claimed = content_range(headers)
    return claimed is None or size == claimed[1] - claimed[0] + 1
