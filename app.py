"""The gateway's application factory; ``python app.py`` runs a development server."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask

from blueprints.admin import admin
from blueprints.envelope import EXTENSION, Envelope, install
from blueprints.ops import ops
from blueprints.proxy import RestConverter, make_service_blueprint
from blueprints.proxy_wsgi import ProxyWSGI
from gateway.build import build_gateway
from gateway.config.settings import load_settings


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the gateway: settings from the environment (then ``test_config``), the engine, its two entrances."""
    gateway = build_gateway(load_settings(overrides=test_config))
    app = Flask(__name__, static_folder=None)
    app.extensions[EXTENSION] = gateway  # read through blueprints.envelope.gateway_of
    app.url_map.converters["rest"] = RestConverter
    app.url_map.merge_slashes = False
    app.json.sort_keys = False  # type: ignore[attr-defined]
    # The first request starts the engine's background work in the serving worker; an app that
    # tests mark ``testing`` polls no service's health.
    envelope = Envelope(gateway, start=lambda: gateway.start(health_checks=not app.testing))
    install(app, envelope)
    app.register_blueprint(ops)
    app.register_blueprint(admin)
    for service in gateway.settings.services.values():
        app.register_blueprint(make_service_blueprint(service, envelope))
    # Requests under a service prefix skip Flask's dispatch; everything else (ops, admin) is Flask's.
    app.wsgi_app = ProxyWSGI(envelope, app.wsgi_app)  # type: ignore[method-assign]
    return app


if __name__ == "__main__":
    create_app().run(host="127.0.0.1", port=int(os.environ.get("PORT", "3000")), threaded=True)
