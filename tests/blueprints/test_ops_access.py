"""The ops surface closed by default, through real sockets: BIND, loopback peers and the trusted-proxy rule."""

from __future__ import annotations

import http.client
import json
import runpy
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import REPO_ROOT, SampleServices, start_gateway

OPS_PATHS = ("/stats/circuit-breakers", "/stats/cache", "/metrics", "/dashboard", "/health/services")
REMOTE_CLIENT = "203.0.113.7"  # a documentation address: a client on another host


def ask(host: str, port: int, path: str, headers: dict[str, str] | None = None,
        source: str | None = None) -> tuple[int, bytes]:
    """GET ``path`` on a fresh connection from ``source`` (a local address to connect from)."""
    conn = http.client.HTTPConnection(host, port, timeout=10, source_address=(source, 0) if source else None)
    try:
        conn.request("GET", path, headers={"Connection": "close", **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.e2e
def test_remote_clients_behind_a_local_proxy_are_refused_without_a_token(samples: SampleServices,
                                                                          tmp_path: Path) -> None:
    env = {**samples.env(), "HEALTH_CHECK_INTERVAL": "0", "BIND": "127.0.0.1", "FORWARDED_ALLOW_IPS": "127.0.0.1"}
    with start_gateway(env, 1, log_dir=tmp_path) as gw:
        for path in OPS_PATHS:
            # A client on this host: answered.
            assert ask("127.0.0.1", gw.port, path)[0] == 200, path
            # A proxy on this host (trusted) forwarding a remote client: refused, naming the setting.
            status, body = ask("127.0.0.1", gw.port, path, {"X-Forwarded-For": REMOTE_CLIENT})
            assert status == 403, path
            error = json.loads(body)["error"]
            assert (error["status"], error["code"]) == (403, "forbidden") and "OPS_TOKEN" in error["message"]
        # Load balancers still reach the liveness check, and the proxied routes are not ops endpoints.
        assert ask("127.0.0.1", gw.port, "/health", {"X-Forwarded-For": REMOTE_CLIENT})[0] == 200
        assert ask("127.0.0.1", gw.port, "/restaurants/1", {"X-Forwarded-For": REMOTE_CLIENT})[0] == 200


@pytest.mark.e2e
def test_an_untrusted_peer_cannot_claim_to_be_local(samples: SampleServices, tmp_path: Path) -> None:
    # 127.0.0.1 is not a trusted proxy here, so what it forwards is ignored and the peer counts.
    env = {**samples.env(), "HEALTH_CHECK_INTERVAL": "0", "BIND": "127.0.0.1", "FORWARDED_ALLOW_IPS": "10.9.9.9"}
    with start_gateway(env, 1, log_dir=tmp_path) as gw:
        assert ask("127.0.0.1", gw.port, "/metrics", {"X-Forwarded-For": REMOTE_CLIENT})[0] == 200


@pytest.mark.e2e
def test_bind_picks_the_listen_address_and_all_of_loopback_is_local(samples: SampleServices, tmp_path: Path) -> None:
    env = {**samples.env(), "HEALTH_CHECK_INTERVAL": "0", "BIND": "127.0.0.2"}
    with start_gateway(env, 1, log_dir=tmp_path) as gw:
        assert gw.url == f"http://127.0.0.2:{gw.port}"
        with pytest.raises(ConnectionRefusedError):  # nothing listens on 127.0.0.1
            socket.create_connection(("127.0.0.1", gw.port), timeout=5).close()
        # From another loopback address (127.0.0.0/8 is all this host): answered.
        assert ask("127.0.0.2", gw.port, "/stats/cache", source="127.0.0.3")[0] == 200
        # The same, forwarded for a remote client by a proxy trusted by default (127.0.0.1): refused.
        forwarded = {"X-Forwarded-For": REMOTE_CLIENT}
        assert ask("127.0.0.2", gw.port, "/stats/cache", forwarded, source="127.0.0.1")[0] == 403
        assert ask("127.0.0.2", gw.port, "/stats/cache", forwarded, source="127.0.0.3")[0] == 200  # not trusted


@pytest.mark.e2e
def test_with_a_token_a_remote_client_is_answered_with_it(samples: SampleServices, tmp_path: Path) -> None:
    token = "ops-access-token-1"
    env = {**samples.env(), "HEALTH_CHECK_INTERVAL": "0", "OPS_TOKEN": token}
    with start_gateway(env, 1, log_dir=tmp_path) as gw:
        remote = {"X-Forwarded-For": REMOTE_CLIENT}
        assert ask("127.0.0.1", gw.port, "/metrics", remote)[0] == 401
        assert ask("127.0.0.1", gw.port, "/metrics", {**remote, "Authorization": f"Bearer {token}"})[0] == 200


@pytest.mark.parametrize(("bind", "expected"), [
    (None, "0.0.0.0:{port}"), ("127.0.0.1", "127.0.0.1:{port}"), ("::1", "[::1]:{port}"),
    ("[::]", "[::]:{port}"), ("gateway.internal", "gateway.internal:{port}"),
])
def test_gunicorn_listens_on_bind_and_port(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, bind: str | None,
                                           expected: str) -> None:
    monkeypatch.setenv("GATEWAY_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    monkeypatch.setenv("PORT", "3123")
    if bind is None:
        monkeypatch.delenv("BIND", raising=False)
    else:
        monkeypatch.setenv("BIND", bind)
    config: dict[str, Any] = runpy.run_path(str(REPO_ROOT / "gunicorn.conf.py"))
    assert config["bind"] == expected.format(port=3123)
