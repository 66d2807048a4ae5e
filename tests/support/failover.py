"""What the failover suites (Sentinel, Cluster) ask of a gateway: settings, cache labels, a write every worker sees."""

from __future__ import annotations

import json
import time

from tests.support.chaos import fetch, wait_for
from tests.support.processes import GatewayProcess, SampleServices

WRITE_BOUND_S = 2.0  # the promise is a second; the margin is for a busy machine
RECOVERY_BOUND_S = 5.0  # a new entry is cached again within this after the new primary is in place


def gateway_env(samples: SampleServices, redis_env: dict[str, str], prefix: str, token: str) -> dict[str, str]:
    """A gateway on ``redis_env`` under ``prefix``: no health checks, an admin token, a long reset timeout."""
    return {**samples.env(), **redis_env, "REDIS_KEY_PREFIX": prefix, "HEALTH_CHECK_INTERVAL": "0",
            "ADMIN_TOKEN": token, "CB_RESET_TIMEOUT": "30"}


def x_cache(gw: GatewayProcess, target: str) -> str | None:
    """The X-Cache of a GET that must answer 200."""
    answer = fetch(gw.port, target)
    assert answer.status == 200, (target, answer.status, answer.body[:200])
    return answer.x_cache


def new_order(gw: GatewayProcess) -> str:
    """Create an order of its own (other suites mark the sample orders delivered); return its path."""
    order = {"customer_id": 1, "restaurant_id": 1, "delivery_address": "1 Failover Street",
             "items": [{"menu_item_id": 101, "name": "Margherita", "quantity": 1, "unit_price_cents": 1150}]}
    created = fetch(gw.port, "/orders", "POST", {"Content-Type": "application/json"}, json.dumps(order).encode())
    assert created.status == 201, created.body
    return f"/orders/{json.loads(created.body)['id']}"


def assert_write_reaches_every_worker(gw: GatewayProcess, order: str) -> None:
    """A write through one worker: within a second no worker serves the order's old copy."""
    address = f"{time.monotonic_ns()} Failover Street"
    patched = fetch(gw.port, order, "PATCH", {"Content-Type": "application/json"},
                    json.dumps({"delivery_address": address}).encode())
    assert patched.status == 200, patched.body

    def all_new() -> bool:
        return all(json.loads(fetch(gw.port, order).body)["delivery_address"] == address for _ in range(8))
    assert wait_for(all_new, WRITE_BOUND_S), "a worker still serves the order from before the write"


def assert_cache_recovers(gw: GatewayProcess, fresh: str, hits: int = 8) -> None:
    """After a failover: a new entry is a MISS, then ``hits`` HITs in a row, each within the recovery bound.

    The run of HITs is waited for too: a worker whose pooled connection to the old primary broke just
    now skips Redis for a second (BYPASS) before it is back.
    """
    assert wait_for(lambda: x_cache(gw, fresh) == "MISS", RECOVERY_BOUND_S)
    assert wait_for(lambda: [x_cache(gw, fresh) for _ in range(hits)] == ["HIT"] * hits, RECOVERY_BOUND_S)
