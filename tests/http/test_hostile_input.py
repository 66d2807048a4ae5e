"""Hostile input: generated and hand-written requests that try to break, escape or desynchronise the gateway.

Properties: no 500 and no traceback from the application, no crash, no request that leaves its
service (the echo endpoint reports the raw target the upstream received), no smuggled request
reaching a service, and bounded memory. This part runs the WSGI application in process (many
examples, fast); the wire-level part (``test_e2e_hostile_wire.py``) runs against a real gunicorn gateway.
"""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote_to_bytes

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import run_wsgi_app

from app import create_app
from gateway.config.settings import load_settings
from gateway.http.inbound import build_call
from tests.support.hostile import (
    BODIES,
    ECHO,
    HEADER_NAMES,
    HEADER_VALUES,
    MAX_BODY,
    METHODS,
    PATHS,
    QUERIES,
    assert_stays_in_service,
)
from tests.support.processes import SampleServices


def wsgi_environ(method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> dict[str, Any]:
    """The environ gunicorn builds for this request line, headers and body."""
    path, _, query = target.partition("?")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
        "QUERY_STRING": query, "RAW_URI": target, "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "40000",
        "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr, "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0), "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
        "HTTP_HOST": "gw.test",
    }
    if body:
        environ["CONTENT_LENGTH"] = str(len(body))
    for name, value in headers:
        key = name.upper().replace("-", "_")
        if key == "CONTENT_TYPE":
            environ["CONTENT_TYPE"] = value
        elif key not in ("CONTENT_LENGTH", "TRANSFER_ENCODING"):  # framing is gunicorn's, fixed above
            environ["HTTP_" + key] = value
    return environ


class Records(logging.Handler):
    """Keeps the gateway's log records so a test can look for errors and tracebacks."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def app(samples: SampleServices) -> Iterator[tuple[Flask, Records]]:
    """The gateway application in process, pointed at the sample services."""
    application = create_app({**samples.env(), "HEALTH_CHECK_INTERVAL": 0, "MAX_BODY_BYTES": MAX_BODY,
                              "CB_TIMEOUT": 2, "CB_VOLUME_THRESHOLD": 100000, "LOG_LEVEL": "WARNING"})
    records = Records()
    logging.getLogger("gateway").addHandler(records)
    yield application, records
    logging.getLogger("gateway").removeHandler(records)


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=METHODS, path=PATHS, query=QUERIES, headers=st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES),
                                                                    max_size=5), body=BODIES)
def test_no_input_makes_a_500_a_traceback_or_an_escape(app: tuple[Flask, Records], method: str, path: str,
                                                       query: str, headers: list[tuple[str, str]],
                                                       body: bytes) -> None:
    application, records = app
    before = len(records.records)
    target = path + query
    iterable, status_line, response_headers = run_wsgi_app(application, wsgi_environ(method, target, headers, body),
                                                           buffered=True)
    data = b"".join(iterable)
    status = int(status_line.split()[0])
    assert b"Traceback" not in data
    problems = [r for r in records.records[before:] if r.exc_info or r.getMessage() == "unhandled error"]
    assert not problems, [r.getMessage() for r in problems]
    if status >= 500:
        # Only the designed upstream failures, always as the JSON envelope.
        assert status in (501, 502, 503, 504), (target, status, data[:300])
        if method.upper() != "HEAD":
            assert json.loads(data)["error"]["code"]
    if status == 200 and method.upper() not in ("HEAD",) and path.startswith(ECHO):
        assert_stays_in_service(target, json.loads(data))
    if status == 200 and not path.startswith(("/tracking", "/orders")):
        assert path.startswith(("/stats",)), (target, status)  # nothing else answers 200



@pytest.mark.parametrize(("peer", "kept"), [("127.0.0.1", True), ("203.0.113.9", False)])
def test_forwarding_facts_are_kept_only_from_trusted_peers(peer: str, kept: bool) -> None:
    settings = load_settings(environ={}, overrides={"FORWARDED_ALLOW_IPS": "127.0.0.1"})
    forged = [("Forwarded", "host=evil.example;proto=https"), ("X-Forwarded-Port", "8443"),
              ("X-Forwarded-Scheme", "https"), ("X-Forwarded-Prefix", "/evil"), ("X-Forwarded-Server", "evil"),
              ("X-Forwarded-Ssl", "on"), ("X-Forwarded-Host", "evil.example"), ("X-Forwarded-Proto", "https")]
    environ = wsgi_environ("GET", "/tracking/x", forged, b"")
    environ["REMOTE_ADDR"] = peer
    call = build_call(environ, settings.services["tracking-service"], settings, "rid")
    sent = json.dumps(call.upstream_headers)
    assert ("evil" in sent) is kept
    assert ("8443" in sent) is kept
