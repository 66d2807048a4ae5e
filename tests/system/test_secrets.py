"""Admin and ops endpoints refuse missing or wrong tokens; secrets never reach the logs."""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path

import pytest

from app import create_app
from tests.support.chaos import fetch, report, wait_for
from tests.support.processes import RedisServer, SampleServices, start_gateway

ADMIN = "adm1n-T0KEN-3f1c9e"
OPS = "0ps-T0KEN-8d2b7a"
ADMIN_ENDPOINTS = [("DELETE", "/admin/cache"), ("DELETE", "/admin/cache?path=/orders/1"),
                   ("DELETE", "/admin/cache?prefix=/orders/"), ("POST", "/admin/circuit-breakers/order-service/open"),
                   ("POST", "/admin/circuit-breakers/order-service/close"),
                   ("POST", "/admin/circuit-breakers/order-service/reset")]
OPS_ENDPOINTS = ["/stats/cache", "/stats/circuit-breakers", "/metrics", "/dashboard", "/health/services"]


def basic(password: str, user: str = "ops") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


WRONG = [None, "", "Bearer", "Bearer ", f"Bearer {ADMIN}x", f"Bearer {ADMIN[:-1]}", f"Bearer {ADMIN.upper()}",
         f"Token {ADMIN}", f"Bearer {OPS}", basic(ADMIN), f"Bearer {ADMIN} extra", "Bearer \u00e9\u00e8",
         f"bearer{ADMIN}"]


@pytest.fixture(scope="module")
def client():  # noqa: ANN201
    app = create_app({"ADMIN_TOKEN": ADMIN, "OPS_TOKEN": OPS, "HEALTH_CHECK_INTERVAL": 0})
    return app.test_client()


@pytest.mark.parametrize(("method", "path"), ADMIN_ENDPOINTS)
@pytest.mark.parametrize("authorization", WRONG)
def test_admin_rejects_missing_or_wrong_tokens(client, method: str, path: str,  # noqa: ANN001
                                               authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    answer = client.open(path, method=method, headers=headers)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert answer.get_json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(("method", "path"), ADMIN_ENDPOINTS)
def test_admin_accepts_its_token(client, method: str, path: str) -> None:  # noqa: ANN001
    assert client.open(path, method=method, headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 200


def test_admin_is_off_without_a_token() -> None:
    app = create_app({"HEALTH_CHECK_INTERVAL": 0})
    for method, path in ADMIN_ENDPOINTS:
        answer = app.test_client().open(path, method=method, headers={"Authorization": "Bearer "})
        assert answer.status_code == 403 and answer.get_json()["error"]["code"] == "forbidden"


@pytest.mark.parametrize("path", OPS_ENDPOINTS)
@pytest.mark.parametrize("authorization", [None, "Bearer", f"Bearer {OPS}x", f"Bearer {ADMIN}", basic(OPS + "x"),
                                           basic(""), "Basic !!!notbase64", f"Basic {OPS}", "Bearer \u00e9"])
def test_ops_rejects_missing_or_wrong_tokens(client, path: str, authorization: str | None) -> None:  # noqa: ANN001
    headers = {} if authorization is None else {"Authorization": authorization}
    answer = client.get(path, headers=headers)
    assert answer.status_code == 401
    assert "WWW-Authenticate" in answer.headers
    assert OPS.encode() not in answer.data


@pytest.mark.parametrize("path", OPS_ENDPOINTS)
def test_ops_accepts_bearer_and_basic(client, path: str) -> None:  # noqa: ANN001
    assert client.get(path, headers={"Authorization": f"Bearer {OPS}"}).status_code == 200
    assert client.get(path, headers={"Authorization": basic(OPS, "anyone")}).status_code == 200


def test_health_stays_open(client) -> None:  # noqa: ANN001
    assert client.get("/health").status_code == 200


@pytest.mark.e2e
def test_no_secret_reaches_the_logs(samples: SampleServices, redis_server: RedisServer, tmp_path: Path,
                                    request: pytest.FixtureRequest) -> None:
    """A whole scripted session full of distinctive secrets, then a scan of everything the gateway wrote."""
    secrets = {name: f"{name}-S3CRET-{n:04d}" for n, name in enumerate(
        ["bearer", "cookie", "setcookie", "body", "json", "query", "basic", "wrongadmin", "wrongops", "form",
         "proxyauth", "upstreamauth"])}
    env = {**samples.env(), "REDIS_URL": redis_server.url, "ADMIN_TOKEN": ADMIN, "OPS_TOKEN": OPS,
           "LOG_LEVEL": "DEBUG", "HEALTH_CHECK_INTERVAL": "0.2", "CB_TIMEOUT": "0.5",
           "ORDER_SERVICE_URL": "http://127.0.0.1:9"}  # a dead service: error paths log too
    sent = 0
    with start_gateway(env, 2, log_dir=tmp_path) as gw:
        user = {"Authorization": f"Bearer {secrets['bearer']}", "Cookie": f"sid={secrets['cookie']}",
                "Proxy-Authorization": f"Basic {secrets['proxyauth']}"}
        calls = [
            ("GET", f"/restaurants/1?token={secrets['query']}", user, None),
            ("GET", "/restaurants/_debug/echo?cc=public,max-age=60", user, None),
            ("GET", "/restaurants/_debug/echo?cc=public,max-age=60", user, None),
            ("GET", f"/tracking/_debug/echo?hdr=Set-Cookie:sid={secrets['setcookie']}", user, None),
            ("GET", f"/tracking/_debug/echo?hdr=WWW-Authenticate:Bearer%20{secrets['upstreamauth']}", {}, None),
            ("POST", "/tracking/_debug/echo", {**user, "Content-Type": "application/octet-stream"},
             secrets["body"].encode()),
            ("POST", "/delivery/_debug/echo", {**user, "Content-Type": "application/json"},
             json.dumps({"password": secrets["json"]}).encode()),
            ("POST", "/delivery/_debug/echo", {**user, "Content-Type": "application/json"},
             b'{"broken": "' + secrets["json"].encode()),  # invalid_json
            ("POST", "/delivery/_debug/echo", {**user, "Content-Type": "application/x-www-form-urlencoded"},
             f"password={secrets['form']}".encode() * 400),  # 413
            ("PATCH", "/orders/1", {**user, "Content-Type": "application/json"},
             json.dumps({"card": secrets["body"]}).encode()),  # 502 from the dead service
            ("GET", "/tracking/_debug/status/500", user, None),
            ("GET", "/tracking/_debug/truncated", user, None),
            ("DELETE", "/admin/cache", {"Authorization": f"Bearer {ADMIN}"}, None),
            ("DELETE", "/admin/cache", {"Authorization": f"Bearer {secrets['wrongadmin']}"}, None),
            ("POST", "/admin/circuit-breakers/tracking-service/reset", {"Authorization": f"Bearer {ADMIN}"}, None),
            ("GET", "/stats/cache", {"Authorization": f"Bearer {OPS}"}, None),
            ("GET", "/stats/circuit-breakers", {"Authorization": basic(OPS)}, None),
            ("GET", "/metrics", {"Authorization": f"Bearer {secrets['wrongops']}"}, None),
            ("GET", "/dashboard", {"Authorization": basic(secrets["basic"])}, None),
            ("GET", "/health/services", {"Authorization": f"Bearer {OPS}"}, None),
            ("GET", "/health", user, None),
        ]
        for method, target, headers, body in calls * 3:
            fetch(gw.port, target, method, headers, body)
            sent += 1
        time.sleep(0.5)  # a few health-check rounds and stats flushes
        assert wait_for(lambda: len(gw.json_logs()) >= sent, 3.0)
        gw.stop()
        text = gw.stdout_text() + gw.stderr_text()
    needles = [*secrets.values(), ADMIN, OPS, base64.b64encode(f"ops:{OPS}".encode()).decode()]
    leaked = [needle for needle in needles if needle in text]
    assert not leaked, leaked
    assert not re.search(r"S3CRET", text)
    report(request, "secrets", requests=sent, log_bytes=len(text), secrets_checked=len(needles), leaked=len(leaked))
