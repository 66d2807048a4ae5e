"""delivery-service: which courier delivers which order, and how far the delivery has got."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Flask, Response, jsonify, request

from samples.common import create_service_app, json_error, service_state

NAME = "delivery-service"
# An assignment only moves forward, one status at a time.
NEXT_STATUS = {"assigned": "picked_up", "picked_up": "delivered"}

COURIERS: list[dict[str, Any]] = [
    {"id": 11, "name": "Carla Reyes", "vehicle": "bicycle", "active": True},
    {"id": 12, "name": "Yusuf Demir", "vehicle": "scooter", "active": True},
    {"id": 13, "name": "Mei Tanaka", "vehicle": "e-bike", "active": False},
]

SEED_ASSIGNMENTS: list[dict[str, Any]] = [
    {"id": 501, "order_id": 1, "courier_id": 11, "status": "delivered", "assigned_at": "2026-11-20T18:50:03Z",
     "picked_up_at": "2026-11-20T19:02:40Z", "delivered_at": "2026-11-20T19:17:12Z"},
    {"id": 502, "order_id": 2, "courier_id": 12, "status": "picked_up", "assigned_at": "2026-11-26T12:09:30Z",
     "picked_up_at": "2026-11-26T12:24:51Z", "delivered_at": None},
    {"id": 503, "order_id": 123, "courier_id": 11, "status": "assigned", "assigned_at": "2026-11-26T12:52:10Z",
     "picked_up_at": None, "delivered_at": None},
]

routes = Blueprint("delivery", __name__)


class Dispatch:
    """Delivery assignments kept in memory and seeded."""

    def __init__(self) -> None:
        self.assignments = {a["id"]: a for a in copy.deepcopy(SEED_ASSIGNMENTS)}
        self.next_id = 600

    def least_busy_courier(self) -> int:
        """Pick the active courier with the fewest open assignments."""
        open_jobs = {c["id"]: 0 for c in COURIERS if c["active"]}
        for job in self.assignments.values():
            if job["status"] != "delivered" and job["courier_id"] in open_jobs:
                open_jobs[job["courier_id"]] += 1
        return min(open_jobs, key=lambda courier: (open_jobs[courier], courier))


def dispatch() -> Dispatch:
    """Return this app's assignments."""
    return service_state().data  # type: ignore[no-any-return]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@routes.get("/")
def list_assignments() -> Response:
    """List assignments, optionally filtered by ``status``, ``courier_id`` or ``order_id``."""
    found = list(dispatch().assignments.values())
    for key in ("status", "courier_id", "order_id"):
        if key in request.args:
            found = [a for a in found if str(a[key]) == request.args[key]]
    return jsonify(assignments=found, count=len(found))


@routes.post("/")
def assign() -> Response | tuple[Response, int]:
    """Assign an order to a courier (the least busy one unless ``courier_id`` is given)."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("order_id"), int):
        return json_error(400, "bad_request", "send JSON with an integer order_id")
    courier_id = body.get("courier_id") or dispatch().least_busy_courier()
    if courier_id not in {c["id"] for c in COURIERS if c["active"]}:
        return json_error(400, "bad_request", f"no active courier {courier_id}")
    book = dispatch()
    job = {"id": book.next_id, "order_id": body["order_id"], "courier_id": courier_id, "status": "assigned",
           "assigned_at": _now(), "picked_up_at": None, "delivered_at": None}
    book.assignments[job["id"]] = job
    book.next_id += 1
    response = jsonify(job)
    response.headers["Location"] = f"/{job['id']}"
    return response, 201


@routes.get("/couriers")
def list_couriers() -> Response:
    """List the couriers."""
    return jsonify(couriers=COURIERS, count=len(COURIERS))


@routes.get("/<int:assignment_id>")
def read_assignment(assignment_id: int) -> Response | tuple[Response, int]:
    """Return one assignment."""
    job = dispatch().assignments.get(assignment_id)
    if job is None:
        return json_error(404, "not_found", f"no delivery assignment {assignment_id}")
    return jsonify(job)


@routes.patch("/<int:assignment_id>")
def advance(assignment_id: int) -> Response | tuple[Response, int]:
    """Move an assignment to its next status (``picked_up``, then ``delivered``)."""
    job = dispatch().assignments.get(assignment_id)
    if job is None:
        return json_error(404, "not_found", f"no delivery assignment {assignment_id}")
    body = request.get_json(silent=True)
    wanted = body.get("status") if isinstance(body, dict) else None
    if wanted != NEXT_STATUS.get(job["status"]):
        return json_error(409, "conflict", f"assignment {assignment_id} is {job['status']}; cannot become {wanted}")
    job["status"] = wanted
    job[f"{wanted}_at"] = _now()
    return jsonify(job)


def create_app() -> Flask:
    """Build the delivery-service app."""
    return create_service_app(NAME, routes, data=Dispatch())
