"""What every sample service shares: health, runtime fault injection, request counts and JSON errors.

Each service builds its app with :func:`create_service_app` and adds its own
routes; the differences between services are their data and routes, never a
copy of this machinery.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from flask import Blueprint, Flask, Request, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as WerkzeugResponse

CONTROL_PREFIX = "/_control"
EXTENSION_KEY = "samples"


class DropConnection(Exception):  # noqa: N818 - it is an instruction to the server, not an error
    """Raised to make the server close the client connection without (the rest of) a response."""


@dataclass
class Faults:
    """Faults a service injects into every request that is not a control request."""

    error_rate: float = 0.0
    latency_ms: float = 0.0
    down: bool = False
    status: int = 500

    def update(self, changes: Mapping[str, Any]) -> None:
        """Apply a partial update, validating every value before changing any."""
        unknown = set(changes) - set(asdict(self))
        if unknown:
            raise ValueError(f"unknown fault setting(s): {', '.join(sorted(unknown))}")
        merged = {**asdict(self), **changes}
        rate, latency, down, status = (merged[k] for k in ("error_rate", "latency_ms", "down", "status"))
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
            raise ValueError("error_rate must be a number from 0 to 1")
        if isinstance(latency, bool) or not isinstance(latency, int | float) or latency < 0:
            raise ValueError("latency_ms must be a non-negative number")
        if not isinstance(down, bool):
            raise ValueError("down must be true or false")
        if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
            raise ValueError("status must be an integer from 200 to 599")
        self.error_rate, self.latency_ms, self.down, self.status = float(rate), float(latency), down, status

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Faults:
        """Read start-up faults from FAULT_ERROR_RATE, FAULT_LATENCY_MS, FAULT_DOWN and FAULT_STATUS."""
        faults = cls()
        changes: dict[str, Any] = {}
        readers: dict[str, tuple[str, Callable[[str], Any]]] = {
            "FAULT_ERROR_RATE": ("error_rate", float),
            "FAULT_LATENCY_MS": ("latency_ms", float),
            "FAULT_DOWN": ("down", _parse_bool),
            "FAULT_STATUS": ("status", int),
        }
        for variable, (field, parse) in readers.items():
            raw = environ.get(variable, "").strip()
            if not raw:
                continue
            try:
                changes[field] = parse(raw)
            except ValueError:
                raise ValueError(f"{variable}: cannot read {raw!r}") from None
        try:
            faults.update(changes)
        except ValueError as exc:
            raise ValueError(f"FAULT_* environment: {exc}") from None
        return faults


def _parse_bool(raw: str) -> bool:
    """Read a boolean environment value such as 1/0, true/false, yes/no, on/off."""
    value = raw.lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError(raw)


@dataclass
class ServiceState:
    """The runtime state one service app keeps in ``app.extensions["samples"]``."""

    name: str
    faults: Faults
    data: Any = None
    requests: int = 0
    by_path: Counter[str] | None = None

    def count(self, path: str) -> None:
        """Count one request that is not a control request."""
        self.requests += 1
        if self.by_path is None:
            self.by_path = Counter()
        self.by_path[path] += 1

    def reset_stats(self) -> None:
        """Forget every counted request."""
        self.requests, self.by_path = 0, Counter()

    def stats(self) -> dict[str, Any]:
        """Return the counters as JSON-ready data."""
        return {"service": self.name, "requests": self.requests, "by_path": dict(self.by_path or {})}


class FaultInjector:
    """WSGI middleware that counts requests and applies the configured faults before the app sees them.

    It sits outside Flask so that a dropped connection is not turned into a
    500 page by Flask's error handling.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]], state: ServiceState) -> None:
        self.app = app
        self.state = state
        self.random = random.Random()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == CONTROL_PREFIX or path.startswith(CONTROL_PREFIX + "/"):
            return self.app(environ, start_response)
        self.state.count(path)
        faults = self.state.faults
        if faults.latency_ms:
            time.sleep(faults.latency_ms / 1000)  # cooperative once gevent has patched time
        if faults.down:
            raise DropConnection(f"{self.state.name} is down (fault injection)")
        if faults.error_rate and self.random.random() < faults.error_rate:
            body = json.dumps(
                {"error": "injected_fault", "message": "fault injected by /_control/faults",
                 "service": self.state.name}
            ).encode()
            start_response(
                f"{faults.status} Injected Fault",
                [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
            )
            return [body]
        return self.app(environ, start_response)


def service_state() -> ServiceState:
    """Return the state of the service handling the current request."""
    return current_app.extensions[EXTENSION_KEY]  # type: ignore[no-any-return]


control = Blueprint("control", __name__, url_prefix=CONTROL_PREFIX)


@control.get("/faults")
def get_faults() -> Response:
    """Show the faults currently injected."""
    return jsonify(asdict(service_state().faults))


@control.post("/faults")
def set_faults() -> Response | tuple[Response, int]:
    """Change some or all of the injected faults."""
    changes = request.get_json(silent=True)
    if not isinstance(changes, dict):
        return json_error(400, "bad_request", "send a JSON object of fault settings")
    try:
        service_state().faults.update(changes)
    except ValueError as exc:
        return json_error(400, "bad_request", str(exc))
    return jsonify(asdict(service_state().faults))


@control.delete("/faults")
def reset_faults() -> Response:
    """Stop injecting faults."""
    service_state().faults = Faults()
    return jsonify(asdict(service_state().faults))


@control.get("/stats")
def get_stats() -> Response:
    """Show how many requests this service answered, by path."""
    return jsonify(service_state().stats())


@control.delete("/stats")
def reset_stats() -> Response:
    """Reset the request counters."""
    service_state().reset_stats()
    return jsonify(service_state().stats())


def health() -> Response:
    """Answer the health check (faults apply, so a checker sees them)."""
    return jsonify(status="ok", service=service_state().name)


def json_error(status: int, code: str, message: str) -> tuple[Response, int]:
    """Build the JSON error body a sample service answers with."""
    return jsonify(error=code, message=message, service=service_state().name), status


def handle_http_error(exc: HTTPException) -> WerkzeugResponse:
    """Answer Flask's own errors (404, 405, ...) as JSON like the services' other errors."""
    response = exc.get_response()
    code = (exc.name or "error").lower().replace(" ", "_")
    response.data = json.dumps({"error": code, "message": exc.description, "service": service_state().name})
    response.content_type = "application/json"
    return response


def etag_of(data: Any) -> str:
    """Return a strong ETag derived from the JSON form of ``data``."""
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:20]
    return f'"{digest}"'


def etag_matches(req: Request, etag: str) -> bool:
    """Tell whether the request's If-None-Match names ``etag`` (weak comparison, as RFC 9110 says)."""
    header = req.headers.get("If-None-Match")
    if header is None:
        return False
    if header.strip() == "*":
        return True
    wanted = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == wanted for tag in header.split(","))


def create_service_app(
    name: str, routes: Blueprint, data: Any = None, environ: Mapping[str, str] | None = None
) -> Flask:
    """Build the Flask app of one sample service: its routes and data plus health, control and debug endpoints."""
    from samples.debug import debug  # imported here: debug uses this module's helpers

    app = Flask(routes.import_name)
    app.url_map.merge_slashes = False  # echo what the gateway sent, never redirect it
    app.json.sort_keys = False  # type: ignore[attr-defined]
    state = ServiceState(name, Faults.from_environ(os.environ if environ is None else environ), data)
    state.reset_stats()
    app.extensions[EXTENSION_KEY] = state
    app.add_url_rule("/health", "health", health, methods=["GET"])
    app.register_blueprint(control)
    app.register_blueprint(debug)
    app.register_blueprint(routes)
    app.register_error_handler(HTTPException, handle_http_error)
    app.wsgi_app = FaultInjector(app.wsgi_app, state)  # type: ignore[method-assign]
    return app


def sse_event(data: Any, event: str | None = None, event_id: int | None = None) -> bytes:
    """Format one server-sent event carrying ``data`` as JSON."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event is not None:
        lines.append(f"event: {event}")
    lines.append(f"data: {json.dumps(data, separators=(',', ':'))}")
    return ("\n".join(lines) + "\n\n").encode()


def int_arg(name: str, default: int, low: int, high: int) -> int:
    """Read an integer query parameter within bounds, or fail the request with 400."""
    from flask import abort

    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        abort(400, f"{name} must be an integer")
    if not low <= value <= high:
        abort(400, f"{name} must be from {low} to {high}")
    return value
