"""``python -m bench [--quick] [--only 1,3] [--cache embedded|redis|cluster|both|all]``: run it, print the table."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from bench.suite import CASES, MODES, Options, run


def parse_args(argv: list[str]) -> Options:
    """Turn the command line into options."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round of 1 s per case")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per case (default 3)")
    parser.add_argument("--seconds", type=int, default=3, help="seconds per wrk run, whole (default 3)")
    parser.add_argument("--only", default="", help=f"comma-separated case numbers among {','.join(CASES)}")
    parser.add_argument("--cache", choices=(*MODES, "both", "all"), default="all",
                        help="which gateway cache mode(s) to run: both is embedded and redis, all adds the "
                        "Redis Cluster (its cases: hit, miss, open circuit) (default all)")
    parser.add_argument("--worker-class", help="gunicorn worker class for the gateway and the bare app "
                        "(GUNICORN_WORKER_CLASS; default: what gunicorn.conf.py picks)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' logs and print where")
    parser.add_argument("--strict", action="store_true", help="also exit non-zero when a target is missed")
    parser.add_argument("--results-dir", type=Path, help="where to write the JSON (default bench/results)")
    args = parser.parse_args(argv)
    only = tuple(n.strip() for n in args.only.split(",") if n.strip()) or tuple(CASES)
    unknown = [n for n in only if n not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose among {', '.join(CASES)}")
    if args.rounds < 1 or args.seconds < 1:
        parser.error("--rounds and --seconds must be at least 1")
    return Options(
        rounds=1 if args.quick else args.rounds, seconds=1 if args.quick else args.seconds, only=only,
        modes={"both": ("embedded", "redis"), "all": MODES}.get(args.cache, (args.cache,)), keep_logs=args.keep_logs,
        strict=args.strict, results_dir=args.results_dir, worker_class=args.worker_class,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; SIGTERM and Ctrl-C stop every server it started."""
    options = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    try:
        return run(options)
    except KeyboardInterrupt:
        print("interrupted: servers stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
