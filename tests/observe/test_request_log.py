"""The hand-built access line is the line python-json-logger writes, and it steps aside for other listeners."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from gateway.observe.request_log import AccessLog, configure_logging

FIELDS = dict(request_id="r-1", method="GET", path="/orders/ü", status=200, duration_ms=0.25,
              service="order-service", cache="HIT", breaker=None, upstream_ms=None, client_ip="10.0.0.7")


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    logger = configure_logging("INFO", "json")
    out = io.StringIO()
    handler = logging.getLogger("gateway").handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)
    yield out
    assert logger is not None


def lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


@pytest.mark.parametrize("status,cache,level", [(200, "HIT", "INFO"), (502, None, "ERROR"), (503, None, "INFO"),
                                                (500, "MISS", "INFO")])
def test_same_line_as_the_json_formatter(stream: io.StringIO, status: int, cache: str | None, level: str) -> None:
    fields = {**FIELDS, "status": status, "cache": cache}
    access = logging.getLogger("gateway.access")
    AccessLog(access).through_logging(logging.getLevelName(level), fields)
    AccessLog(access).write(**fields)
    by_logging, by_hand = lines(stream)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", json.loads(by_hand)["ts"])
    strip = re.compile(r'"ts": "[^"]*", ')
    assert strip.sub("", by_hand) == strip.sub("", by_logging)
    assert json.loads(by_hand)["level"] == level


def test_other_listeners_get_a_record(stream: io.StringIO) -> None:
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    keep = Keep()
    logging.getLogger("gateway").addHandler(keep)
    try:
        AccessLog(logging.getLogger("gateway.access")).write(**FIELDS)
    finally:
        logging.getLogger("gateway").removeHandler(keep)
    assert len(seen) == 1 and seen[0].request_id == "r-1"  # type: ignore[attr-defined]
    assert len(lines(stream)) == 1


def test_nothing_below_the_level(stream: io.StringIO) -> None:
    logging.getLogger("gateway").setLevel("WARNING")
    AccessLog(logging.getLogger("gateway.access")).write(**{**FIELDS, "status": 502, "cache": None})
    assert lines(stream) == []  # as before: access lines are INFO-gated
