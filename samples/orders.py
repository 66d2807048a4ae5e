"""order-service: customers' orders, created, read, updated and cancelled, each sent with an ETag."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Flask, Response, jsonify, request

from samples.common import create_service_app, etag_matches, etag_of, json_error, service_state

NAME = "order-service"
STATUSES = ("placed", "confirmed", "preparing", "ready_for_pickup", "out_for_delivery", "delivered", "cancelled")
CANCELLABLE = {"placed", "confirmed", "preparing", "ready_for_pickup"}
DELIVERY_FEE_CENTS = 299


def _item(menu_item_id: int, name: str, quantity: int, unit_price_cents: int) -> dict[str, Any]:
    return {"menu_item_id": menu_item_id, "name": name, "quantity": quantity, "unit_price_cents": unit_price_cents}


SEED_ORDERS: list[dict[str, Any]] = [
    {"id": 1, "customer_id": 1, "restaurant_id": 1, "status": "delivered",
     "items": [_item(101, "Margherita", 2, 1150), _item(104, "Tiramisu", 1, 650)],
     "delivery_address": "12 Rue des Lilas, 75019 Paris", "created_at": "2026-11-20T18:42:10Z"},
    {"id": 2, "customer_id": 2, "restaurant_id": 2, "status": "out_for_delivery",
     "items": [_item(201, "Chicken Pad Thai", 1, 1390), _item(203, "Spring Rolls (4)", 1, 590)],
     "delivery_address": "5 Avenue Jean Jaurès, 75019 Paris", "created_at": "2026-11-26T12:05:44Z"},
    {"id": 3, "customer_id": 1, "restaurant_id": 3, "status": "preparing",
     "items": [_item(301, "Salmon Poke Bowl", 1, 1490)],
     "delivery_address": "12 Rue des Lilas, 75019 Paris", "created_at": "2026-11-26T12:31:02Z"},
    {"id": 42, "customer_id": 2, "restaurant_id": 4, "status": "placed",
     "items": [_item(401, "Double Cheeseburger", 2, 1290), _item(403, "Sweet Potato Fries", 2, 450)],
     "delivery_address": "5 Avenue Jean Jaurès, 75019 Paris", "created_at": "2026-11-26T12:44:19Z"},
    {"id": 123, "customer_id": 1, "restaurant_id": 1, "status": "confirmed",
     "items": [_item(102, "Quattro Formaggi", 1, 1390), _item(103, "Burrata Salad", 1, 990)],
     "delivery_address": "12 Rue des Lilas, 75019 Paris", "created_at": "2026-11-26T12:50:00Z"},
]


class OrderBook:
    """The service's orders, kept in memory and seeded."""

    def __init__(self) -> None:
        self.orders: dict[int, dict[str, Any]] = {}
        for seed in copy.deepcopy(SEED_ORDERS):
            seed["updated_at"] = seed["created_at"]
            self.orders[seed["id"]] = priced(seed)
        self.next_id = 1000

    def add(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Store a new order and return it."""
        now = _now()
        order = priced({"id": self.next_id, "status": "placed", **fields, "created_at": now, "updated_at": now})
        self.orders[self.next_id] = order
        self.next_id += 1
        return order

    def change(self, order: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
        """Apply validated changes to an order and return it."""
        order.update(fields)
        order["updated_at"] = _now()
        return priced(order)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def priced(order: dict[str, Any]) -> dict[str, Any]:
    """Recompute an order's totals from its items."""
    subtotal = sum(item["quantity"] * item["unit_price_cents"] for item in order["items"])
    order.update(subtotal_cents=subtotal, delivery_fee_cents=DELIVERY_FEE_CENTS,
                 total_cents=subtotal + DELIVERY_FEE_CENTS, currency="EUR")
    return order


def validate(body: Any, *, partial: bool) -> dict[str, Any] | str:
    """Return the order fields of a request body, or a message saying what is wrong."""
    if not isinstance(body, dict):
        return "send a JSON object"
    allowed = {"customer_id", "restaurant_id", "items", "delivery_address", "status"}
    unknown = set(body) - allowed
    if unknown:
        return f"unknown field(s): {', '.join(sorted(unknown))}"
    required = set() if partial else {"customer_id", "restaurant_id", "items", "delivery_address"}
    missing = required - set(body)
    if missing:
        return f"missing field(s): {', '.join(sorted(missing))}"
    for key in ("customer_id", "restaurant_id"):
        if key in body and (not isinstance(body[key], int) or isinstance(body[key], bool) or body[key] < 1):
            return f"{key} must be a positive integer"
    if "delivery_address" in body and (not isinstance(body["delivery_address"], str) or not body["delivery_address"]):
        return "delivery_address must be a non-empty string"
    if "status" in body and body["status"] not in STATUSES:
        return f"status must be one of {', '.join(STATUSES)}"
    if "items" in body:
        items = body["items"]
        if not isinstance(items, list) or not items:
            return "items must be a non-empty list"
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                return "each item needs a name"
            for key, low in (("quantity", 1), ("unit_price_cents", 0)):
                value = item.get(key)
                if not isinstance(value, int) or isinstance(value, bool) or value < low:
                    return f"item {key} must be an integer of at least {low}"
        body["items"] = [_item(int(i.get("menu_item_id") or 0), i["name"], i["quantity"], i["unit_price_cents"])
                         for i in items]
    return body


routes = Blueprint("orders", __name__)


def book() -> OrderBook:
    """Return this app's order book."""
    return service_state().data  # type: ignore[no-any-return]


def with_etag(data: Any, status: int = 200) -> Response:
    """Answer ``data`` as JSON with its ETag, or 304 when the client already holds it."""
    etag = etag_of(data)
    if status == 200 and request.method in ("GET", "HEAD") and etag_matches(request, etag):
        return Response(status=304, headers={"ETag": etag})
    response = jsonify(data)
    response.status_code = status
    response.headers["ETag"] = etag
    return response


def find(order_id: int) -> dict[str, Any] | None:
    """Return an order by id, if it exists."""
    return book().orders.get(order_id)


def precondition_failed(order: dict[str, Any]) -> bool:
    """Tell whether the request's If-Match names a different version of the order."""
    wanted = request.headers.get("If-Match")
    if wanted is None or wanted.strip() == "*":
        return False
    return etag_of(order) not in {tag.strip() for tag in wanted.split(",")}


@routes.get("/")
def list_orders() -> Response:
    """List orders, optionally filtered by ``status`` or ``customer_id``."""
    orders = list(book().orders.values())
    if "status" in request.args:
        orders = [o for o in orders if o["status"] == request.args["status"]]
    if "customer_id" in request.args:
        orders = [o for o in orders if str(o["customer_id"]) == request.args["customer_id"]]
    return with_etag({"orders": orders, "count": len(orders)})


@routes.post("/")
def create_order() -> Response | tuple[Response, int]:
    """Place a new order."""
    fields = validate(request.get_json(silent=True), partial=False)
    if isinstance(fields, str):
        return json_error(400, "bad_request", fields)
    fields.pop("status", None)
    order = book().add(fields)
    response = with_etag(order, status=201)
    response.headers["Location"] = f"/{order['id']}"
    return response


@routes.get("/<int:order_id>")
def read_order(order_id: int) -> Response | tuple[Response, int]:
    """Return one order with its ETag (no Cache-Control: caches pick their own freshness)."""
    order = find(order_id)
    if order is None:
        return json_error(404, "not_found", f"no order {order_id}")
    return with_etag(order)


@routes.route("/<int:order_id>", methods=["PUT", "PATCH"])
def update_order(order_id: int) -> Response | tuple[Response, int]:
    """Replace (PUT) or change (PATCH) an order, honouring If-Match."""
    order = find(order_id)
    if order is None:
        return json_error(404, "not_found", f"no order {order_id}")
    if precondition_failed(order):
        return json_error(412, "precondition_failed", "the order changed since that ETag")
    fields = validate(request.get_json(silent=True), partial=request.method == "PATCH")
    if isinstance(fields, str):
        return json_error(400, "bad_request", fields)
    if order["status"] in ("delivered", "cancelled"):
        return json_error(409, "conflict", f"order {order_id} is {order['status']}")
    return with_etag(book().change(order, fields))


@routes.delete("/<int:order_id>")
@routes.post("/<int:order_id>/cancel")
def cancel_order(order_id: int) -> Response | tuple[Response, int]:
    """Cancel an order that has not left the restaurant."""
    order = find(order_id)
    if order is None:
        return json_error(404, "not_found", f"no order {order_id}")
    if order["status"] == "cancelled":
        return with_etag(order)
    if order["status"] not in CANCELLABLE:
        return json_error(409, "conflict", f"order {order_id} is {order['status']} and cannot be cancelled")
    return with_etag(book().change(order, {"status": "cancelled"}))


def create_app() -> Flask:
    """Build the order-service app."""
    return create_service_app(NAME, routes, data=OrderBook())
