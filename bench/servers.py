"""The processes a benchmark run starts on 127.0.0.1 free ports: redis-server, upstream, bare baseline, gateway.

Each runs in its own session with its output in files, dies with the benchmark (PR_SET_PDEATHSIG),
and is stopped by the context manager that started it, whatever happened in between.
"""

from __future__ import annotations

import ctypes
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

REPO_ROOT = Path(__file__).resolve().parents[1]
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TZ")
SERVICE_URL_VARS = ("AUTH_SERVICE_URL", "ORDER_SERVICE_URL", "RESTAURANT_SERVICE_URL", "DELIVERY_SERVICE_URL",
                    "TRACKING_SERVICE_URL")
STOP_TIMEOUT_S = 5.0
PR_SET_PDEATHSIG = 1


class StartError(RuntimeError):
    """A server did not come up; the message carries the tail of its output."""


def free_port() -> int:
    """Return a TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_env() -> dict[str, str]:
    """Return a clean child environment, so a developer's REDIS_URL or service URLs never leak in."""
    env = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _die_with_parent() -> None:
    """Have Linux SIGTERM the child when the benchmark dies, since its own session escapes Ctrl-C."""
    with suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def http_status(port: int, path: str, timeout: float = 1.0) -> int | None:
    """Return the status of GET ``path`` on 127.0.0.1:``port``, or None when nothing answers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


class Server:
    """One child process (with its process group) listening on ``port``, output in ``log_dir``."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log_dir: Path, port: int) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = log_dir / f"{name}.stdout.log"
        self.stderr_path = log_dir / f"{name}.stderr.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._files: list[IO[bytes]] = []

    def start(self, ready_path: str | None, timeout: float = 20.0) -> None:
        """Start the process and wait until GET ``ready_path`` gets any HTTP answer (None: until the port accepts)."""
        self._files = [self.stdout_path.open("wb"), self.stderr_path.open("wb")]
        self.proc = subprocess.Popen(self.argv, cwd=REPO_ROOT, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=self._files[0], stderr=self._files[1], start_new_session=True,
                                     preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while not self._ready(ready_path):
            if self.proc.poll() is not None:
                raise StartError(f"{self.name} exited with {self.proc.returncode} while starting\n{self.tail()}")
            if time.monotonic() > deadline:
                raise StartError(f"{self.name} did not answer within {timeout} s\n{self.tail()}")
            time.sleep(0.05)

    def _ready(self, path: str | None) -> bool:
        if path is not None:
            return http_status(self.port, path) is not None
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def running(self) -> bool:
        """Tell whether the process is still alive."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM the leader (gunicorn's master stops its workers), then kill the whole group."""
        if self.proc is not None:
            if self.proc.poll() is None:
                with suppress(ProcessLookupError):
                    self.proc.send_signal(signal.SIGTERM)
                with suppress(subprocess.TimeoutExpired):
                    self.proc.wait(STOP_TIMEOUT_S)
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for file in self._files:
            file.close()
        self._files = []

    def stderr_text(self) -> str:
        """Return what the process wrote to stderr."""
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def tail(self, chars: int = 4000) -> str:
        """Return the end of stderr (and stdout), for error messages."""
        out = self.stdout_path.read_text(errors="replace")[-chars:] if self.stdout_path.exists() else ""
        return f"--- {self.name} stderr ---\n{self.stderr_text()[-chars:]}--- {self.name} stdout ---\n{out}"

    def worker_class(self) -> str | None:
        """Return the worker class gunicorn reported at start-up, if it did."""
        match = re.search(r"Using worker: (\S+)", self.stderr_text())
        return match.group(1) if match else None


@contextmanager
def running(server: Server, ready_path: str | None, timeout: float = 20.0) -> Iterator[Server]:
    """Run ``server`` for the duration of the block; it is stopped even if it failed to start."""
    try:
        server.start(ready_path, timeout)
        yield server
    finally:
        server.stop()


def redis_server(log_dir: Path) -> Server:
    """A throwaway redis-server without persistence (never the system one)."""
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(log_dir)]
    return Server("redis", argv, base_env(), log_dir, port)


def gunicorn_argv(app: str, *options: str) -> list[str]:
    """Return the command line of gunicorn serving ``app`` with ``options``."""
    return [sys.executable, "-m", "gunicorn", *options, app]


def upstream_server(log_dir: Path) -> Server:
    """The counting upstream: one gevent worker, so its counts are the whole upstream's."""
    port = free_port()
    argv = gunicorn_argv("bench.apps:upstream", "-k", "gevent", "-w", "1", "--worker-connections", "4000",
                         "--keep-alive", "60", "--backlog", "4096", "-b", f"127.0.0.1:{port}",
                         "--log-level", "warning")
    return Server("upstream", argv, base_env(), log_dir, port)


def gateway_env(port: int, upstream_url: str, run_dir: Path, workers: int, extra: Mapping[str, str]) -> dict[str, str]:
    """Return the environment of a gateway (or the bare baseline under the same gunicorn settings)."""
    env = {**base_env(), **{name: upstream_url for name in SERVICE_URL_VARS}}
    env.update(PORT=str(port), WEB_CONCURRENCY=str(workers), HEALTH_CHECK_INTERVAL="0",
               GATEWAY_RUN_DIR=str(run_dir))
    env.update(extra)
    return env


def bare_server(log_dir: Path, upstream_url: str, workers: int, extra: Mapping[str, str]) -> Server:
    """The bare baseline: a minimal WSGI app under the gateway's own gunicorn settings (worker class, count)."""
    port = free_port()
    run_dir = log_dir / "bare-run"
    run_dir.mkdir(parents=True, exist_ok=True)
    env = gateway_env(port, upstream_url, run_dir, workers, extra)
    return Server("bare", gunicorn_argv("bench.apps:bare", "-c", "gunicorn.conf.py"), env, log_dir, port)


def gateway_server(name: str, log_dir: Path, upstream_url: str, workers: int, extra: Mapping[str, str]) -> Server:
    """The gateway: ``gunicorn -c gunicorn.conf.py wsgi:app`` with its request log going to a file."""
    port = free_port()
    run_dir = log_dir / f"{name}-run"
    run_dir.mkdir(parents=True, exist_ok=True)
    env = gateway_env(port, upstream_url, run_dir, workers, extra)
    return Server(name, gunicorn_argv("wsgi:app", "-c", "gunicorn.conf.py"), env, log_dir, port)
