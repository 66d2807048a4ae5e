"""Diagnostic endpoints under ``/_debug/`` that let the gateway's end-to-end tests see and provoke wire behaviour."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

from flask import Blueprint, Response, abort, request

from samples.common import DropConnection, etag_matches, int_arg, service_state, sse_event

debug = Blueprint("debug", __name__, url_prefix="/_debug")

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
MAX_DELAY_MS = 60_000


def raw_target(environ: dict[str, Any]) -> str:
    """Return the request target as it arrived on the wire (the server's RAW_URI), or a rebuilt one."""
    target = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if target:
        return str(target)
    # Only servers that do not record the raw target get here; the rebuild is approximate.
    query = environ.get("QUERY_STRING", "")
    path = quote(environ.get("PATH_INFO", ""), safe="/:@!$&'()*+,;=-._~")
    return path + ("?" + query if query else "")


def received_headers(environ: dict[str, Any]) -> list[list[str]]:
    """Return request headers in received order with duplicates kept, when the server recorded them."""
    raw = environ.get("samples.raw_headers")
    if raw is not None:
        return [[name, value] for name, value in raw]
    return [[name, value] for name, value in request.headers.items()]


def _sleep_ms(name: str) -> None:
    """Sleep for the number of milliseconds in query parameter ``name``, if given."""
    delay = int_arg(name, 0, 0, MAX_DELAY_MS)
    if delay:
        time.sleep(delay / 1000)


def _not_modified(etag: str | None, last_modified: str | None) -> bool:
    """Apply the conditional request headers to the validators the echo was asked to send."""
    if etag is not None and "If-None-Match" in request.headers:
        return etag_matches(request, etag)
    since = request.headers.get("If-Modified-Since")
    if last_modified is None or since is None:
        return False
    try:
        return parsedate_to_datetime(since) >= parsedate_to_datetime(last_modified)
    except (TypeError, ValueError):
        return False


def bodiless(status: int, headers: list[tuple[str, str]] | None = None) -> Response:
    """Build a 204 or 304 answer, which has neither body nor Content-Type."""
    response = Response(status=status, headers=headers)
    response.headers.pop("Content-Type", None)
    return response


@debug.route("/echo", methods=ALL_METHODS, provide_automatic_options=False)
@debug.route("/echo/<path:rest>", methods=ALL_METHODS, provide_automatic_options=False)
def echo(rest: str = "") -> Response:
    """Describe the request exactly as received; query parameters shape the answer.

    ``cc``, ``etag``, ``vary`` and ``lm`` set Cache-Control, ETag, Vary and
    Last-Modified; ``status`` sets the status; ``delay_ms`` waits first;
    every ``hdr=Name:value`` adds a response header.
    """
    _sleep_ms("delay_ms")
    body = request.get_data(cache=False)
    args = request.args
    etag, last_modified = args.get("etag"), args.get("lm")
    headers: list[tuple[str, str]] = []
    for name, value in (("Cache-Control", args.get("cc")), ("ETag", etag), ("Vary", args.get("vary")),
                        ("Last-Modified", last_modified)):
        if value is not None:
            headers.append((name, value))
    for extra in args.getlist("hdr"):
        name, sep, value = extra.partition(":")
        if not sep or not name.strip():
            abort(400, "hdr must look like Name:value")
        headers.append((name.strip(), value.strip()))
    if request.method in ("GET", "HEAD") and _not_modified(etag, last_modified):
        return bodiless(304, headers)
    status = int_arg("status", 200, 200, 599)
    if status in (204, 304):
        return bodiless(status, headers)
    description = {
        "service": service_state().name,
        "method": request.method,
        "raw_target": raw_target(request.environ),
        "path": request.path,
        "query": request.query_string.decode("latin-1"),
        "headers": received_headers(request.environ),
        "remote_addr": request.remote_addr,
        "body_sha256": hashlib.sha256(body).hexdigest(),
        "body_len": len(body),
        "body_b64": base64.b64encode(body).decode(),
    }
    return Response(json.dumps(description), status=status, headers=headers, mimetype="application/json")


@debug.get("/cookies")
def cookies() -> Response:
    """Answer with three separate Set-Cookie headers (one with a comma in its Expires date)."""
    response = Response(json.dumps({"cookies": 3}), mimetype="application/json")
    response.headers.add("Set-Cookie", "session=3f9a2c; Path=/; HttpOnly")
    response.headers.add("Set-Cookie", "theme=dark; Path=/; Expires=Wed, 21 Oct 2037 07:28:00 GMT")
    response.headers.add("Set-Cookie", "lang=fr; Path=/; Max-Age=3600; SameSite=Lax")
    return response


@debug.get("/gzip")
def gzipped() -> Response:
    """Answer gzip-compressed JSON when the client accepts gzip, plain JSON otherwise."""
    payload = json.dumps({"message": "compressed hello", "items": list(range(50))}).encode()
    response = Response(mimetype="application/json", headers={"Vary": "Accept-Encoding"})
    if "gzip" in request.headers.get("Accept-Encoding", "").lower():
        response.set_data(gzip.compress(payload, mtime=0))
        response.headers["Content-Encoding"] = "gzip"
    else:
        response.set_data(payload)
    return response


@debug.get("/redirect")
def redirect() -> Response:
    """Answer a redirect (302 to /elsewhere unless ``status`` or ``to`` say otherwise)."""
    status = int_arg("status", 302, 300, 399)
    location = request.args.get("to", "/elsewhere")
    return Response(json.dumps({"location": location}), status=status, headers={"Location": location},
                    mimetype="application/json")


@debug.get("/truncated")
def truncated() -> Response:
    """Promise 1000 bytes, send 100, then close the connection."""

    def body() -> Iterator[bytes]:
        yield b"x" * 100
        raise DropConnection("body cut short on purpose")

    return Response(body(), headers={"Content-Length": "1000"}, mimetype="application/octet-stream")


@debug.get("/slow-headers")
def slow_headers() -> Response:
    """Wait ``ms`` milliseconds before sending anything."""
    _sleep_ms("ms")
    return Response(json.dumps({"slow": "headers"}), mimetype="application/json")


@debug.get("/slow-body")
def slow_body() -> Response:
    """Send headers at once, then ``chunks`` chunks ``gap_ms`` apart."""
    chunks = int_arg("chunks", 5, 1, 10_000)
    gap = int_arg("gap_ms", 100, 0, MAX_DELAY_MS) / 1000

    def body() -> Iterator[bytes]:
        for index in range(chunks):
            if index:
                time.sleep(gap)
            yield f"chunk {index}\n".encode()

    return Response(body(), mimetype="text/plain")


@debug.get("/sse")
def sse() -> Response:
    """Stream ``count`` server-sent events ``gap_ms`` apart."""
    count = int_arg("count", 5, 0, 10_000)
    gap = int_arg("gap_ms", 100, 0, MAX_DELAY_MS) / 1000

    def events() -> Iterator[bytes]:
        for index in range(count):
            if index:
                time.sleep(gap)
            yield sse_event({"n": index, "ts": time.time()}, event="tick", event_id=index)

    return Response(events(), mimetype="text/event-stream", headers={"Cache-Control": "no-cache"})


@debug.route("/status/<int:code>", methods=ALL_METHODS, provide_automatic_options=False)
def status(code: int) -> Response:
    """Answer with status ``code`` and a small JSON body."""
    if not 200 <= code <= 599:
        abort(400, "status must be from 200 to 599")
    if code in (204, 304):
        return bodiless(code)
    return Response(json.dumps({"status": code}), status=code, mimetype="application/json")


@debug.get("/big")
def big() -> Response:
    """Answer a body of exactly ``bytes`` bytes, streamed in 64 KiB pieces."""
    size = int_arg("bytes", 1024 * 1024, 0, 256 * 1024 * 1024)
    piece = (b"0123456789abcdef" * 4096)[:65536]

    def body() -> Iterator[bytes]:
        remaining = size
        while remaining > 0:
            chunk = piece[: min(remaining, len(piece))]
            remaining -= len(chunk)
            yield chunk

    return Response(body(), headers={"Content-Length": str(size)}, mimetype="application/octet-stream")
