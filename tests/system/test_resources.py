"""Resource bounds: the embedded cache stays within its limits, every Redis key expires, memory stays flat.

The 60-second memory soak and the 1,000 slow clients are marked ``soak`` (``make soak``).
"""

from __future__ import annotations

import random
import socket
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

from gateway.cache.store import MemoryStore
from gateway.clock import FakeClock
from tests.support.cache import Gateway, Reply, memory_cache
from tests.support.chaos import Load, fetch, kinds, report, rss_kib, wait_for
from tests.support.processes import RedisServer, SampleServices, start_gateway

DISTINCT_KEYS = 100_000


def test_memory_store_stays_within_entries_and_bytes_under_100k_keys() -> None:
    clock = FakeClock(1_000.0)
    store = MemoryStore(max_entries=2_000, max_bytes=512 * 1024, clock=clock)
    rng = random.Random(7)
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        for n in range(DISTINCT_KEYS):
            blob = b"x" * rng.choice((10, 200, 1_500, 6_000))
            store.put(f"key-{n}", f"/orders/{n % 5_000}", f"v{n % 3}", blob, ttl=rng.choice((0.5, 60.0)))
            if n % 997 == 0:
                clock.advance(0.1)
                shot = store.snapshot()
                assert shot["keys"] <= 2_000 and shot["memory_used_bytes"] <= 512 * 1024, (n, shot)
        held = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    shot = store.snapshot()
    assert 0 < shot["keys"] <= 2_000 and shot["memory_used_bytes"] <= 512 * 1024
    # What the process holds for the store is its byte budget plus bookkeeping per entry, not 100k entries.
    assert held < 512 * 1024 + 2_000 * 1_024, held
    # Purging by prefix and all leaves nothing behind.
    store.purge(prefix="/orders/")
    assert store.snapshot() == {"keys": 0, "memory_used_bytes": 0}


def test_response_cache_stays_bounded_through_the_request_flow() -> None:
    clock = FakeClock(1_000.0)
    cache = memory_cache(clock, cache_max_entries=500, cache_max_bytes=256 * 1024)
    gateway = Gateway(cache, clock)
    gateway.handler = lambda call, conditional: Reply(headers=[("Cache-Control", "max-age=60")],
                                                      chunks=[b"y" * (100 + len(call.path) * 20)])
    for n in range(20_000):
        result = gateway.request(f"/orders/{n}", query=f"q={n % 7}")
        assert result.status == 200
    shot = cache.snapshot()
    assert 0 < shot["keys"] <= 500 and shot["memory_used_bytes"] <= 256 * 1024, shot
    assert gateway.request("/orders/19999", query=f"q={19_999 % 7}").cache == "HIT"  # the newest entries stay


@pytest.mark.e2e
def test_every_redis_key_carries_a_ttl(clean_samples: SampleServices, redis_server: RedisServer, tmp_path: Path,
                                       request: pytest.FixtureRequest) -> None:
    prefix = "ttl-check:"
    env = {**clean_samples.env(), "REDIS_URL": redis_server.url, "REDIS_KEY_PREFIX": prefix, "ADMIN_TOKEN": "t",
           "HEALTH_CHECK_INTERVAL": "0.2", "CB_RESET_TIMEOUT": "0.3", "CACHE_TTL": "1"}
    with start_gateway(env, 2, log_dir=tmp_path) as gw:
        admin = {"Authorization": "Bearer t"}
        clean_samples.faults("restaurant-service", latency_ms=100)
        with Load(gw.port, ["/restaurants/1", "/restaurants/2"], threads=6, max_requests=3):  # coalescing locks
            pass
        clean_samples.reset_faults("restaurant-service")
        targets = ["/orders/1", "/orders/2?x=1", "/orders/_debug/echo?vary=Accept&cc=max-age=5",
                   "/orders/_debug/echo?cc=public,max-age=5,stale-while-revalidate=30", "/restaurants/1",
                   "/orders/_debug/echo?etag=%22v1%22&cc=no-cache", "/tracking/_debug/status/200",
                   "/delivery/_debug/echo?cc=max-age=0,stale-if-error=60"]
        for target in targets * 3:
            fetch(gw.port, target, headers={"Authorization": "Bearer u1", "Accept": "text/plain"})
            fetch(gw.port, target)
        fetch(gw.port, "/orders/1", "PATCH", {"Content-Type": "application/json"}, b'{"delivery_address": "x"}')
        clean_samples.faults("delivery-service", error_rate=1.0, status=503)
        for _ in range(6):
            fetch(gw.port, "/delivery/_debug/status/200")
        clean_samples.reset_faults("delivery-service")
        fetch(gw.port, "/admin/circuit-breakers/auth-service/open", "POST", admin)
        fetch(gw.port, "/admin/circuit-breakers/auth-service/reset", "POST", admin)
        fetch(gw.port, "/admin/cache?prefix=/restaurants", "DELETE", admin)
        for path in ("/stats/cache", "/stats/circuit-breakers", "/health/services", "/metrics", "/health"):
            fetch(gw.port, path)
        time.sleep(1.2)  # stats flushes and health rounds
        client = redis_server.client()
        keys = list(client.scan_iter(count=1000))
        assert len(keys) > 10
        foreign = [k for k in keys if not k.decode().startswith(prefix)]
        assert not foreign, foreign[:5]
        forever = [k for k in keys if client.ttl(k) == -1]
        assert not forever, forever[:10]
        families = sorted({k.decode()[len(prefix):].split(":")[0] for k in keys})
        report(request, "redis-ttl", keys=len(keys), without_ttl=len(forever), families=families)


@pytest.mark.soak
@pytest.mark.e2e
def test_worker_memory_stays_flat_over_a_minute_of_load(clean_samples: SampleServices, redis_server: RedisServer,
                                                       tmp_path: Path, request: pytest.FixtureRequest) -> None:
    env = {**clean_samples.env(), "REDIS_URL": redis_server.url, "HEALTH_CHECK_INTERVAL": "1", "CACHE_TTL": "2"}
    targets = ["/restaurants/1", "/orders/1", "/orders/_debug/echo?cc=no-store", "/tracking/_debug/status/200",
               "/delivery/_debug/status/404", "/orders/_debug/big?bytes=200000", "/restaurants/_debug/echo?n="]
    with start_gateway(env, 2, log_dir=tmp_path) as gw:
        pids = gw.worker_pids()
        # Distinct query strings keep the cache and the stats busy with new keys the whole time.
        varied = [t + (str(i) if t.endswith("=") else "") for i in range(2_000) for t in targets]
        with Load(gw.port, varied, threads=6, max_requests=1_000_000) as load:
            time.sleep(15)
            warm = {pid: rss_kib(pid) for pid in pids}
            time.sleep(45)
            end = {pid: rss_kib(pid) for pid in pids}
        assert gw.worker_pids() == pids
        answers = load.answers
        assert all(a.status is not None and a.status < 500 for a in answers), kinds(answers)
        growth = {pid: (end[pid] - warm[pid]) / 1024 for pid in pids}
        for pid in pids:
            assert growth[pid] < max(16.0, warm[pid] / 1024 * 0.2), growth
        report(request, "memory-soak", requests=len(answers), answers=kinds(answers), duration_s=60,
               rss_after_warmup_mib={str(p): round(v / 1024, 1) for p, v in warm.items()},
               rss_growth_mib={str(p): round(v, 1) for p, v in growth.items()})


@pytest.mark.soak
@pytest.mark.e2e
def test_a_thousand_slow_clients_do_not_starve_the_others(clean_samples: SampleServices, tmp_path: Path,
                                                          request: pytest.FixtureRequest) -> None:
    env = {**clean_samples.env(), "HEALTH_CHECK_INTERVAL": "0"}
    with start_gateway(env, 2, log_dir=tmp_path) as gw:
        pids = gw.worker_pids()
        before = sum(rss_kib(pid) for pid in pids)
        slow: list[socket.socket] = []
        try:
            for n in range(1_000):
                sock = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
                if n % 2:  # half start a request and never finish its headers
                    sock.sendall(b"GET /restaurants/1 HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                slow.append(sock)
            stop = threading.Event()

            def dribble() -> None:
                while not stop.is_set():
                    for sock in slow[1::2]:
                        try:
                            sock.sendall(b"a")
                        except OSError:
                            pass
                    stop.wait(0.5)

            dribbler = threading.Thread(target=dribble, daemon=True)
            dribbler.start()
            time.sleep(1.0)
            served = [fetch(gw.port, path, timeout=5) for path in ("/health", "/restaurants/1", "/orders/1") * 10]
            held = sum(rss_kib(pid) for pid in pids)
            stop.set()
            dribbler.join(5)
        finally:
            for sock in slow:
                sock.close()
        assert [a.status for a in served] == [200] * len(served), kinds(served)
        slowest = max(a.ended - a.started for a in served)
        assert slowest < 1.0, slowest
        growth_mib = (held - before) / 1024
        assert growth_mib < 150, growth_mib
        assert gw.worker_pids() == pids
        assert wait_for(lambda: fetch(gw.port, "/health").status == 200, 3.0)
        report(request, "slow-clients", slow_clients=len(slow), served_meanwhile=len(served),
               slowest_answer_s=round(slowest, 3), rss_growth_mib=round(growth_mib, 1))


