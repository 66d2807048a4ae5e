"""Request validation and forwarding headers, judged on the raw target as the client sent it."""

from __future__ import annotations

import io

import pytest

from gateway.config.settings import load_settings
from gateway.errors import BadPath, InvalidJSON, NotImplementedFeature, PayloadTooLarge
from gateway.http.inbound import build_call, check_path, client_ip_from, end_to_end, request_id_from

SETTINGS = load_settings({"MAX_BODY_BYTES": "16"})
ORDERS = SETTINGS.services["order-service"]


def environ(target: str = "/orders/123", method: str = "GET", body: bytes = b"", peer: str = "10.1.2.3",
            **headers: str) -> dict:
    env = {
        "REQUEST_METHOD": method, "RAW_URI": target, "REMOTE_ADDR": peer, "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body), "HTTP_HOST": "gw.example", "SERVER_NAME": "gw.example",
    }
    if body:
        env["CONTENT_LENGTH"] = str(len(body))
    for name, value in headers.items():
        key = name.upper()
        env[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key] = value
    return env


@pytest.mark.parametrize("path", [
    "/orders/./1", "/orders/../admin", "/orders/%2e%2e/admin", "/orders/%2E/x", "/orders/a%2Fb", "/orders/a%2fb",
    "/orders/a%5Cb", "/orders/a\\b", "/orders/..", "/orders/x/%2e", "orders/1", "/orders/a%00b", "/orders/a b",
])
def test_bad_paths_are_refused(path: str) -> None:
    with pytest.raises(BadPath):
        check_path(path)


@pytest.mark.parametrize("path", ["/orders/123", "/orders/a%7eb", "/orders/%252e%252e", "/orders/...", "/orders/a.b",
                                  "/orders//x", "/orders/%zz", "/orders/ü"])
def test_odd_but_safe_paths_pass(path: str) -> None:
    check_path(path)


def test_target_keeps_the_raw_escapes_and_strips_the_prefix() -> None:
    call = build_call(environ("/orders/a%7eb|c%zz?x=%7c&y=1&y=2"), ORDERS, SETTINGS, "rid")
    assert call.target == "/a%7eb|c%zz?x=%7c&y=1&y=2"
    assert call.path == "/orders/a%7eb|c%zz" and call.query == "x=%7c&y=1&y=2"
    assert build_call(environ("/orders"), ORDERS, SETTINGS, "r").target == "/"
    assert build_call(environ("/orders/"), ORDERS, SETTINGS, "r").target == "/"
    assert build_call(environ("/orders?a=1"), ORDERS, SETTINGS, "r").target == "/?a=1"
    assert build_call(environ("/orders?"), ORDERS, SETTINGS, "r").target == "/?"
    assert build_call(environ("/orders//x"), ORDERS, SETTINGS, "r").target == "//x"


def test_non_ascii_bytes_are_percent_encoded_only_where_needed() -> None:
    raw = "/orders/caf\xc3\xa9?q=%7e"  # gunicorn hands the raw bytes over as latin-1
    assert build_call(environ(raw), ORDERS, SETTINGS, "r").target == "/caf%C3%A9?q=%7e"


def test_forwarding_headers_from_an_untrusted_peer() -> None:
    call = build_call(environ(x_forwarded_for="1.1.1.1", x_forwarded_host="evil", x_forwarded_proto="https",
                              via="1.0 edge", connection="close, X-Secret", x_secret="s", keep_alive="5",
                              te="trailers", upgrade="h2c", accept="application/json"), ORDERS, SETTINGS, "rid-1")
    sent = dict(call.upstream_headers)
    assert sent["X-Forwarded-For"] == "10.1.2.3"
    assert sent["X-Forwarded-Host"] == "gw.example"
    assert sent["X-Forwarded-Proto"] == "http"
    assert sent["X-Request-Id" if "X-Request-Id" in sent else "X-Request-ID"] == "rid-1"
    assert sent["Via"] == "1.0 edge, 1.1 gateway"
    assert sent["Accept"] == "application/json"
    lowered = {k.lower() for k in sent}
    assert not lowered & {"connection", "x-secret", "keep-alive", "te", "upgrade", "host"}
    assert call.client_ip == "10.1.2.3"


def test_forwarding_headers_from_a_trusted_proxy() -> None:
    call = build_call(environ(peer="127.0.0.1", x_forwarded_for="203.0.113.9, 10.0.0.1",
                              x_forwarded_host="shop.example", x_forwarded_proto="https"), ORDERS, SETTINGS, "r")
    sent = dict(call.upstream_headers)
    assert sent["X-Forwarded-For"] == "203.0.113.9, 10.0.0.1, 127.0.0.1"
    assert sent["X-Forwarded-Host"] == "shop.example"
    assert sent["X-Forwarded-Proto"] == "https"
    assert call.client_ip == "10.0.0.1"


def test_client_ip_skips_trusted_hops() -> None:
    allow = ("127.0.0.1", "10.0.0.0/8")
    assert client_ip_from("127.0.0.1", "198.51.100.7, 10.2.3.4", allow) == "198.51.100.7"
    assert client_ip_from("192.0.2.1", "198.51.100.7", allow) == "192.0.2.1"


@pytest.mark.parametrize(("given", "kept"), [("abc-123", True), ("a" * 200, True), ("a" * 201, False),
                                             ("bad id", False), ("x\u00e9", False), ("", False)])
def test_request_id_is_kept_only_when_well_formed(given: str, kept: bool) -> None:
    rid = request_id_from({"HTTP_X_REQUEST_ID": given})
    assert (rid == given) is kept
    assert 1 <= len(rid) <= 200


def test_oversized_bodies_are_refused_before_reading() -> None:
    class Exploding(io.BytesIO):
        def read(self, *args):  # noqa: ANN002, ANN202
            raise AssertionError("body read")

    env = environ(method="POST", body=b"x" * 17)
    env["wsgi.input"] = Exploding()
    with pytest.raises(PayloadTooLarge):
        build_call(env, ORDERS, SETTINGS, "r")


def test_chunked_bodies_are_bounded() -> None:
    env = environ(method="POST", transfer_encoding="chunked")
    env["wsgi.input"] = io.BytesIO(b"y" * 1000)
    with pytest.raises(PayloadTooLarge):
        build_call(env, ORDERS, SETTINGS, "r")
    env["wsgi.input"] = io.BytesIO(b"y" * 16)
    assert build_call(env, ORDERS, SETTINGS, "r").body == b"y" * 16


@pytest.mark.parametrize(("ctype", "body", "encoding", "bad"), [
    ("application/json", b"{bad", None, True),
    ("application/problem+json; charset=utf-8", b"[1,", None, True),
    ("application/json", b"{bad", "gzip", False),
    ("text/plain", b"{bad", None, False),
    ("application/json", b'{"a": 1}', None, False),
    ("application/json", b"\xff\xfe", None, True),
])
def test_invalid_json_rule(ctype: str, body: bytes, encoding: str | None, bad: bool) -> None:
    extra = {"content_encoding": encoding} if encoding else {}
    env = environ(method="POST", body=body, content_type=ctype, **extra)
    if bad:
        with pytest.raises(InvalidJSON):
            build_call(env, ORDERS, SETTINGS, "r")
    else:
        assert build_call(env, ORDERS, SETTINGS, "r").body == body


def test_websocket_upgrade_is_not_implemented() -> None:
    with pytest.raises(NotImplementedFeature):
        build_call(environ(upgrade="websocket", connection="Upgrade"), ORDERS, SETTINGS, "r")


def test_end_to_end_drops_headers_named_by_connection() -> None:
    kept = end_to_end([("Connection", "x-a, keep-alive"), ("X-A", "1"), ("X-B", "2"), ("Transfer-Encoding", "x")])
    assert kept == [("X-B", "2")]
