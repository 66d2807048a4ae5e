"""The cases that count upstream calls (cases 6–7): stampede, the TTL pattern, Zipf keys."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter

from bench import client, wrk
from bench.cases import TTL_PREFIX, Bench, problems_of, raw, settled_upstream_calls
from bench.report import Row, fmt_rps
from bench.servers import Server

STAMPEDE_CLIENTS = 200
TTL_S = 1.0
ZIPF_KEYS = 1000
ZIPF_EXPONENT = 1.1
ZIPF_CONNECTIONS = 16


def redis_up(gateway: Server, limit_s: float = 3.0) -> None:
    """Wait until the gateway's link to Redis is up (not skipping Redis after an earlier case's overload).

    The stampede measures coalescing; a request that meets the link's one-second skip after a failure
    goes upstream on purpose (the cache fails open), which is another case's subject.
    """
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            if json.loads(client.call(gateway.port, "GET", "/health").body).get("redis") in ("up", "disabled"):
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.1)


def stampede(bench: Bench, gateway: Server, mode: str) -> list[Row]:
    """Case 6: 200 concurrent GETs of one cold key, once per round; count the upstream calls."""
    calls: list[int] = []
    problems: list[str] = []
    statuses: Counter[str] = Counter()
    for index in range(bench.rounds):
        redis_up(gateway)
        key = f"stampede-{uuid.uuid4().hex[:12]}"
        before = settled_upstream_calls(bench.upstream.port)  # earlier cases' calls still in flight land first
        answers = client.concurrent_gets(gateway.port, f"/orders/{key}", STAMPEDE_CLIENTS)
        calls.append(client.upstream_calls(bench.upstream.port) - before)
        kinds = Counter(type(a).__name__ if isinstance(a, Exception) else f"{a.status} {a.headers.get('x-cache')}"
                        for a in answers)
        statuses.update(kinds)
        bench.say(f"  case 6 round {index + 1}/{bench.rounds}: {calls[-1]} upstream calls; answers {dict(kinds)}")
    bad = {kind: n for kind, n in statuses.items() if not kind.startswith("200 ")}
    if bad:
        problems.append(f"{sum(bad.values())} of {sum(statuses.values())} GETs failed: {bad}")
    # Without Redis each worker coalesces on its own: one call per worker is the best it can do.
    expected = 1 if mode == "redis" else bench.workers
    target = "1" if mode == "redis" else f"≤ {bench.workers} (1 per worker)"
    return [Row("6", f"stampede: {STAMPEDE_CLIENTS} concurrent GETs of a cold key", mode, "upstream calls",
                " / ".join(map(str, calls)), "", f"{bench.rounds} round(s)", "", target,
                max(calls) <= expected and min(calls) >= 1, problems, {"calls": calls, "answers": dict(statuses)})]


def ttl_pattern(bench: Bench, gateway: Server, mode: str) -> list[Row]:
    """Case 7a: 10 GETs, wait past the 1 s TTL, 10 GETs (each on a new connection); count hits and calls."""
    path = f"{TTL_PREFIX}/123"
    client.call(gateway.port, "DELETE", "/admin/cache?path=" + path,
                {"Authorization": f"Bearer {bench.admin_token}"})
    before = client.upstream_calls(bench.upstream.port)
    answers = [client.call(gateway.port, "GET", path) for _ in range(10)]
    time.sleep(TTL_S + 0.6)  # past the TTL even when Age is counted in whole seconds
    answers += [client.call(gateway.port, "GET", path) for _ in range(10)]
    calls = client.upstream_calls(bench.upstream.port) - before
    results = Counter(a.headers.get("x-cache", "none") for a in answers)
    hits = results["HIT"]
    problems = [f"GET {path} answered {a.status}" for a in answers if a.status != 200][:3]
    # Each worker of the embedded cache keeps its own copy: one call per worker per TTL, at most.
    most = 2 if mode != "embedded" else 2 * bench.workers
    target = "18 / 2" if most == 2 else f"≥ {20 - most} / ≤ {most} (2 per worker)"
    return [Row("7", "TTL pattern: 20 GETs of one path across one TTL expiry", mode, "hits / upstream calls",
                f"{hits} / {calls}", "", f"X-Cache {dict(results)}", "", target,
                hits >= 20 - most and calls <= most and hits + calls >= 20, problems,
                {"x_cache": dict(results), "upstream_calls": calls})]


def zipf_keys(bench: Bench, gateway: Server, mode: str) -> list[Row]:
    """Case 7b: Zipf-distributed keys at 16 connections; hit rate and upstream calls saved."""
    prefix = f"/orders/zipf-{uuid.uuid4().hex[:8]}-"
    script = wrk.zipf_script(bench.work_dir, prefix, ZIPF_KEYS, ZIPF_EXPONENT)
    before = client.upstream_calls(bench.upstream.port)
    result = wrk.run(gateway.url + "/", script, connections=ZIPF_CONNECTIONS, seconds=bench.seconds)
    calls = client.upstream_calls(bench.upstream.port) - before
    bench.gateway_requests += result.requests
    saved = 1 - calls / result.requests if result.requests else 0.0
    bench.say(f"  case 7 zipf: {result.requests} requests, {calls} upstream calls, {fmt_rps(result.rps)} req/s")
    return [Row("7", f"Zipf keys ({ZIPF_KEYS} keys, s={ZIPF_EXPONENT}), {ZIPF_CONNECTIONS} conns", mode,
                "upstream calls saved", f"{saved:.1%}", "", f"{calls:,} calls for {result.requests:,} requests "
                f"({fmt_rps(result.rps)} req/s)", "", "reported", None, problems_of("gateway", [result]),
                {"runs": raw({"gateway": [result]}), "upstream_calls": calls})]
