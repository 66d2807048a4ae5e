"""Several workers without Redis still act as one gateway for writes and operator commands."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.support.processes import SampleServices, start_gateway

pytestmark = pytest.mark.e2e


def test_invalidation_and_forced_states_reach_every_worker(clean_samples: SampleServices, tmp_path: Path) -> None:
    env = {**clean_samples.env(), "HEALTH_CHECK_INTERVAL": "0", "ADMIN_TOKEN": "admin-token-e2e"}
    with start_gateway(env, 2, log_dir=tmp_path) as gw:
        # New connection per request: both workers answer, and both cache order 2.
        before = [requests.get(gw.url + "/orders/2", timeout=5) for _ in range(16)]
        assert {r.headers["X-Cache"] for r in before} == {"MISS", "HIT"}
        patched = requests.patch(gw.url + "/orders/2", json={"status": "delivered"}, timeout=5)
        assert patched.status_code == 200
        after = [requests.get(gw.url + "/orders/2", timeout=5) for _ in range(16)]
        assert all(r.json()["status"] == "delivered" for r in after)  # no worker kept the old copy

        auth = {"Authorization": "Bearer admin-token-e2e"}
        assert requests.post(gw.url + "/admin/circuit-breakers/order-service/open", headers=auth,
                             timeout=5).status_code == 200
        statuses = [requests.get(gw.url + f"/orders/_debug/status/204?x={i}", timeout=5).status_code
                    for i in range(16)]
        assert statuses == [503] * 16
        assert requests.post(gw.url + "/admin/circuit-breakers/order-service/reset", headers=auth,
                             timeout=5).status_code == 200
        statuses = [requests.get(gw.url + f"/orders/_debug/status/204?y={i}", timeout=5).status_code
                    for i in range(16)]
        assert statuses == [204] * 16
        purged = requests.delete(gw.url + "/admin/cache", headers=auth, timeout=5)
        assert purged.status_code == 200
        again = [requests.get(gw.url + "/orders/2", timeout=5).headers["X-Cache"] for _ in range(16)]
        assert again.count("MISS") <= 2 and "MISS" in again
