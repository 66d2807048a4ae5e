"""auth-service: customers, couriers and restaurant staff log in and get a bearer token."""

from __future__ import annotations

import hmac
import secrets
import time

from flask import Blueprint, Flask, Response, jsonify, request

from samples.common import create_service_app, json_error, service_state

NAME = "auth-service"
TOKEN_LIFETIME_S = 3600

# Seeded accounts; passwords are demo values, so they are kept in plain text.
USERS = {
    "alice@example.com": {"id": 1, "name": "Alice Martin", "role": "customer", "password": "alice-pass"},
    "bob@example.com": {"id": 2, "name": "Bob Okafor", "role": "customer", "password": "bob-pass"},
    "carla@example.com": {"id": 11, "name": "Carla Reyes", "role": "courier", "password": "carla-pass"},
    "dmitri@example.com": {"id": 21, "name": "Dmitri Petrov", "role": "restaurant", "password": "dmitri-pass"},
}

routes = Blueprint("auth", __name__)


def sessions() -> dict[str, tuple[str, float]]:
    """Return this app's live sessions: token -> (email, expiry time)."""
    return service_state().data  # type: ignore[no-any-return]


def public_user(email: str) -> dict[str, object]:
    """Return an account without its password."""
    user = USERS[email]
    return {"id": user["id"], "email": email, "name": user["name"], "role": user["role"]}


def bearer_user() -> str | None:
    """Return the email of the valid bearer token on the request, if any."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    session = sessions().get(token.strip())
    if session is None or session[1] < time.time():
        return None
    return session[0]


def unauthorized(message: str) -> tuple[Response, int]:
    """Answer 401 with the Bearer challenge."""
    response, status = json_error(401, "unauthorized", message)
    response.headers["WWW-Authenticate"] = 'Bearer realm="food-delivery"'
    return response, status


@routes.get("/")
def index() -> Response:
    """Describe the service's endpoints."""
    return jsonify(service=NAME, endpoints=["POST /login", "GET /me", "POST /logout"])


@routes.post("/login")
def login() -> tuple[Response, int] | Response:
    """Exchange an email (or username) and password for a bearer token."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return json_error(400, "bad_request", "send JSON with email and password")
    email = str(body.get("email") or body.get("username") or "").lower()
    password = str(body.get("password") or "")
    user = USERS.get(email)
    if user is None or not hmac.compare_digest(password.encode(), str(user["password"]).encode()):
        return unauthorized("wrong email or password")
    token = secrets.token_urlsafe(24)
    sessions()[token] = (email, time.time() + TOKEN_LIFETIME_S)
    response = jsonify(access_token=token, token=token, token_type="Bearer", expires_in=TOKEN_LIFETIME_S,
                       user=public_user(email))
    response.headers["Cache-Control"] = "no-store"
    return response


@routes.get("/me")
def me() -> tuple[Response, int] | Response:
    """Return the account of the bearer token."""
    email = bearer_user()
    if email is None:
        return unauthorized("a valid bearer token is required")
    response = jsonify(public_user(email))
    response.headers["Cache-Control"] = "private, no-cache"
    return response


@routes.post("/logout")
def logout() -> tuple[Response, int] | Response:
    """Revoke the bearer token."""
    if bearer_user() is None:
        return unauthorized("a valid bearer token is required")
    token = request.headers["Authorization"].partition(" ")[2].strip()
    sessions().pop(token, None)
    return jsonify(status="logged_out")


def create_app() -> Flask:
    """Build the auth-service app."""
    return create_service_app(NAME, routes, data={})
