"""Redirects and cookies keep the prefix: the reverse map alone, then through the gateway and its cache."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from app import create_app
from blueprints.envelope import gateway_of
from gateway.cache.entry import decode
from gateway.config.settings import ServiceConfig
from gateway.http.redirects import ReverseMap
from tests.support.local_http import LocalService, QuietHandler


def reverse(url: str = "http://10.0.0.5:8080", prefix: str = "/files", **extra: Any) -> ReverseMap:
    return ReverseMap(ServiceConfig(name="files", prefix=prefix, url=url, **extra))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/docs/", "/files/docs/"),
        ("/", "/files/"),
        ("/a?b=/c#d", "/files/a?b=/c#d"),
        ("http://10.0.0.5:8080/docs/", "/files/docs/"),
        ("HTTP://10.0.0.5:8080/x?y=1", "/files/x?y=1"),
        ("http://10.0.0.5:8080", "/files/"),
        ("//10.0.0.5:8080/x", "/files/x"),
        ("http://10.0.0.5:9999/x", "http://10.0.0.5:9999/x"),  # another port: another service
        ("https://10.0.0.5:8080/x", "https://10.0.0.5:8080/x"),
        ("https://example.com/docs/", "https://example.com/docs/"),
        ("docs/", "docs/"),  # relative: the client resolves it against the gateway's URL
        ("../up", "../up"),
        ("http://[bad", "http://[bad"),
    ],
)
def test_locations_into_the_service_get_the_prefix(value: str, expected: str) -> None:
    assert reverse().location(value) == expected


def test_default_port_and_base_path() -> None:
    mapped = reverse("https://api.example.com/v2")
    assert mapped.location("https://API.example.com:443/v2/items/1") == "/files/items/1"
    assert mapped.location("/v2") == "/files"
    assert mapped.location("/v2/") == "/files/"
    assert mapped.location("/login") == "/login"  # outside the service's base path: left alone
    assert mapped.location("/v20/x") == "/v20/x"


def test_prefix_kept_upstream_maps_only_the_origin() -> None:
    mapped = reverse(strip_prefix=False)
    assert mapped.location("/files/docs/") == "/files/docs/"
    assert mapped.location("http://10.0.0.5:8080/files/docs/") == "/files/docs/"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("sid=1; Path=/; HttpOnly", "sid=1; Path=/files; HttpOnly"),
        ("sid=1; path=/docs", "sid=1; path=/files/docs"),
        ("sid=1;Path=/docs/;Secure", "sid=1;Path=/files/docs/;Secure"),
        ("sid=1; HttpOnly", "sid=1; HttpOnly"),  # no Path: the client's default is already under the prefix
        ("sid=1; Path=relative", "sid=1; Path=relative"),
        ("path=/x; Max-Age=5", "path=/x; Max-Age=5"),  # a cookie named path is not the attribute
        ("a=b; Expires=Wed, 21 Oct 2026 07:28:00 GMT; Path=/",
         "a=b; Expires=Wed, 21 Oct 2026 07:28:00 GMT; Path=/files"),
    ],
)
def test_cookie_paths_get_the_prefix(value: str, expected: str) -> None:
    assert reverse().cookie(value) == expected


def test_headers_keep_order_and_the_switch_turns_it_off() -> None:
    headers = [("Content-Type", "text/html"), ("Location", "/a"), ("Set-Cookie", "x=1; Path=/"),
               ("Set-Cookie", "y=2; Path=/b"), ("Content-Location", "/c")]
    assert reverse().headers(headers) == [("Content-Type", "text/html"), ("Location", "/files/a"),
                                          ("Set-Cookie", "x=1; Path=/files"), ("Set-Cookie", "y=2; Path=/files/b"),
                                          ("Content-Location", "/files/c")]
    assert reverse(rewrite_redirects=False).headers(headers) is headers
    plain = [("Content-Type", "text/plain")]
    assert reverse().headers(plain) is plain


class Backend(LocalService):
    """A directory-style service: ``/docs`` redirects to ``/docs/`` (as ``python -m http.server`` does)."""

    def __init__(self) -> None:
        self.hits = 0
        backend = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                backend.hits += 1
                if self.path == "/docs":
                    self.send_response(301)
                    self.send_header("Location", "/docs/")
                    self.send_header("Cache-Control", "max-age=60")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = b"listing"
                self.send_response(302 if self.path == "/login" else 200)
                self.send_header("Location", f"http://127.0.0.1:{self.server.server_address[1]}/home")
                self.send_header("Set-Cookie", "sid=abc; Path=/; HttpOnly")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        super().__init__(Handler)


@pytest.fixture
def backend() -> Iterator[Backend]:
    server = Backend()
    yield server
    server.close()


def gateway(backend: Backend, **service: Any) -> Any:
    app = create_app({"HEALTH_CHECK_INTERVAL": 0,
                      "services": {"files": {"prefix": "/files", "url": backend.url, **service}}})
    return app.test_client()


def test_a_redirect_through_the_gateway_keeps_the_prefix_and_is_cached_rewritten(backend: Backend) -> None:
    client = gateway(backend)
    first = client.get("/files/docs")
    assert first.status_code == 301 and first.headers["Location"] == "/files/docs/"
    assert first.headers["X-Cache"] == "MISS"
    again = client.get("/files/docs")
    assert again.headers["X-Cache"] == "HIT" and again.headers["Location"] == "/files/docs/"
    assert backend.hits == 1
    store = gateway_of(client.application).cache.store
    stored = [decode(blob) for slot in store._slots.values() for blob in slot.variants.values()]
    assert len(stored) == 1 and stored[0] is not None
    assert ("Location", "/files/docs/") in stored[0].headers  # the entry holds the rewritten form


def test_uncached_answers_and_cookies_are_rewritten_too(backend: Backend) -> None:
    client = gateway(backend, cache=False)
    answer = client.get("/files/login")
    assert answer.status_code == 302 and answer.headers["X-Cache"] == "BYPASS"
    assert answer.headers["Location"] == "/files/home"
    assert answer.headers["Set-Cookie"] == "sid=abc; Path=/files; HttpOnly"


def test_rewrite_can_be_turned_off(backend: Backend) -> None:
    client = gateway(backend, rewrite_redirects=False, cache=False)
    assert client.get("/files/docs").headers["Location"] == "/docs/"
    assert client.get("/files/login").headers["Set-Cookie"] == "sid=abc; Path=/; HttpOnly"
