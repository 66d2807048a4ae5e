"""The wrk-driven cases (cases 1–5), each run alternately against its baseline."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import client, peer, wrk
from bench.report import Row, fmt_delta_ms, fmt_ms, fmt_rps, median
from bench.servers import Server

HIT_PATH = "/orders/123"  # strip_prefix: the upstream sees /123
NOCACHE_PREFIX = "/nocache"  # the bench-nocache service: same upstream, caching off
TTL_PREFIX = "/ttl"  # the bench-ttl service: same upstream, 1 s TTL
LIMITED_PREFIX = "/limited"  # the bench-limited service: same upstream, rate limiting on (never reached)
LIMITS = ("1000000/s", "100000000/h")
LIMITER_COST_TARGET = 0.90  # rate limiting on may cost at most 10 % of the hit throughput
MISS_PREFIX = "/orders/miss-"  # + a new suffix per request (wrk.unique_script)
PEER_TARGET = 1.0  # the gateway against the seed's Node design, where both do the same work
SLOW_QUERY = "delay_ms=200"
SLOW_TARGET_RPS = 0.9 * 128 / 0.2
# wrk2 is not packaged: each of the 8 connections waits this long after an answer before its next
# request (wrk's delay()), which holds the rate near 8 × 1000 / 8 = 1,000 req/s while latency stays low.
PACED_DELAY_MS = 8
PACED_RPS = 8 * 1000 / PACED_DELAY_MS


@dataclass
class Bench:
    """What every case needs: the shared servers, the run's settings and where to say what happens."""

    rounds: int
    seconds: int
    work_dir: Path
    upstream: Server
    bare: Server
    admin_token: str
    workers: int
    say: Callable[[str], None]
    gateway_requests: int = 0  # what wrk sent the current gateway, to check its request log against
    peer: Server | None = None  # the seed's design in Node, when node is installed

    def with_peer(self, targets: dict[str, str], path: str) -> dict[str, str]:
        """``targets`` plus the seed's Node design at ``path``, when it runs."""
        return {**targets, "seed": self.peer.url + path} if self.peer is not None else targets

    @property
    def script(self) -> Path:
        """Return the plain wrk script (only the JSON-printing done())."""
        return self._script("plain", "")

    @property
    def paced_script(self) -> Path:
        """Return the wrk script that paces each connection (fixed-rate latency)."""
        return self._script("paced", f"delay = function() return {PACED_DELAY_MS} end\n")

    def _script(self, name: str, body: str) -> Path:
        path = self.work_dir / f"{name}.lua"
        return path if path.exists() else wrk.write_script(self.work_dir, name, body)

    def alternate(self, case: str, targets: dict[str, str], connections: int, threads: int | None = None,
                  script: Path | None = None) -> dict[str, list[wrk.WrkResult]]:
        """Run wrk on each URL in turn, ``rounds`` times, swapping the order every round to cancel drift."""
        results: dict[str, list[wrk.WrkResult]] = {label: [] for label in targets}
        labels = list(targets)
        for index in range(self.rounds):
            for label in labels if index % 2 == 0 else labels[::-1]:
                result = wrk.run(targets[label], script or self.script, connections=connections,
                                 seconds=self.seconds, threads=threads)
                results[label].append(result)
                if label == "gateway":
                    self.gateway_requests += result.requests
                self.say(f"  case {case} round {index + 1}/{self.rounds} {label:>8}: {fmt_rps(result.rps):>7} req/s"
                         f"  p50 {fmt_ms(result.p50_ms)} ms  p99 {fmt_ms(result.p99_ms)} ms"
                         f"  errors {result.errors}")
        return results


def problems_of(label: str, results: list[wrk.WrkResult], expect_status: bool = False) -> list[str]:
    """Name the socket errors and unexpected answers in a set of runs (``expect_status``: all must be >= 400)."""
    problems = []
    sockets = sum(r.socket_errors for r in results)
    if sockets:
        problems.append(f"{label}: {sockets} socket errors/timeouts {[r.errors for r in results]}")
    statuses = sum(r.errors["status"] for r in results)
    requests = sum(r.requests for r in results)
    if expect_status and statuses != requests:
        problems.append(f"{label}: {requests - statuses} of {requests} answers were not errors (expected all 503)")
    if not expect_status and statuses:
        problems.append(f"{label}: {statuses} of {requests} answers had a status >= 400")
    return problems


def raw(results: dict[str, list[wrk.WrkResult]]) -> dict[str, list[dict[str, object]]]:
    """Return every run's numbers as plain data for the JSON report."""
    return {label: [r.as_dict() for r in runs] for label, runs in results.items()}


def check_answer(answer: client.Answer, status: int, what: str) -> list[str]:
    """Return a problem if a sanity request did not get the expected status."""
    if answer.status == status:
        return []
    return [f"{what} answered {answer.status} (expected {status}): {answer.body[:200]!r}"]


def versus_peer(gateway: float, results: dict[str, list[wrk.WrkResult]], higher_is_better: bool = True,
                measure: str = "rps") -> tuple[str, bool | None]:
    """The "vs seed (Node)" cell and whether the gateway reached ``PEER_TARGET`` (None: the peer did not run)."""
    if "seed" not in results:
        return "", None
    seed = median([getattr(r, measure) for r in results["seed"]])
    if measure == "rps":
        ratio = gateway / seed if seed else 0.0
        return f"{ratio:.2f}× (seed {fmt_rps(seed)} req/s)", ratio >= PEER_TARGET
    return f"seed {fmt_ms(seed)} ms", gateway <= seed if not higher_is_better else gateway >= seed


def cache_hit_throughput(bench: Bench, gateway: Server, mode: str) -> list[Row]:
    """Case 1: cache hits at 64 connections against the bare app (and the seed's Node design)."""
    warm = client.call(gateway.port, "GET", HIT_PATH)
    targets = bench.with_peer({"bare": bench.bare.url + HIT_PATH, "gateway": gateway.url + HIT_PATH}, peer.HIT_PATH)
    if bench.peer is not None:
        client.call(bench.peer.port, "GET", peer.HIT_PATH)  # its first request fills its cache
    results = bench.alternate("1", targets, 64)
    g, b = median([r.rps for r in results["gateway"]]), median([r.rps for r in results["bare"]])
    ratio = g / b if b else 0.0
    cell, beat = versus_peer(g, results)
    problems = check_answer(warm, 200, f"GET {HIT_PATH}")
    for label in results:
        problems += problems_of(label, results[label])
    # Against the seed's design when it runs (the bare app on the gateway's own server is a ceiling, not a
    # target); without node, the bare app as before.
    return [Row("1", "cache hit, 64 conns", mode, "req/s", fmt_rps(g), f"bare {fmt_rps(b)}", f"{ratio:.2f}× bare",
                cell, "≥ 1.0× seed" if beat is not None else "≥ 0.65× bare",
                beat if beat is not None else ratio >= 0.65, problems,
                {"runs": raw(results), "x_cache": warm.headers.get("x-cache")})]


def rate_limited_hits(bench: Bench, gateway: Server, mode: str) -> list[Row]:
    """Case 9: cache hits with rate limiting on (two limits, never reached) against hits without it."""
    limited = f"{LIMITED_PREFIX}/123"
    warm = client.call(gateway.port, "GET", limited)
    results = bench.alternate("9", {"unlimited": gateway.url + HIT_PATH, "gateway": gateway.url + limited}, 64)
    g, u = median([r.rps for r in results["gateway"]]), median([r.rps for r in results["unlimited"]])
    ratio = g / u if u else 0.0
    problems = check_answer(warm, 200, f"GET {limited}")
    if warm.status == 200 and "ratelimit" not in warm.headers:
        problems.append(f"GET {limited} carried no RateLimit header: is rate limiting on?")
    problems += [p for label in results for p in problems_of(label, results[label])]
    bench.gateway_requests += sum(r.requests for r in results["unlimited"])
    return [Row("9", f"cache hit with rate limiting ({', '.join(LIMITS)}), 64 conns", mode, "req/s", fmt_rps(g),
                f"no limit {fmt_rps(u)}", f"{ratio:.2f}× without", "", f"≥ {LIMITER_COST_TARGET:.2f}× without",
                ratio >= LIMITER_COST_TARGET, problems,
                {"runs": raw(results), "ratelimit": warm.headers.get("ratelimit")})]


def cache_miss_throughput(bench: Bench, gateway: Server, mode: str) -> list[Row]:
    """Case 3b: a new key on every request at 64 connections (lookup, upstream call, store), against the seed."""
    script = wrk.unique_script(bench.work_dir, MISS_PREFIX)
    targets = bench.with_peer({"gateway": gateway.url + "/"}, "/")
    results = bench.alternate("3b", targets, 64, script=script)
    g = median([r.rps for r in results["gateway"]])
    cell, beat = versus_peer(g, results)
    problems = [p for label in results for p in problems_of(label, results[label])]
    return [Row("3", "cache miss (new key per request), 64 conns", mode, "req/s", fmt_rps(g), "", "",
                cell, "≥ 1.0× seed" if beat is not None else "reported", beat, problems, {"runs": raw(results)})]


def cache_hit_latency(bench: Bench, gateway: Server, mode: str) -> list[Row]:
    """Case 2: cache-hit p50 at one connection; p99 at eight, at a fixed rate and flat out."""
    client.call(gateway.port, "GET", HIT_PATH)
    targets = {"bare": bench.bare.url + HIT_PATH, "gateway": gateway.url + HIT_PATH}
    one = bench.alternate("2/1c", bench.with_peer(targets, peer.HIT_PATH), 1, threads=1)
    paced = bench.alternate("2/8c-rate", targets, 8, threads=2, script=bench.paced_script)
    flat = bench.alternate("2/8c-max", targets, 8, threads=2)
    p50, bare50 = median([r.p50_ms for r in one["gateway"]]), median([r.p50_ms for r in one["bare"]])
    p99, bare99 = median([r.p99_ms for r in paced["gateway"]]), median([r.p99_ms for r in paced["bare"]])
    max99, bare_max99 = median([r.p99_ms for r in flat["gateway"]]), median([r.p99_ms for r in flat["bare"]])
    rate = median([r.rps for r in paced["gateway"]])
    problems = [p for label in targets for p in problems_of(label, one[label] + paced[label] + flat[label])]
    problems += problems_of("seed", one.get("seed", []))
    cell, beat = versus_peer(p50, one, higher_is_better=False, measure="p50_ms")
    return [
        Row("2", "cache hit, 1 conn", mode, "p50 ms", fmt_ms(p50), f"bare {fmt_ms(bare50)}",
            fmt_delta_ms(p50 - bare50), cell, "≤ 1 ms" + (", ≤ seed" if beat is not None else ""),
            p50 <= 1.0 and beat is not False, problems, {"runs": raw(one)}),
        Row("2", f"cache hit, 8 conns paced to {fmt_rps(PACED_RPS)} req/s", mode, "p99 ms", fmt_ms(p99),
            f"bare {fmt_ms(bare99)}", f"{fmt_delta_ms(p99 - bare99)} (at {fmt_rps(rate)} req/s)", "", "≤ 5 ms",
            p99 <= 5.0, [], {"runs": raw(paced)}),
        Row("2", "cache hit, 8 conns flat out (closed loop)", mode, "p99 ms", fmt_ms(max99),
            f"bare {fmt_ms(bare_max99)}", fmt_delta_ms(max99 - bare_max99), "", "—", None, [], {"runs": raw(flat)}),
    ]


def cache_miss_latency(bench: Bench, gateway: Server, mode: str) -> list[Row]:
    """Case 3: an uncached route at one connection, p50 over calling the upstream directly."""
    probe = client.call(gateway.port, "GET", f"{NOCACHE_PREFIX}/123")
    problems = check_answer(probe, 200, f"GET {NOCACHE_PREFIX}/123")
    if probe.status == 200 and probe.headers.get("x-cache") != "BYPASS":
        problems.append(f"the uncached route answered X-Cache: {probe.headers.get('x-cache')} (expected BYPASS)")
    results = bench.alternate("3", {"direct": bench.upstream.url + "/123",
                                    "gateway": gateway.url + f"{NOCACHE_PREFIX}/123"}, 1, threads=1)
    g, d = median([r.p50_ms for r in results["gateway"]]), median([r.p50_ms for r in results["direct"]])
    problems += problems_of("gateway", results["gateway"]) + problems_of("direct", results["direct"])
    return [Row("3", "cache miss (route uncached), 1 conn", mode, "p50 ms", fmt_ms(g), f"direct {fmt_ms(d)}",
                fmt_delta_ms(g - d), "", "≤ +1.5 ms", g - d <= 1.5, problems, {"runs": raw(results)})]


def settled_upstream_calls(port: int, quiet_s: float = 0.3, limit_s: float = 5.0) -> int:
    """The upstream's call count once it has not moved for ``quiet_s``."""
    deadline = time.monotonic() + limit_s
    count = client.upstream_calls(port)
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = client.upstream_calls(port)
        if now == count:
            break
        count = now
    return count


def circuit_open(bench: Bench, gateway: Server, mode: str) -> list[Row]:
    """Case 4: the order-service circuit forced open; 503 throughput at 64 connections, no upstream call."""
    path = f"/orders/circuit-{mode}"  # never cached: a 503 is not stored, so every request meets the breaker
    forced = client.admin(gateway.port, bench.admin_token, "/admin/circuit-breakers/order-service/open")
    problems = check_answer(forced, 200, "POST /admin/circuit-breakers/order-service/open")
    try:
        probes = [client.call(gateway.port, "GET", path) for _ in range(4)]
        for probe in probes:
            problems += check_answer(probe, 503, f"GET {path} with the circuit forced open")
        before = settled_upstream_calls(bench.upstream.port)  # calls of earlier cases still in flight land first
        seed_path = f"{peer.OPEN_PREFIX}circuit-{mode}"
        if bench.peer is not None:
            for _ in range(4):  # its delivery service is a closed port: a few failures open its circuit
                client.call(bench.peer.port, "GET", seed_path)
        targets = bench.with_peer({"bare": bench.bare.url + HIT_PATH, "gateway": gateway.url + path}, seed_path)
        results = bench.alternate("4", targets, 64)
        calls = client.upstream_calls(bench.upstream.port) - before
    finally:
        client.admin(gateway.port, bench.admin_token, "/admin/circuit-breakers/order-service/reset")
    # Every worker must have let go of the forced state, or later runs would meet a stale open circuit.
    after = [client.call(gateway.port, "GET", f"/orders/circuit-reset-{mode}").status for _ in range(6)]
    if any(status != 200 for status in after):
        problems.append(f"after POST .../reset, GETs answered {after} (a worker kept the circuit open)")
    g, b = median([r.rps for r in results["gateway"]]), median([r.rps for r in results["bare"]])
    ratio = g / b if b else 0.0
    problems += problems_of("gateway", results["gateway"], expect_status=True) + problems_of("bare", results["bare"])
    problems += problems_of("seed", results.get("seed", []), expect_status=True)
    cell, beat = versus_peer(g, results)
    return [Row("4", "circuit open (503), 64 conns", mode, "req/s", fmt_rps(g), f"bare {fmt_rps(b)}",
                f"{ratio:.2f}× bare; {calls} upstream calls", cell,
                ("≥ 1.0× seed" if beat is not None else "≥ 0.65× bare") + ", 0 upstream calls",
                (beat if beat is not None else ratio >= 0.65) and calls == 0, sorted(set(problems)),
                {"runs": raw(results), "upstream_calls": calls})]


SOAK_SECONDS = 60
SOAK_RSS_MIB = 5.0


def worker_pids(server: Server) -> list[int]:
    """The gunicorn master's children (its workers)."""
    assert server.proc is not None
    try:
        with open(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children") as handle:
            return [int(pid) for pid in handle.read().split()]
    except OSError:
        return []


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` in MiB (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def hit_soak(bench: Bench, gateway: Server, mode: str) -> list[Row]:
    """Case 8: cache hits for 60 s at 64 connections; each worker's RSS before and after."""
    client.call(gateway.port, "GET", HIT_PATH)
    warm = wrk.run(gateway.url + HIT_PATH, bench.script, connections=64, seconds=5)  # past start-up growth
    pids = worker_pids(gateway)
    before = {pid: rss_mib(pid) for pid in pids}
    result = wrk.run(gateway.url + HIT_PATH, bench.script, connections=64, seconds=SOAK_SECONDS)
    after = {pid: rss_mib(pid) for pid in pids}
    bench.gateway_requests += warm.requests + result.requests
    growth = max((after[pid] - before[pid] for pid in pids), default=0.0)
    problems = problems_of("gateway", [result])
    if worker_pids(gateway) != pids:
        problems.append(f"workers changed during the soak: {pids} -> {worker_pids(gateway)}")
    bench.say(f"  case 8: {fmt_rps(result.rps)} req/s; RSS MiB before {before}, after {after}")
    return [Row("8", f"cache-hit soak, {SOAK_SECONDS} s, 64 conns", mode, "worker RSS growth",
                f"+{growth:.1f} MiB", "", f"{result.requests:,} hits at {fmt_rps(result.rps)} req/s", "",
                f"≤ +{SOAK_RSS_MIB:g} MiB per worker", growth <= SOAK_RSS_MIB, problems,
                {"rss_before_mib": before, "rss_after_mib": after, "runs": raw({"gateway": [result]})})]


def slow_upstream(bench: Bench, gateway: Server, mode: str) -> list[Row]:
    """Case 5: every call takes 200 ms upstream, 128 connections, route uncached."""
    results = bench.alternate("5", {"direct": f"{bench.upstream.url}/slow?{SLOW_QUERY}",
                                    "gateway": f"{gateway.url}{NOCACHE_PREFIX}/slow?{SLOW_QUERY}"}, 128)
    g, d = median([r.rps for r in results["gateway"]]), median([r.rps for r in results["direct"]])
    problems = problems_of("gateway", results["gateway"]) + problems_of("direct", results["direct"])
    return [Row("5", "slow upstream (200 ms), 128 conns, uncached", mode, "req/s", fmt_rps(g), f"direct {fmt_rps(d)}",
                f"{g / 640:.2f}× 640", "", f"≥ {fmt_rps(SLOW_TARGET_RPS)} req/s", g >= SLOW_TARGET_RPS, problems,
                {"runs": raw(results), "p99_ms": median([r.p99_ms for r in results["gateway"]])})]
