"""Turning a client's WSGI request into a :class:`ProxyCall`: validation and forwarding headers.

Everything here is judged on what the client sent on the wire (gunicorn's ``RAW_URI``), never on
the server's decoded ``PATH_INFO``, so what is checked is exactly what goes upstream.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote_to_bytes

from gateway.config.settings import ServiceConfig, Settings
from gateway.errors import BadPath, InvalidJSON, NotImplementedFeature, PayloadTooLarge
from gateway.http.ids import new_request_id
from gateway.http.server import INTERIM_KEY
from gateway.messages import Headers, IndexedHeaders, ProxyCall

if TYPE_CHECKING:
    from _typeshed.wsgi import InputStream

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te",
    "trailer", "trailers", "transfer-encoding", "upgrade",
})
# Set by the gateway itself from the connection, never copied from the client as is.
FORWARDING = frozenset({"host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id"})
# Other forwarding facts a client could forge to change what a service answers, and so poison a
# shared cache entry: kept only from FORWARDED_ALLOW_IPS peers, like X-Forwarded-Proto and -Host.
TRUSTED_ONLY = frozenset({"forwarded", "x-forwarded-port", "x-forwarded-scheme", "x-forwarded-prefix",
                          "x-forwarded-server", "x-forwarded-ssl"})
NOT_FORWARDED_TRUSTED = FORWARDING | {"via"}  # replaced by the gateway's own values
NOT_FORWARDED = NOT_FORWARDED_TRUSTED | TRUSTED_ONLY
REQUEST_ID = re.compile(r"[A-Za-z0-9._:+/=-]{1,200}")
CONTROL = re.compile(r"[\x00-\x20\x7f]")
VIA = "1.1 gateway"


def request_id_from(environ: Mapping[str, Any]) -> str:
    """Return the client's ``X-Request-ID`` when well-formed, else a new one."""
    given = environ.get("HTTP_X_REQUEST_ID")
    if given and REQUEST_ID.fullmatch(given):
        return str(given)
    return new_request_id()


def raw_target(environ: Mapping[str, Any]) -> str:
    """Return the request target as the client sent it (gunicorn's ``RAW_URI``, or rebuilt)."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        return str(raw)
    path = quote(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""), safe="/:@!$&'()*+,;=-._~")
    query = environ.get("QUERY_STRING", "")
    return f"{path}?{query}" if query else path


def check_path(raw_path: str) -> None:
    """Reject dot segments and encoded slashes or backslashes (after one percent-decode)."""
    if not raw_path.startswith("/") or CONTROL.search(raw_path):
        raise BadPath()
    if "%" not in raw_path and "." not in raw_path and "\\" not in raw_path:
        return  # nothing to decode and no dot segment: the common case, decided without decoding
    lowered = raw_path.lower()
    if "%2f" in lowered or "%5c" in lowered:
        raise BadPath()
    decoded = unquote_to_bytes(raw_path)
    if b"\\" in decoded or b"\x00" in decoded:
        raise BadPath()
    for segment in decoded.split(b"/"):
        if segment in (b".", b".."):
            raise BadPath()


def ascii_target(target: str) -> str:
    """Percent-encode bytes a request line cannot carry (non-ASCII), leaving every escape as sent."""
    if target.isascii():
        return target
    return "".join(c if c.isascii() else quote(c.encode("latin-1", "replace")) for c in target)


def is_trusted(peer: str, allow: tuple[str, ...]) -> bool:
    """Whether ``peer`` may send ``X-Forwarded-*`` (gunicorn's ``forwarded_allow_ips`` rules)."""
    if "*" in allow or peer in allow:
        return True
    key = (peer, allow)
    known = _TRUSTED.get(key)
    if known is None:
        known = _is_trusted(peer, allow)
        if len(_TRUSTED) >= 4096:
            _TRUSTED.clear()
        _TRUSTED[key] = known
    return known


_TRUSTED: dict[tuple[str, tuple[str, ...]], bool] = {}  # peers already judged (parsing an address costs microseconds)


def _is_trusted(peer: str, allow: tuple[str, ...]) -> bool:
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    for entry in allow:
        if "/" in entry:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
    return False


def is_loopback(address: str) -> bool:
    """Whether ``address`` is this host's own: 127.0.0.0/8, ``::1``, or an IPv4-mapped ``::ffff:127.x.y.z``."""
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def client_ip_from(peer: str, forwarded_for: str | None, allow: tuple[str, ...]) -> str:
    """The peer, or behind trusted proxies the rightmost ``X-Forwarded-For`` entry not trusted."""
    if not forwarded_for or not is_trusted(peer, allow):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not is_trusted(hop, allow):
            return hop
    return hops[0] if hops else peer


_HEADER_NAMES: dict[str, str] = {}  # environ key -> header name (HTTP_X_REQUEST_ID -> X-Request-Id), worked out once


def header_name(key: str) -> str:
    """The header name an ``HTTP_*`` environ key stands for, title-cased."""
    name = _HEADER_NAMES.get(key)
    if name is None:
        name = key[5:].replace("_", "-").title()
        if len(_HEADER_NAMES) < 1024:  # names a client makes up are few in practice; past this, worked out each time
            _HEADER_NAMES[key] = name
    return name


def request_headers(environ: Mapping[str, Any]) -> Headers:
    """The client's headers from the WSGI environ, in a stable order."""
    headers: Headers = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers.append((header_name(key), value))
    if environ.get("CONTENT_TYPE"):
        headers.append(("Content-Type", environ["CONTENT_TYPE"]))
    return headers


def end_to_end(headers: Headers) -> Headers:
    """Drop hop-by-hop headers, including any the ``Connection`` header names."""
    named = HOP_BY_HOP
    for key, value in headers:
        if key.lower() == "connection":
            named = named | {token.strip().lower() for token in value.split(",")}
    return [(k, v) for k, v in headers if k.lower() not in named]


def read_body(environ: Mapping[str, Any], limit: int) -> bytes:
    """Read the body, refusing (413) anything over ``limit`` before holding it in memory."""
    length = environ.get("CONTENT_LENGTH")
    chunked = "chunked" in str(environ.get("HTTP_TRANSFER_ENCODING", "")).lower()
    stream: InputStream = environ["wsgi.input"]
    if length and not chunked:
        try:
            size = int(length)
        except ValueError:
            raise PayloadTooLarge("The request's Content-Length is not a number.") from None
        if size > limit:
            raise PayloadTooLarge()
        return stream.read(size) if size > 0 else b""
    if not chunked and not environ.get("wsgi.input_terminated"):
        return b""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge()
    return data


def check_json(headers: Headers, body: bytes) -> None:
    """A non-empty JSON body (by type, not encoded) must parse."""
    if not body:
        return
    content_type = ""
    encoded = False
    for key, value in headers:
        lowered = key.lower()
        if lowered == "content-type":
            content_type = value.split(";", 1)[0].strip().lower()
        elif lowered == "content-encoding" and value.strip().lower() not in ("", "identity"):
            encoded = True
    if encoded or not (content_type == "application/json" or content_type.endswith("+json")):
        return
    try:
        json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidJSON() from None


def build_call(environ: Mapping[str, Any], service: ServiceConfig, settings: Settings, request_id: str) -> ProxyCall:
    """Validate the request and build what goes upstream: target, headers and body."""
    target = raw_target(environ)
    raw_path, _, query = target.partition("?")
    check_path(raw_path)
    if "websocket" in str(environ.get("HTTP_UPGRADE", "")).lower():
        raise NotImplementedFeature(service=service.name)
    method = environ["REQUEST_METHOD"].upper()
    received = request_headers(environ)
    body = read_body(environ, settings.max_body_bytes)
    check_json(received, body)

    rest = raw_path
    if service.strip_prefix:
        depth = service.prefix.count("/")
        segments = raw_path.split("/")
        rest = "/" + "/".join(segments[depth + 1:])
    upstream_target = ascii_target(rest + ("?" + query if "?" in target else ""))

    peer = str(environ.get("REMOTE_ADDR") or "")
    trusted = is_trusted(peer, settings.forwarded_allow_ips)
    host = str(environ.get("HTTP_HOST") or environ.get("SERVER_NAME") or "")
    given_for = environ.get("HTTP_X_FORWARDED_FOR")
    forwarded_for = f"{given_for}, {peer}" if trusted and given_for else peer
    proto = (trusted and environ.get("HTTP_X_FORWARDED_PROTO")) or environ.get("wsgi.url_scheme", "http")
    forwarded_host = (trusted and environ.get("HTTP_X_FORWARDED_HOST")) or host
    headers = IndexedHeaders(end_to_end(received))
    dropped = NOT_FORWARDED_TRUSTED if trusted else NOT_FORWARDED
    kept = [(k, v) for k, v in headers if k.lower() not in dropped]
    via = environ.get("HTTP_VIA")
    upstream_headers = kept + [
        ("X-Forwarded-For", forwarded_for),
        ("X-Forwarded-Proto", str(proto)),
        ("X-Forwarded-Host", str(forwarded_host)),
        ("X-Request-ID", request_id),
        ("Via", f"{via}, {VIA}" if via else VIA),
    ]
    return ProxyCall(
        service=service,
        method=method,
        target=upstream_target,
        path=raw_path,
        query=query,
        host=host.lower(),
        headers=headers,
        body=body,
        request_id=request_id,
        client_ip=client_ip_from(peer, given_for, settings.forwarded_allow_ips),
        upstream_headers=upstream_headers,
        interim=environ.get(INTERIM_KEY),
    )
