"""One JSON line per request on stdout, and nothing secret in it.

Lines go out in a single ``write`` each, so lines from several workers sharing stdout never
interleave. Only the fields below are ever logged: no header values, no bodies, no query strings
(they may carry tokens).

The access line is on every request's path, so in JSON format it is built by hand (one
``json.dumps`` of a small dict) and written straight to the handler's stream: the same line the
``logging`` machinery and python-json-logger would write, at a few microseconds instead of tens.
Whenever anything else listens on the gateway's loggers (another handler, a filter) or the format
is ``text``, the line goes through ``logging`` as before.

Under gevent the lines of one turn of the event loop are written together, just before the loop
waits for the network again: no line waits for a timer, yet a busy worker makes one ``write`` for
several requests instead of one each (a write and a flush cost more than the rest of a cache hit).
A batch stays under ``PIPE_BUF``, so batches from several workers sharing a pipe never interleave
either; what is still pending when the worker exits is written by an ``atexit`` hook.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import sys
import time
from collections.abc import Callable
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from gateway.messages import ProxyCall
from gateway.observe.metrics import InFlight
from gateway.observe.stats import GatewayStats

FIELDS = ("request_id", "method", "path", "status", "duration_ms", "service", "cache", "breaker",
          "upstream_ms", "attempts", "upstream", "client_ip")
LOGGER_NAME = "gateway.access"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S%z"
BATCH_BYTES = 4096 - 512  # below PIPE_BUF with room for one more line: a pipe write stays atomic


def _loop_callback() -> Callable[[Callable[[], None]], object] | None:
    """gevent's "run before the loop next waits" scheduler, once gevent has patched the process."""
    if "gevent.monkey" not in sys.modules:
        return None
    from gevent import get_hub, monkey

    if not monkey.is_module_patched("socket"):
        return None
    schedule: Callable[[Callable[[], None]], object] = get_hub().loop.run_callback
    return schedule


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = [self.formatTime(record), record.levelname, record.getMessage()]
        parts += [f"{name}={getattr(record, name)}" for name in FIELDS if getattr(record, name, None) is not None]
        return " ".join(parts)


def configure_logging(level: str, fmt: str) -> logging.Logger:
    """Send the gateway's loggers to stdout as JSON (or text), one line per record."""
    handler = logging.StreamHandler(sys.stdout)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(
            "%(asctime)s %(levelname)s %(message)s",
            rename_fields={"asctime": "ts", "levelname": "level"},
            datefmt=DATE_FORMAT,
        ))
    else:
        handler.setFormatter(_TextFormatter())
    logger = logging.getLogger("gateway")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    return logging.getLogger(LOGGER_NAME)


_json_string = json.encoder.encode_basestring_ascii  # the C escaper json.dumps uses for a str


def json_value(value: object) -> str:
    """``json.dumps(value)`` for the access line's field types (str, int, float, None), a few times faster."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return _json_string(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else json.dumps(value)  # repr is json's own float form
    return str(value)


def _line(stamp: str, level: str, fields: dict[str, Any]) -> str:
    """The JSON access line: ``FIELDS`` in their order, in one format (a loop over them costs 40 % more)."""
    j, f = json_value, fields.get
    return (f'{{"ts": "{stamp}", "level": "{level}", "message": "request", "request_id": {j(f("request_id"))}, '
            f'"method": {j(f("method"))}, "path": {j(f("path"))}, "status": {j(f("status"))}, '
            f'"duration_ms": {j(f("duration_ms"))}, "service": {j(f("service"))}, "cache": {j(f("cache"))}, '
            f'"breaker": {j(f("breaker"))}, "upstream_ms": {j(f("upstream_ms"))}, "attempts": {j(f("attempts"))}, '
            f'"upstream": {j(f("upstream"))}, "client_ip": {j(f("client_ip"))}}}\n')


def _level_for(fields: dict[str, Any]) -> int:
    status = fields.get("status") or 0
    return logging.ERROR if status >= 500 and fields.get("cache") is None and status != 503 else logging.INFO


class AccessLog:
    """Writes the access line of each finished request: by hand when only our JSON handler listens."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.parent = logger.parent if logger.parent is not None else logging.getLogger("gateway")
        self._second = -1
        self._stamp = ""
        self._pending: list[str] = []
        self._pending_bytes = 0
        self._pending_handler: logging.StreamHandler | None = None  # type: ignore[type-arg]
        self._schedule: Callable[[Callable[[], None]], object] | None = None
        self._scheduled = False
        self._hooked = False

    def _json_stream(self, level: int) -> logging.StreamHandler | None:  # type: ignore[type-arg]
        """The one JSON stream handler the line would reach, or None when logging must decide."""
        logger, parent = self.logger, self.parent
        if logger.handlers or logger.filters or not logger.propagate or parent.filters or logger.disabled:
            return None
        handlers = parent.handlers
        if len(handlers) != 1 or parent.disabled or parent.propagate:
            return None
        handler = handlers[0]
        if (type(handler) is not logging.StreamHandler or handler.filters or level < handler.level
                or not isinstance(handler.formatter, JsonFormatter)):
            return None
        return handler

    def _timestamp(self, now: float) -> str:
        second = int(now)
        if second != self._second:
            self._second, self._stamp = second, time.strftime(DATE_FORMAT, time.localtime(now))
        return self._stamp

    def write(self, **fields: Any) -> None:
        """Log one finished request at INFO (ERROR for the gateway's own 5xx other than 503)."""
        if not self.logger.isEnabledFor(logging.INFO):
            return
        level = _level_for(fields)
        handler = self._json_stream(level)
        if handler is None:
            self.through_logging(level, fields)
            return
        text = _line(self._timestamp(time.time()), logging.getLevelName(level), fields)
        if not self._hooked:
            self._hooked = True
            self._schedule = _loop_callback()
            atexit.register(self.flush)
        if self._pending_handler is not handler:
            self.flush()
            self._pending_handler = handler
        self._pending.append(text)
        self._pending_bytes += len(text)
        if self._schedule is None or self._pending_bytes >= BATCH_BYTES:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            self._schedule(self.flush)

    def flush(self) -> None:
        """Write the pending lines in one ``write`` (a batch never passes ``PIPE_BUF``)."""
        self._scheduled = False
        handler, pending = self._pending_handler, self._pending
        if handler is None or not pending:
            return
        text = "".join(pending)
        self._pending, self._pending_bytes = [], 0
        with handler.lock:  # type: ignore[union-attr]
            try:
                handler.stream.write(text)
                handler.flush()
            except Exception:  # a closed stdout must not fail the request
                pass

    def through_logging(self, level: int, fields: dict[str, Any]) -> None:
        """The same line as a logging record, for other handlers, filters and ``LOG_FORMAT=text``."""
        self.logger.log(level, "request", extra={name: fields.get(name) for name in FIELDS})


class RequestLog:
    """Logs and counts each finished request, whichever entrance answered it (``blueprints.envelope``)."""

    def __init__(self, access: AccessLog, stats: GatewayStats, in_flight: InFlight | None = None) -> None:
        self.access = access
        self.stats = stats
        self.in_flight = in_flight  # a forwarded call counts in flight until its answer is done

    def closer(self, started: float, request_id: str | None, method: str, path: str, status: int,
               call: ProxyCall | None, cache: str | None, remote_addr: str | None) -> Callable[[], None]:
        """Return what to run when the body is done: one access line, and the request counted.

        A request with a ``call`` was forwarded, and so counted in flight: it leaves the count here.
        """
        service = call.service.name if call is not None else None
        fields = dict(
            request_id=request_id, method=method, path=path, status=status, service=service, cache=cache,
            breaker=call.breaker if call is not None else None,
            upstream_ms=round(call.upstream_s * 1000, 3) if call is not None and call.upstream_s is not None else None,
            attempts=call.attempts if call is not None else None,
            upstream=call.upstream_url if call is not None else None,
            client_ip=call.client_ip if call is not None else remote_addr,
        )

        in_flight = self.in_flight if call is not None else None

        def on_close() -> None:
            if in_flight is not None:
                in_flight.dec()
            duration = time.perf_counter() - started
            self.access.write(duration_ms=round(duration * 1000, 3), **fields)
            if service is not None:
                self.stats.record_request(service, method, status, cache, duration,
                                          call.upstream_s if call is not None else None)

        return on_close
