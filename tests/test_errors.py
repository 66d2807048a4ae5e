"""The exception tree and its one JSON envelope."""

from __future__ import annotations

import json

from gateway import errors


def test_every_client_error_is_a_4xx_and_every_upstream_error_a_5xx() -> None:
    for cls in errors.ClientError.__subclasses__():
        assert 400 <= cls.status < 500 or cls.status == 501, cls
    for cls in (errors.BadGateway, errors.GatewayTimeout, errors.CircuitOpen, errors.OnlyIfCached):
        assert issubclass(cls, errors.UpstreamError) and cls.status in (502, 503, 504), cls


def test_the_envelope_carries_status_code_message_service_and_request_id() -> None:
    status, headers, body = errors.error_answer(errors.CircuitOpen(service="order-service", retry_after=7), "r1")
    payload = json.loads(body)
    assert status == 503 and payload["error"]["status"] == 503 and payload["error"]["code"] == "circuit_open"
    assert payload["error"]["service"] == "order-service" and payload["error"]["request_id"] == "r1"
    assert dict(headers)["Content-Type"] == "application/json"
    assert dict(headers)["Retry-After"] == "7"
    assert dict(headers)["Cache-Control"] == "no-store"  # a 503 is never stored downstream
    assert dict(headers)["Content-Length"] == str(len(body))


def test_a_client_error_has_no_service_and_may_be_cached_by_its_rules() -> None:
    status, headers, body = errors.error_answer(errors.NotFound(), None)
    payload = json.loads(body)
    assert status == 404 and "service" not in payload["error"] and payload["error"]["request_id"] is None
    assert "Cache-Control" not in dict(headers)


def test_the_rendered_head_is_reused_but_the_request_id_is_each_requests() -> None:
    error = errors.BadGateway("upstream refused", service="x")
    first, second = errors.error_body(error, "a"), errors.error_body(error, 'b"}')
    assert json.loads(first)["error"]["request_id"] == "a"
    assert json.loads(second)["error"]["request_id"] == 'b"}'  # escaped: the body stays JSON
    assert json.loads(first)["error"]["message"] == json.loads(second)["error"]["message"] == "upstream refused"


def test_an_unexpected_error_is_a_plain_500_envelope() -> None:
    status, _, body = errors.error_answer(errors.GatewayError(), "r")
    assert status == 500 and json.loads(body)["error"]["code"] == errors.GatewayError.code
