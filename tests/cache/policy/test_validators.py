"""Validators: 304s to a client's conditional, revalidating a stored response, merging a 304."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from gateway.cache.policy import validators
from tests.support.cache import DATE, T0, h


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
    assert validators.not_modified(req, stored) is expected


def test_validators_and_refresh() -> None:
    stored = h('ETag: "v1"', "Last-Modified: " + DATE, "Content-Length: 5", "Cache-Control: max-age=1", "X-A: 1")
    assert validators.validators(stored) == h('If-None-Match: "v1"', "If-Modified-Since: " + DATE)
    merged = validators.refresh_headers(stored, h("Cache-Control: max-age=99", "Content-Length: 0"))
    assert ("Cache-Control", "max-age=99") in merged and ("Content-Length", "5") in merged
    assert ("X-A", "1") in merged and ("Cache-Control", "max-age=1") not in merged


@pytest.mark.parametrize("req, expected", [
    ([], h('If-None-Match: "v1"', "If-Modified-Since: " + DATE)),
    (h('If-None-Match: "theirs"'), h('If-None-Match: "v1"', "If-Modified-Since: " + DATE)),  # replaced by ours
    (h("If-Match: x"), []),                          # a condition we would not replace: none sent
    (h("If-Range: x"), []),
])
def test_revalidation_headers(req: list, expected: list) -> None:
    assert validators.revalidation_headers(req, h('ETag: "v1"', "Last-Modified: " + DATE)) == expected


def test_revalidation_headers_without_validators() -> None:
    assert validators.revalidation_headers([], h("Cache-Control: max-age=1")) == []


def test_is_conditional() -> None:
    assert validators.is_conditional(h("if-none-match: x")) and validators.is_conditional(h("If-Range: x"))
    assert not validators.is_conditional(h("Range: bytes=0-1"))


def test_revalidated_headers_take_the_304s_age_and_date() -> None:
    stored = h("Date: old", "Age: 40", 'ETag: "v1"', "Cache-Control: max-age=1")
    merged = validators.revalidated_headers(stored, h("Age: 3", "Cache-Control: max-age=9"), T0)
    assert merged == h('ETag: "v1"', "Cache-Control: max-age=9", "Age: 3", "Date: " + DATE)
    dated = validators.revalidated_headers(stored, h("Date: new"), T0 + 5)
    assert dated == h('ETag: "v1"', "Cache-Control: max-age=1", "Date: new")   # no Age in the 304: none


def test_has_validator() -> None:
    assert validators.has_validator(h('ETag: "a"')) and validators.has_validator(h("Last-Modified: " + DATE))
    assert not validators.has_validator(h("Date: " + formatdate(T0, usegmt=True)))
