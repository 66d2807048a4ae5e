"""The request's types and header helpers."""

from __future__ import annotations

from gateway.messages import credential_digest


def test_credential_digest_differs_per_user() -> None:
    a = credential_digest([("Authorization", "Bearer a")])
    assert a != credential_digest([("Authorization", "Bearer b")])
    assert a != credential_digest([("Cookie", "Bearer a")])
    assert a != credential_digest([("Authorization", "Bearer a"), ("Cookie", "s=1")])
    assert a == credential_digest([("Authorization", "Bearer a")])
    assert len(a) == 64 and "Bearer" not in a
