"""One benchmark run: start the shared servers, then a gateway per cache mode, run the chosen cases, report."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import cases, cases_cache, peer, wrk
from bench.cluster import running_cluster
from bench.report import Row, markdown, write_json
from bench.servers import Server, StartError, bare_server, gateway_server, redis_server, running, upstream_server

Case = Callable[[cases.Bench, Server, str], list[Row]]
# Case number -> what runs for it, and whether it runs with both caches (else with the embedded one only).
CASES: dict[str, tuple[list[Case], bool]] = {
    "1": ([cases.cache_hit_throughput], True),
    "2": ([cases.cache_hit_latency], True),
    "3": ([cases.cache_miss_latency, cases.cache_miss_throughput], True),
    "4": ([cases.circuit_open], True),
    "5": ([cases.slow_upstream], False),
    "6": ([cases_cache.stampede], True),
    "7": ([cases_cache.ttl_pattern, cases_cache.zipf_keys], True),
    "8": ([cases.hit_soak], True),
    "9": ([cases.rate_limited_hits], True),
}
# The open-circuit case runs last: a forced state that some worker fails to drop must not spoil the others.
RUN_ORDER = ("1", "9", "2", "8", "3", "5", "6", "7", "4")
# On a Redis Cluster, beside one Redis: cache hits, misses and an open circuit.
CLUSTER_CASES = ("1", "2", "3", "4")
MODES = ("embedded", "redis", "cluster")
WORKERS = 2
ADMIN_TOKEN = "bench-admin-token"
REQUEST_LOG = "INFO JSON lines to a file"


@dataclass
class Options:
    """What the command line asked for."""

    rounds: int = 3
    seconds: int = 3
    only: Sequence[str] = tuple(CASES)
    modes: Sequence[str] = MODES
    keep_logs: bool = False
    strict: bool = False
    results_dir: Path | None = None
    worker_class: str | None = None


def say(message: str) -> None:
    """Print progress on stderr, so stdout carries only the table."""
    print(message, file=sys.stderr, flush=True)


def gateway_config(work_dir: Path, upstream_url: str) -> Path:
    """Write the GATEWAY_CONFIG that adds an uncached route, a 1 s TTL route and a rate-limited route."""
    path = work_dir / "gateway-config.json"
    services = {
        "bench-nocache": {"prefix": cases.NOCACHE_PREFIX, "url": upstream_url, "cache": False},
        "bench-ttl": {"prefix": cases.TTL_PREFIX, "url": upstream_url, "cache_ttl": cases_cache.TTL_S},
        # Limits wrk never reaches: what the limiter costs a cache hit, not what it refuses.
        "bench-limited": {"prefix": cases.LIMITED_PREFIX, "url": upstream_url,
                          "rate_limit": {"key": "ip", "limits": list(cases.LIMITS)}},
    }
    path.write_text(json.dumps({"services": services}))
    return path


def log_problems(gateway: Server, workers: int, requests: int) -> tuple[list[str], dict[str, Any]]:
    """Read a stopped gateway's logs: crashes, restarts, ERROR lines and missing request lines are problems."""
    problems = []
    stderr = gateway.stderr_text()
    for needle in ("Traceback", "WORKER TIMEOUT", "was sent SIGKILL", "Worker failed to boot"):
        if needle in stderr:
            problems.append(f"gateway stderr shows {stderr.count(needle)} × {needle!r}")
    boots = stderr.count("Booting worker")
    if boots > workers:
        problems.append(f"{boots - workers} worker restart(s) (gunicorn booted {boots} workers for {workers})")
    lines = errors = 0
    samples: list[str] = []
    size = gateway.stdout_path.stat().st_size if gateway.stdout_path.exists() else 0
    if size:
        with gateway.stdout_path.open("rb") as handle:
            for line in handle:
                lines += 1
                if b'"ERROR"' in line or b'"CRITICAL"' in line or b"Traceback" in line:
                    errors += 1
                    if len(samples) < 3:
                        samples.append(line.decode(errors="replace").strip()[:400])
    if errors:
        problems.append(f"{errors} ERROR lines in the request log, e.g. {samples}")
    if lines < requests:
        # Unlogged requests also mean the logging cost is missing from the numbers.
        problems.append(f"the request log has {lines:,} lines for at least {requests:,} requests served")
    return problems, {"log_lines": lines, "log_bytes": size, "worker_class": gateway.worker_class()}


def run_mode(bench: cases.Bench, mode: str, env: dict[str, str], selected: Sequence[str],
             context: dict[str, Any]) -> list[Row]:
    """Start one gateway, run the selected cases against it, stop it and read its logs."""
    rows: list[Row] = []
    bench.gateway_requests = 0
    gateway = gateway_server(f"gateway-{mode}", bench.work_dir, bench.upstream.url, bench.workers, env)
    say(f"gateway ({mode} cache): starting on {gateway.url}")
    try:
        with running(gateway, "/health", timeout=30):
            health = cases.client.call(gateway.port, "GET", "/health")
            if health.status != 200:
                rows.append(Row("–", "gateway start-up", mode, "GET /health", str(health.status),
                                problems=[f"GET /health answered {health.status}: {health.body[:200]!r}"]))
            warm = wrk.run(gateway.url + cases.HIT_PATH, bench.script, connections=64, seconds=1)
            bench.gateway_requests += warm.requests
            for number in selected:
                functions, both = CASES[number]
                if not both and mode != bench_first_mode(context):
                    continue
                if mode == "cluster" and number not in CLUSTER_CASES:
                    continue
                for function in functions:
                    say(f"case {number} ({mode}): {function.__doc__.splitlines()[0] if function.__doc__ else ''}")
                    try:
                        rows += function(bench, gateway, mode)
                    except Exception as exc:  # one broken case must not hide the others' numbers
                        say(traceback.format_exc())
                        rows.append(Row(number, function.__name__, mode, "", "failed",
                                        problems=[f"{type(exc).__name__}: {str(exc)[:600]}"]))
            context.setdefault("gateway_stats", {})[mode] = stats_snapshot(gateway, bench.admin_token)
    except StartError as exc:
        rows.append(Row("–", "gateway start-up", mode, "", "did not start", problems=[str(exc)[-3000:]]))
    problems, facts = log_problems(gateway, bench.workers, bench.gateway_requests)
    context.setdefault("gateways", {})[mode] = facts
    context["worker_class"] = context.get("worker_class") or facts["worker_class"]
    if problems:
        rows.append(Row("–", "gateway logs", mode, "", f"{facts['log_lines']:,} log lines", problems=problems))
    say(f"gateway ({mode} cache): stopped; {facts['log_lines']:,} log lines, {facts['log_bytes'] / 1e6:.1f} MB")
    return rows


def stats_snapshot(gateway: Server, token: str) -> dict[str, Any]:
    """Return what the gateway's own /stats endpoints say at the end, to set beside the harness's counts."""
    snapshot: dict[str, Any] = {}
    for path in ("/stats/cache", "/stats/circuit-breakers"):
        try:
            answer = cases.client.call(gateway.port, "GET", path, {"Authorization": f"Bearer {token}"})
            snapshot[path] = json.loads(answer.body) if answer.status == 200 else f"status {answer.status}"
        except (OSError, ValueError) as exc:
            snapshot[path] = f"{type(exc).__name__}: {exc}"
    return snapshot


def bench_first_mode(context: dict[str, Any]) -> str:
    """Return the cache mode the once-only cases run with."""
    return str(context["modes"][0])


def run(options: Options) -> int:
    """Run the benchmark; print the table; return the exit status (non-zero on errors)."""
    if not wrk.available():
        say("wrk is not installed: apt-get install -y wrk")
        return 2
    selected = [n for n in RUN_ORDER if n in options.only]
    work_dir = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    context: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(), "workers": WORKERS,
        "rounds": options.rounds, "seconds": options.seconds, "cases": selected, "modes": list(options.modes),
        "wrk_threads": "-t2 (-t1 at 1 conn)", "request_log": REQUEST_LOG,
    }
    rows: list[Row] = []
    started = time.monotonic()
    try:
        with ExitStack() as stack:
            upstream = stack.enter_context(running(upstream_server(work_dir), "/__count"))
            server_env = {"GUNICORN_WORKER_CLASS": options.worker_class} if options.worker_class else {}
            bare = stack.enter_context(running(bare_server(work_dir, upstream.url, WORKERS, server_env), "/"))
            folder, skipped = peer.prepare(peer.source_dir())
            if skipped:
                context["peer_skipped"] = skipped
                say(f"seed peer (Node): skipped: {skipped}")
            needs_redis = "redis" in options.modes or folder is not None
            redis = stack.enter_context(running(redis_server(work_dir), None)) if needs_redis else None
            cluster_nodes = stack.enter_context(running_cluster(work_dir)) if "cluster" in options.modes else None
            bench = cases.Bench(options.rounds, options.seconds, work_dir, upstream, bare, ADMIN_TOKEN, WORKERS, say)
            if folder is not None and redis is not None:
                seed = peer.peer_server(folder, work_dir, upstream.url, f"redis://127.0.0.1:{redis.port}", WORKERS)
                bench.peer = stack.enter_context(running(seed, "/health"))
                say(f"seed peer (Node): {seed.url}")
            wrk.run(bare.url + cases.HIT_PATH, bench.script, connections=64, seconds=1)  # warm-up
            config = gateway_config(work_dir, upstream.url)
            for mode in options.modes:
                env = {**server_env, "GATEWAY_CONFIG": str(config), "ADMIN_TOKEN": ADMIN_TOKEN, "LOG_LEVEL": "INFO"}
                if mode == "redis" and redis is not None:
                    env["REDIS_URL"] = f"redis://127.0.0.1:{redis.port}/0"
                if mode == "cluster" and cluster_nodes is not None:
                    env["REDIS_CLUSTER_NODES"] = cluster_nodes
                rows += run_mode(bench, mode, env, selected, context)
            context["bare_worker_class"] = bare.worker_class()
    except StartError as exc:
        rows.append(Row("–", "start-up", "", "", "did not start", problems=[str(exc)[-3000:]]))
    finally:
        context["elapsed_s"] = round(time.monotonic() - started, 1)
        if options.keep_logs:
            say(f"logs kept in {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    table = markdown(rows, context)
    print(table)
    path = write_json(rows, context, *([options.results_dir] if options.results_dir else []))
    say(f"results: {path} ({context['elapsed_s']} s)")
    if any(row.problems for row in rows):
        say("FAILED: some cases saw errors or unexpected answers (see Problems above)")
        return 1
    if options.strict and any(row.met is False for row in rows):
        say("FAILED (--strict): some targets were not met")
        return 3
    return 0
