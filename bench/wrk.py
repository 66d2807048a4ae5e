"""Driving wrk: the Lua script that makes it print one JSON line at the end, and parsing that line.

wrk counts an answer with a status above 399 as a "status" error; every case but the open
circuit expects none. Its durations are whole seconds.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

MARKER = "BENCH_JSON "

# done() runs once, in wrk's main Lua state, with the summary of every thread.
DONE_LUA = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\nBENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"mean_us":%.1f,"max_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
end
"""

# Keys "<prefix>1" .. "<prefix>N" drawn with probability proportional to 1 / rank^s.
ZIPF_LUA = r"""
local keys, exponent, prefix = %(keys)d, %(exponent)f, "%(prefix)s"
local cdf = {}
local counter = 0

setup = function(thread)
  counter = counter + 1
  thread:set("seed", counter * 7919)
end

init = function(args)
  math.randomseed(seed or 1)
  local total = 0
  for rank = 1, keys do total = total + 1 / rank ^ exponent end
  local running = 0
  for rank = 1, keys do
    running = running + 1 / rank ^ exponent / total
    cdf[rank] = running
  end
  cdf[keys] = 1.0
end

request = function()
  local r = math.random()
  local lo, hi = 1, keys
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < r then lo = mid + 1 else hi = mid end
  end
  return wrk.format("GET", prefix .. lo)
end
"""


# A new path for every request: "<prefix><run>-<thread>-<n>", so every request is a cache miss.
UNIQUE_LUA = r"""
local prefix = "%(prefix)s"
local threads = 0

setup = function(thread)
  threads = threads + 1
  thread:set("id", threads)
end

init = function(args)
  math.randomseed(os.time() * 1000 + (id or 0))
  run = math.random(1, 1000000000)
  n = 0
end

request = function()
  n = n + 1
  return wrk.format("GET", prefix .. run .. "-" .. (id or 0) .. "-" .. n)
end
"""


class WrkError(RuntimeError):
    """wrk failed or printed no result."""


@dataclass
class WrkResult:
    """What one wrk run measured (latencies in milliseconds)."""

    requests: int
    seconds: float
    rps: float
    errors: dict[str, int]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    mean_ms: float
    max_ms: float

    @property
    def socket_errors(self) -> int:
        """Return connect, read, write and timeout errors together."""
        return sum(n for kind, n in self.errors.items() if kind != "status")

    def as_dict(self) -> dict[str, object]:
        """Return the result as plain data for the JSON report."""
        return asdict(self)


def available() -> bool:
    """Tell whether wrk is on PATH."""
    return shutil.which("wrk") is not None


def write_script(directory: Path, name: str, body: str = "") -> Path:
    """Write a wrk Lua script made of ``body`` and the JSON-printing done() into ``directory``."""
    path = directory / f"{name}.lua"
    path.write_text(body + DONE_LUA)
    return path


def zipf_script(directory: Path, prefix: str, keys: int, exponent: float) -> Path:
    """Write a script that requests ``prefix + rank`` with Zipf-distributed ranks."""
    body = ZIPF_LUA % {"keys": keys, "exponent": exponent, "prefix": prefix}
    return write_script(directory, f"zipf-{keys}", body)


def unique_script(directory: Path, prefix: str) -> Path:
    """Write a script that requests a path never asked before, ``prefix`` then a fresh suffix."""
    return write_script(directory, "unique", UNIQUE_LUA % {"prefix": prefix})


def parse(output: str) -> WrkResult:
    """Parse the JSON line the done() script printed."""
    for line in output.splitlines():
        if line.startswith(MARKER):
            data = json.loads(line[len(MARKER):])
            break
    else:
        raise WrkError(f"wrk printed no result line:\n{output[-2000:]}")
    seconds = data["duration_us"] / 1e6
    return WrkResult(
        requests=data["requests"], seconds=round(seconds, 3), rps=round(data["requests"] / seconds, 1),
        errors={kind: data[kind] for kind in ("connect", "read", "write", "status", "timeout")},
        p50_ms=data["p50_us"] / 1000, p90_ms=data["p90_us"] / 1000, p99_ms=data["p99_us"] / 1000,
        p999_ms=data["p999_us"] / 1000, mean_ms=round(data["mean_us"] / 1000, 3), max_ms=data["max_us"] / 1000,
    )


def run(url: str, script: Path, *, connections: int, seconds: int, threads: int | None = None,
        timeout_s: int = 5) -> WrkResult:
    """Run wrk against ``url`` and return what it measured."""
    threads = threads or min(2, connections)
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", f"--timeout={timeout_s}s", "--latency",
            "-s", str(script), url]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + timeout_s + 30)
    except subprocess.TimeoutExpired as exc:
        raise WrkError(f"wrk did not finish: {' '.join(argv)}") from exc
    if done.returncode != 0:
        raise WrkError(f"wrk exited with {done.returncode}: {done.stderr.strip() or done.stdout[-2000:]}")
    return parse(done.stdout)
