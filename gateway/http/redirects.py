"""Redirects and cookies keep the service's prefix: the reverse of the gateway's path mapping.

A service behind ``/files`` (prefix stripped) that answers ``301 Location: /docs/`` means the
gateway's ``/files/docs/``; so does ``Location: http://<its own host>/docs/``. Like nginx's
``proxy_redirect default`` and Apache's ``ProxyPassReverse``/``ProxyPassReverseCookiePath``, the
gateway maps ``Location`` and ``Content-Location`` that point into the service, and the ``Path`` of
``Set-Cookie``, back under the prefix. References elsewhere (another host, a path outside the
service's base path, a relative reference, which the client resolves against the gateway's URL
anyway) pass unchanged. ``rewrite_redirects: false`` turns it off per service.

The rewrite runs once, where the upstream's answer headers are shaped (``gateway.http.upstream``), so
a stored entry, a cache hit, a miss and a stream all carry the same rewritten headers.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from gateway.config.settings import ServiceConfig
from gateway.messages import Headers

LOCATIONS = frozenset({"location", "content-location"})
REWRITTEN = LOCATIONS | {"set-cookie"}
DEFAULT_PORTS = {"http": 80, "https": 443}


class ReverseMap:
    """Maps one service's own URLs and paths back into the gateway's path space."""

    def __init__(self, service: ServiceConfig) -> None:
        parts = urlsplit(service.url)
        self.enabled = service.rewrite_redirects
        self.scheme = parts.scheme.lower()
        self.host = (parts.hostname or "").lower()
        self.port = parts.port or DEFAULT_PORTS.get(self.scheme)
        self.base = parts.path.rstrip("/")
        self.prefix = service.prefix if service.strip_prefix else ""

    def headers(self, headers: Headers) -> Headers:
        """``headers`` with every Location, Content-Location and Set-Cookie Path mapped back (same list if none)."""
        if not self.enabled or not any(name.lower() in REWRITTEN for name, _ in headers):
            return headers
        out: Headers = []
        for name, value in headers:
            lname = name.lower()
            if lname in LOCATIONS:
                value = self.location(value)
            elif lname == "set-cookie":
                value = self.cookie(value)
            out.append((name, value))
        return out

    def path(self, path: str) -> str | None:
        """The gateway path of a service path, or None when the path is outside the service."""
        if self.base:
            if path != self.base and not path.startswith(self.base + "/"):
                return None
            path = path[len(self.base):]
        return self.prefix + path if self.prefix else (path or "/")

    def location(self, value: str) -> str:
        """A ``Location``/``Content-Location`` value mapped back under the prefix when it points into the service."""
        text = value.strip()
        if text.startswith("/") and not text.startswith("//"):
            rest_at = min((i for i in (text.find("?"), text.find("#")) if i >= 0), default=len(text))
            mapped = self.path(text[:rest_at])
            return value if mapped is None else mapped + text[rest_at:]
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError:
            return value
        scheme = parts.scheme.lower() or (self.scheme if text.startswith("//") else "")
        if not parts.netloc or scheme != self.scheme or (parts.hostname or "").lower() != self.host:
            return value
        if (port or DEFAULT_PORTS.get(scheme)) != self.port or parts.username is not None:
            return value
        mapped = self.path(parts.path or "/")
        if mapped is None:
            return value
        return mapped + (f"?{parts.query}" if parts.query else "") + (f"#{parts.fragment}" if parts.fragment else "")

    def cookie(self, value: str) -> str:
        """A ``Set-Cookie`` value whose ``Path`` attribute is mapped back under the prefix."""
        pieces = value.split(";")
        changed = False
        for index, piece in enumerate(pieces[1:], start=1):
            key, sep, attr = piece.partition("=")
            if not sep or key.strip().lower() != "path":
                continue
            path = attr.strip()
            mapped = self.path(path) if path.startswith("/") else None
            if mapped is None:
                continue
            if mapped != "/" and mapped.endswith("/") and self.prefix and mapped == self.prefix + "/":
                mapped = self.prefix  # "/" means the whole service: Path=/files also matches /files itself
            lead = piece[: len(piece) - len(piece.lstrip())]
            pieces[index] = f"{lead}{key.strip()}={mapped}"
            changed = True
        return ";".join(pieces) if changed else value
