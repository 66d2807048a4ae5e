"""tracking-service: where couriers are now, and a server-sent-events stream of a courier's position."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Flask, Response, jsonify

from samples.common import create_service_app, int_arg, json_error, service_state, sse_event

NAME = "tracking-service"
SPEED_M_PER_S = 5.0  # a courier on a bicycle in town
METRES_PER_DEGREE = 111_320.0

# Each courier rides a loop between these points (latitude, longitude) in north-east Paris.
ROUTES: dict[int, list[tuple[float, float]]] = {
    11: [(48.8722, 2.3806), (48.8768, 2.3894), (48.8814, 2.3859), (48.8790, 2.3760)],
    12: [(48.8679, 2.3634), (48.8702, 2.3702), (48.8661, 2.3784), (48.8633, 2.3700)],
    13: [(48.8848, 2.3727), (48.8875, 2.3793), (48.8839, 2.3841)],
}
ORDER_COURIERS = {2: 12, 123: 11}  # orders out for delivery or about to be

routes = Blueprint("tracking", __name__)


def _leg_length(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Return the rough distance in metres between two nearby points."""
    dy = (b[0] - a[0]) * METRES_PER_DEGREE
    dx = (b[1] - a[1]) * METRES_PER_DEGREE * math.cos(math.radians(a[0]))
    return math.hypot(dx, dy)


def position(courier_id: int, started: float, now: float) -> dict[str, Any]:
    """Return where a courier is at ``now``, riding its loop since ``started``."""
    points = ROUTES[courier_id]
    legs = list(zip(points, points[1:] + points[:1], strict=True))
    lengths = [_leg_length(a, b) for a, b in legs]
    travelled = ((now - started) * SPEED_M_PER_S) % sum(lengths)
    for (a, b), length in zip(legs, lengths, strict=True):
        if travelled <= length:
            share = travelled / length
            heading = math.degrees(math.atan2(b[1] - a[1], b[0] - a[0])) % 360
            return {"courier_id": courier_id, "lat": round(a[0] + (b[0] - a[0]) * share, 6),
                    "lon": round(a[1] + (b[1] - a[1]) * share, 6), "heading_deg": round(heading, 1),
                    "speed_mps": SPEED_M_PER_S, "ts": round(now, 3)}
        travelled -= length
    raise AssertionError("unreachable: travelled is below the loop length")


def now_position(courier_id: int) -> dict[str, Any]:
    """Return a courier's current position."""
    return position(courier_id, service_state().data, time.time())


def no_store(response: Response) -> Response:
    """Mark a position as not storable: it is stale within a second."""
    response.headers["Cache-Control"] = "no-store"
    return response


@routes.get("/")
@routes.get("/couriers")
def list_positions() -> Response:
    """Return every courier's current position."""
    positions = [now_position(courier) for courier in ROUTES]
    return no_store(jsonify(couriers=positions, count=len(positions)))


@routes.get("/couriers/<int:courier_id>")
def read_position(courier_id: int) -> Response | tuple[Response, int]:
    """Return one courier's current position."""
    if courier_id not in ROUTES:
        return json_error(404, "not_found", f"no courier {courier_id}")
    return no_store(jsonify(now_position(courier_id)))


@routes.get("/couriers/<int:courier_id>/stream")
def stream_position(courier_id: int) -> Response | tuple[Response, int]:
    """Stream ``count`` position events (default 50), one every ``gap_ms`` (default 200)."""
    if courier_id not in ROUTES:
        return json_error(404, "not_found", f"no courier {courier_id}")
    count = int_arg("count", 50, 0, 100_000)
    gap = int_arg("gap_ms", 200, 0, 60_000) / 1000
    started = service_state().data

    def events() -> Iterator[bytes]:
        for index in range(count):
            if index:
                time.sleep(gap)
            yield sse_event(position(courier_id, started, time.time()), event="position", event_id=index)

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return Response(events(), mimetype="text/event-stream", headers=headers)


@routes.get("/orders/<int:order_id>")
def track_order(order_id: int) -> Response | tuple[Response, int]:
    """Return the courier position and a rough arrival estimate for an order."""
    courier_id = ORDER_COURIERS.get(order_id)
    if courier_id is None:
        return json_error(404, "not_found", f"order {order_id} is not being delivered")
    here = now_position(courier_id)
    return no_store(jsonify(order_id=order_id, courier=here, eta_minutes=4 + order_id % 9))


def create_app() -> Flask:
    """Build the tracking-service app; couriers start their loops when it starts."""
    return create_service_app(NAME, routes, data=time.time())
