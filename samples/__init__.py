"""Five small food-delivery backend services that the gateway fronts in demos and tests.

This module is imported before ``python -m samples`` patches the standard
library for gevent, so it holds plain data only and imports nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # Flask is imported lazily, see the module docstring.
    from flask import Flask


class ServiceSpec(NamedTuple):
    """Where one sample service lives: its name, default port and module."""

    name: str
    port: int
    module: str
    url_env: str


SERVICES: dict[str, ServiceSpec] = {
    spec.name: spec
    for spec in (
        ServiceSpec("auth-service", 3001, "samples.auth", "AUTH_SERVICE_URL"),
        ServiceSpec("order-service", 3002, "samples.orders", "ORDER_SERVICE_URL"),
        ServiceSpec("restaurant-service", 3003, "samples.restaurants", "RESTAURANT_SERVICE_URL"),
        ServiceSpec("delivery-service", 3004, "samples.delivery", "DELIVERY_SERVICE_URL"),
        ServiceSpec("tracking-service", 3005, "samples.tracking", "TRACKING_SERVICE_URL"),
    )
}


def create_app(name: str) -> Flask:
    """Build the Flask application of the sample service called ``name``."""
    from importlib import import_module

    try:
        spec = SERVICES[name]
    except KeyError:
        raise ValueError(f"unknown sample service {name!r}; choose one of {', '.join(SERVICES)}") from None
    return import_module(spec.module).create_app()
