"""Byte ranges (RFC 9110 §14): cutting a range from a stored body, stored partial (206) answers, completing them."""

from __future__ import annotations

import re
from typing import NamedTuple

from gateway.cache.policy.dates import http_date
from gateway.cache.policy.validators import CLIENT_CONDITIONALS
from gateway.messages import Headers, header_value, header_values

# A Last-Modified at least this long before the response's Date is a strong validator (RFC 9110 §8.8.2.2).
STRONG_LAST_MODIFIED_S = 60
# Headers of a part that say which bytes it holds; a combined whole has neither (they are set anew).
PART_HEADERS = frozenset({"content-range", "content-length"})


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


def strong_validator(headers: Headers) -> str | None:
    """The strong validator of a response, as ``If-Range`` sends it: a strong ETag, else a Last-Modified
    at least 60 s older than its Date (RFC 9110 §8.8.2.2, §13.1.5); None when it has neither."""
    etag = (header_value(headers, "ETag") or "").strip()
    if etag.startswith('"'):
        return etag
    modified = header_value(headers, "Last-Modified")
    modified_at, dated = http_date(modified), http_date(header_value(headers, "Date"))
    if modified is None or modified_at is None or dated is None or dated - modified_at < STRONG_LAST_MODIFIED_S:
        return None
    return modified.strip()


def _same_validator(stored: str, headers: Headers) -> bool:
    """Whether a response has exactly the strong validator ``stored`` (strong comparison, RFC 9110 §8.8.3.2)."""
    new = strong_validator(headers)
    if new is None or stored.startswith('"') != new.startswith('"'):
        return False
    return new == stored if stored.startswith('"') else http_date(new) == http_date(stored)


def completion_headers(request_headers: Headers, stored_headers: Headers, max_bytes: int) -> Headers:
    """``Range`` and ``If-Range`` that fetch the rest of a stored part beginning at byte 0 (RFC 9111 §3.4).

    None (an empty list) when the part cannot be completed: it does not begin at byte 0 or already
    holds every byte, it has no strong validator, the whole would be over ``max_bytes``, or the client's
    request carries a condition of its own.
    """
    held = content_range(stored_headers)
    validator = strong_validator(stored_headers)
    if held is None or validator is None or held[0] != 0 or held[1] + 1 >= held[2] or held[2] > max_bytes:
        return []
    if any(name.lower() in CLIENT_CONDITIONALS for name, _ in request_headers):
        return []
    return [("Range", f"bytes={held[1] + 1}-"), ("If-Range", validator)]


def completes(stored_headers: Headers, headers: Headers, size: int) -> bool:
    """Whether a 206 (``headers``, a body of ``size`` bytes) is exactly the rest of a stored part from byte 0:
    the bytes right after it to the end of a representation of the same length, with the same strong validator."""
    held, new = content_range(stored_headers), content_range(headers)
    validator = strong_validator(stored_headers)
    if held is None or new is None or validator is None or held[0] != 0:
        return False
    return new == (held[1] + 1, held[2] - 1, held[2]) and size == new[1] - new[0] + 1 \
        and _same_validator(validator, headers)


def combined_headers(stored_headers: Headers, headers: Headers) -> Headers:
    """The headers of the whole made of a stored part and the part that completes it: the new part's
    fields replace the stored ones (RFC 9111 §3.4), less what says which bytes a part holds."""
    replaced = {name.lower() for name, _ in headers} | PART_HEADERS | {"age"}
    kept = [(k, v) for k, v in stored_headers if k.lower() not in replaced]
    return kept + [(k, v) for k, v in headers if k.lower() not in PART_HEADERS]
