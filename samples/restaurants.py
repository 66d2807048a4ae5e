"""restaurant-service: restaurants and their menus, sent with ``Cache-Control: public, max-age=60``."""

from __future__ import annotations

import copy
from typing import Any

from flask import Blueprint, Flask, Response, jsonify, request

from samples.common import create_service_app, json_error, service_state

NAME = "restaurant-service"
CACHE_CONTROL = "public, max-age=60"


def _dish(item_id: int, name: str, price_cents: int, category: str, **extra: Any) -> dict[str, Any]:
    return {"id": item_id, "name": name, "price_cents": price_cents, "category": category,
            "available": True, **extra}


SEED_RESTAURANTS: list[dict[str, Any]] = [
    {"id": 1, "name": "Trattoria Da Marco", "cuisine": "italian", "rating": 4.6, "price_level": 2,
     "address": "48 Rue de Belleville, 75020 Paris", "open": True, "eta_minutes": [25, 35],
     "menu": [_dish(101, "Margherita", 1150, "pizza", vegetarian=True),
              _dish(102, "Quattro Formaggi", 1390, "pizza", vegetarian=True),
              _dish(103, "Burrata Salad", 990, "starter", vegetarian=True),
              _dish(104, "Tiramisu", 650, "dessert", vegetarian=True)]},
    {"id": 2, "name": "Bangkok Street Kitchen", "cuisine": "thai", "rating": 4.4, "price_level": 2,
     "address": "7 Rue du Faubourg du Temple, 75010 Paris", "open": True, "eta_minutes": [20, 30],
     "menu": [_dish(201, "Chicken Pad Thai", 1390, "noodles"),
              _dish(202, "Green Curry with Tofu", 1290, "curry", vegetarian=True, spicy=True),
              _dish(203, "Spring Rolls (4)", 590, "starter", vegetarian=True)]},
    {"id": 3, "name": "Poke Lagoon", "cuisine": "hawaiian", "rating": 4.2, "price_level": 2,
     "address": "102 Boulevard de la Villette, 75019 Paris", "open": True, "eta_minutes": [15, 25],
     "menu": [_dish(301, "Salmon Poke Bowl", 1490, "bowl"),
              _dish(302, "Spicy Tuna Bowl", 1590, "bowl", spicy=True),
              _dish(303, "Edamame", 450, "side", vegetarian=True)]},
    {"id": 4, "name": "Burger Forge", "cuisine": "american", "rating": 4.1, "price_level": 1,
     "address": "15 Rue Oberkampf, 75011 Paris", "open": False, "eta_minutes": [30, 45],
     "menu": [_dish(401, "Double Cheeseburger", 1290, "burger"),
              _dish(402, "Veggie Burger", 1190, "burger", vegetarian=True),
              _dish(403, "Sweet Potato Fries", 450, "side", vegetarian=True)]},
]

routes = Blueprint("restaurants", __name__)


def restaurants() -> dict[int, dict[str, Any]]:
    """Return this app's restaurants by id."""
    return service_state().data  # type: ignore[no-any-return]


def summary(restaurant: dict[str, Any]) -> dict[str, Any]:
    """Return a restaurant without its menu."""
    return {key: value for key, value in restaurant.items() if key != "menu"}


@routes.after_request
def shared_caching(response: Response) -> Response:
    """Let shared caches keep successful reads for a minute: menus change rarely."""
    if request.method in ("GET", "HEAD") and response.status_code == 200:
        response.headers.setdefault("Cache-Control", CACHE_CONTROL)
    return response


@routes.get("/")
def list_restaurants() -> Response:
    """List restaurants, optionally filtered by ``cuisine`` or ``open``."""
    found = [summary(r) for r in restaurants().values()]
    if "cuisine" in request.args:
        found = [r for r in found if r["cuisine"] == request.args["cuisine"].lower()]
    if "open" in request.args:
        found = [r for r in found if r["open"] == (request.args["open"].lower() in ("1", "true", "yes"))]
    return jsonify(restaurants=found, count=len(found))


@routes.get("/<int:restaurant_id>")
def read_restaurant(restaurant_id: int) -> Response | tuple[Response, int]:
    """Return one restaurant with its menu."""
    restaurant = restaurants().get(restaurant_id)
    if restaurant is None:
        return json_error(404, "not_found", f"no restaurant {restaurant_id}")
    return jsonify(restaurant)


@routes.get("/<int:restaurant_id>/menu")
def read_menu(restaurant_id: int) -> Response | tuple[Response, int]:
    """Return a restaurant's menu, optionally one ``category``."""
    restaurant = restaurants().get(restaurant_id)
    if restaurant is None:
        return json_error(404, "not_found", f"no restaurant {restaurant_id}")
    menu = restaurant["menu"]
    if "category" in request.args:
        menu = [dish for dish in menu if dish["category"] == request.args["category"]]
    return jsonify(restaurant_id=restaurant_id, currency="EUR", items=menu)


def create_app() -> Flask:
    """Build the restaurant-service app."""
    data = {r["id"]: r for r in copy.deepcopy(SEED_RESTAURANTS)}
    return create_service_app(NAME, routes, data=data)
