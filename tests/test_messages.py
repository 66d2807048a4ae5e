"""The request's types and header helpers."""

from __future__ import annotations

import pytest

from gateway.messages import IndexedHeaders, credential_digest, header_value, header_values


def test_credential_digest_differs_per_user() -> None:
    a = credential_digest([("Authorization", "Bearer a")])
    assert a != credential_digest([("Authorization", "Bearer b")])
    assert a != credential_digest([("Cookie", "Bearer a")])
    assert a != credential_digest([("Authorization", "Bearer a"), ("Cookie", "s=1")])
    assert a == credential_digest([("Authorization", "Bearer a")])
    assert len(a) == 64 and "Bearer" not in a


@pytest.mark.parametrize("name", ["cache-control", "Cache-Control", "COOKIE", "range", "Authorization", "x-absent"])
def test_indexed_headers_answer_every_lookup_as_the_plain_list_does(name: str) -> None:
    plain = [("Cache-Control", "no-cache"), ("Cookie", "a=1"), ("cache-control", "max-age=0"), ("COOKIE", "b=2"),
             ("Range", "bytes=0-1")]
    indexed = IndexedHeaders(plain)
    assert indexed == plain  # still the list, in order, for whatever iterates it
    assert header_values(indexed, name) == header_values(plain, name)
    assert header_value(indexed, name) == header_value(plain, name)


def test_the_values_indexed_headers_return_are_the_callers_own() -> None:
    indexed = IndexedHeaders([("Vary", "Accept")])
    header_values(indexed, "vary").append("changed")
    assert header_values(indexed, "Vary") == ["Accept"]
