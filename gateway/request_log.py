"""One JSON line per request on stdout, and nothing secret in it.

Lines go out in a single ``write`` each, so lines from several workers sharing stdout never
interleave. Only the fields below are ever logged: no header values, no bodies, no query strings
(they may carry tokens).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from pythonjsonlogger.json import JsonFormatter

FIELDS = ("request_id", "method", "path", "status", "duration_ms", "service", "cache", "breaker",
          "upstream_ms", "client_ip")
LOGGER_NAME = "gateway.access"


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
            datefmt="%Y-%m-%dT%H:%M:%S%z",
        ))
    else:
        handler.setFormatter(_TextFormatter())
    logger = logging.getLogger("gateway")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    return logging.getLogger(LOGGER_NAME)


def log_request(logger: logging.Logger, **fields: Any) -> None:
    """Log one finished request with the agreed fields (others are ignored)."""
    if logger.isEnabledFor(logging.INFO):
        status = fields.get("status") or 0
        level = logging.ERROR if status >= 500 and fields.get("cache") is None and status != 503 else logging.INFO
        logger.log(level, "request", extra={name: fields.get(name) for name in FIELDS})
