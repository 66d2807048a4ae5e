"""``python -m bench.conformance``: the gateway's cache on the public HTTP caching test suite (RFC 9111).

Copies the suite (``CACHE_TESTS_DIR``, default ``../shared/conformance/cache-tests`` beside the
checkout) to a temporary folder and installs its dependencies there, then starts on free loopback
ports the suite's origin server, a throwaway redis-server and the gateway (gunicorn) with one extra
service, ``/cache-tests``, pointing at the origin. The suite's client runs through the
gateway once per store (embedded memory, Redis); the figures are printed beside the published
results of other caches, with every failing test and its reason. The raw results go to
``bench/results/conformance-<store>.json``.

Without node and npm, or without the suite, it prints ``skipped`` and why, and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.servers import REPO_ROOT, Server, base_env, free_port, gateway_env, redis_server, running

PREFIX = "/cache-tests"
TALLY = Path(__file__).with_name("conformance_tally.mjs")
DEFAULT_SUITE = REPO_ROOT.parent / "shared" / "conformance" / "cache-tests"
RESULTS_DIR = REPO_ROOT / "bench" / "results"
CLI_TIMEOUT_S = 600
# The suite's service: its deliberate 5xx must never open the breaker, and the gateway's own TTL for
# answers that say nothing about freshness is off (the suite checks that such answers are not reused).
SERVICE = {
    "prefix": PREFIX,
    "strip_prefix": True,
    "cache": True,
    "cache_ttl": 0,
    "timeout": 20,
    "breaker": {"error_threshold": 100, "volume_threshold": 1_000_000, "reset_timeout": 0.1},
}


def skip(reason: str) -> int:
    """Say why nothing ran; not having node is not a failure."""
    print(f"conformance: skipped ({reason})")
    return 0


def prepare_suite(source: Path, work: Path) -> Path:
    """Copy the suite to ``work`` (the source may be read-only) and install its runtime dependencies."""
    suite = work / "cache-tests"
    shutil.copytree(source, suite, ignore=shutil.ignore_patterns("node_modules", ".git"))
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--omit=dev", "--loglevel=error"],
                   cwd=suite, check=True, stdout=subprocess.DEVNULL, timeout=600)
    return suite


def origin_server(suite: Path, log_dir: Path) -> Server:
    """The suite's origin (``node test-engine/server/server.mjs``) on a free port."""
    port = free_port()
    env = {**base_env(), "npm_config_port": str(port), "npm_config_protocol": "http",
           "npm_config_pidfile": str(log_dir / "origin.pid")}
    server = Server("origin", ["node", str(suite / "test-engine" / "server" / "server.mjs")], env, log_dir, port)
    return server


def gateway_server(store: str, log_dir: Path, origin_url: str, redis_url: str | None,
                   workers: int | None = None) -> Server:
    """The gateway under gunicorn with the suite's service added by ``GATEWAY_CONFIG``.

    With Redis: 2 workers sharing the cache. Without: the gateway's default of one worker, since the
    embedded store is per worker (with two, a test's second request may meet a worker that never saw
    its first).
    """
    workers = workers or (2 if redis_url else 1)
    config = log_dir / f"gateway-{store}.json"
    config.write_text(json.dumps({"services": {"cache-tests": {**SERVICE, "url": origin_url}}}))
    port = free_port()
    run_dir = log_dir / f"{store}-run"
    run_dir.mkdir(parents=True, exist_ok=True)
    extra = {"GATEWAY_CONFIG": str(config)}
    if redis_url:
        extra["REDIS_URL"] = redis_url
    env = gateway_env(port, "http://127.0.0.1:9", run_dir, workers, extra)
    return Server(f"gateway-{store}", [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
                  env, log_dir, port)


def run_cli(suite: Path, base_url: str, log: Path, test_id: str = "") -> str:
    """Run the suite's client against ``base_url``; return its stdout (the results JSON, or one test's dump).

    Its stderr (setup errors such as a failed ``PUT`` of a test's configuration) goes to ``log``.
    """
    env = {**base_env(), "npm_config_base": base_url, "npm_config_id": test_id, "npm_package_config_id": ""}
    done = subprocess.run(["node", "--no-warnings", str(suite / "test-engine" / "cli.mjs")], cwd=suite, env=env,
                          capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False)
    log.write_text(done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"the suite's client failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return done.stdout


def tally(suite: Path, *files: str) -> list[dict[str, Any]]:
    """Count passes per kind the way the suite's results are counted (see conformance_tally.mjs)."""
    done = subprocess.run(["node", str(TALLY), str(suite), *files], capture_output=True, text=True, check=True)
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


@contextmanager
def services(store: str, suite: Path, log_dir: Path, workers: int | None = None) -> Iterator[Server]:
    """The origin, Redis when the store needs it, and the gateway, for one run."""
    with running(origin_server(suite, log_dir), None) as origin:
        if store == "redis":
            with running(redis_server(log_dir), None) as redis:
                redis_url = redis.url.replace("http", "redis")
                with running(gateway_server(store, log_dir, origin.url, redis_url, workers), "/health") as gateway:
                    yield gateway
        else:
            with running(gateway_server(store, log_dir, origin.url, None, workers), "/health") as gateway:
                yield gateway


def report(ours: list[dict[str, Any]], published: list[dict[str, Any]]) -> str:
    """The table (ours first, then the published caches) and every failing test with its reason."""
    lines = [f"{'cache':<28} {'required':>9} {'optimal':>9}"]
    for row in ours:
        lines.append(f"{'gateway (' + row['name'] + ')':<28} {_ratio(row['required']):>9} {_ratio(row['optimal']):>9}")
    for row in sorted(published, key=lambda r: (-r["required"][0], -r["optimal"][0])):
        lines.append(f"{row['name'] + ' ' + row['version']:<28} {_ratio(row['required']):>9} "
                     f"{_ratio(row['optimal']):>9}")
    for row in ours:
        lines.append("")
        lines.append(f"failing on {row['name']} ({len(row['failing'])}):")
        lines.extend(f"  {test_id} [{kind}]: {reason}" for test_id, kind, reason in row["failing"])
    return "\n".join(lines)


def _ratio(pair: Sequence[int]) -> str:
    return f"{pair[0]}/{pair[1]}"


def main(argv: list[str] | None = None) -> int:
    """Run the suite on each store and print the figures; non-zero only when something could not run."""
    parser = argparse.ArgumentParser(prog="python -m bench.conformance", description=__doc__.split("\n")[0])
    parser.add_argument("--store", choices=("memory", "redis", "both"), default="both")
    parser.add_argument("--workers", type=int, help="gateway workers (default: 2 with Redis, 1 embedded)")
    parser.add_argument("--id", default="", help="run one test and print the suite's dump of it")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--keep-logs", action="store_true", help="copy the servers' logs to the results folder")
    args = parser.parse_args(argv)
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        return skip(f"{' and '.join(missing)} not found; install Node.js 18 or newer to run the suite")
    source = Path(os.environ.get("CACHE_TESTS_DIR") or DEFAULT_SUITE)
    if not (source / "tests" / "index.mjs").is_file():
        return skip(f"no test suite at {source}; set CACHE_TESTS_DIR to a copy of http-tests/cache-tests")
    stores = ("memory", "redis") if args.store == "both" else (args.store,)
    if "redis" in stores and shutil.which("redis-server") is None:
        return skip("redis-server not found")
    args.results_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="conformance-") as tmp:
        work = Path(tmp)
        suite = prepare_suite(source, work)
        files = []
        for store in stores:
            with services(store, suite, work / "logs", args.workers) as gateway:
                output = run_cli(suite, gateway.url + PREFIX, work / "logs" / f"cli-{store}.stderr.log", args.id)
            if args.keep_logs:
                shutil.copytree(work / "logs", args.results_dir / f"conformance-{store}-logs", dirs_exist_ok=True)
            if args.id:
                print(output)
                continue
            path = args.results_dir / f"conformance-{store}.json"
            path.write_text(output)
            files.append(str(path))
        if args.id:
            return 0
        ours = [{**row, "name": Path(row["file"]).stem.removeprefix("conformance-")} for row in tally(suite, *files)]
        published = tally(suite, "--published")
        print(report(ours, published))
        print(f"\nraw results: {', '.join(files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
