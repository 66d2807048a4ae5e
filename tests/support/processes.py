"""Real servers for tests: redis-server, the sample services and gunicorn, each on a free port.

Every process runs in its own process group with stdout and stderr in files,
is waited for until it answers, and is stopped (SIGTERM, then SIGKILL) by
the context manager or fixture that started it, whether the test passed or not.
"""

from __future__ import annotations

import ctypes
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import IO, Any

import redis

from samples import SERVICES

REPO_ROOT = Path(__file__).resolve().parents[2]
STOP_TIMEOUT_S = 5.0
LOG_TAIL_CHARS = 20_000
# Only these variables reach child processes, so a developer's REDIS_URL or
# *_SERVICE_URL never leaks into a test.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TZ", "COVERAGE_PROCESS_START")
# Where a gateway sends a service the test did not point anywhere: the discard
# port, where nothing listens, so no test reaches services a developer runs.
UNREACHABLE_URL = "http://127.0.0.1:9"

PR_SET_PDEATHSIG = 1

_handed_out: set[int] = set()


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM the child if the test run dies, since its own session escapes Ctrl-C."""
    with suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    """Return a TCP port that is free on every local address and not handed out before in this run."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("", 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free port found")


def base_env() -> dict[str, str]:
    """Return the environment every child starts from: a few inherited basics, nothing else."""
    env = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def http_status(url: str, path: str, timeout: float = 1.0) -> int | None:
    """Return the status of GET ``path`` on ``url``, or None when nothing answers."""
    host, _, port = url.removeprefix("http://").partition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def http_json(method: str, url: str, body: Any = None, timeout: float = 5.0) -> tuple[int, Any]:
    """Send a JSON request with the standard library and return the status and decoded body."""
    host, _, rest = url.removeprefix("http://").partition(":")
    port, _, path = rest.partition("/")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        data = None if body is None else json.dumps(body).encode()
        headers = {} if data is None else {"Content-Type": "application/json"}
        conn.request(method, "/" + path, body=data, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None
    finally:
        conn.close()


class ProcessStartError(RuntimeError):
    """A server did not come up; the message carries its captured output."""


class ManagedProcess:
    """A child process in its own process group whose stdout and stderr go to files."""

    def __init__(self, name: str, argv: Sequence[str], *, log_dir: Path, env: Mapping[str, str],
                 cwd: Path = REPO_ROOT) -> None:
        self.name = name
        self.argv = list(argv)
        self.environ = dict(env)
        self.cwd = cwd
        log_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = log_dir / f"{name}.stdout.log"
        self.stderr_path = log_dir / f"{name}.stderr.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._files: list[IO[bytes]] = []

    def start(self) -> None:
        """Start the process (appending to its log files, so a restart keeps earlier output)."""
        self._close_files()
        self._files = [self.stdout_path.open("ab"), self.stderr_path.open("ab")]
        self.proc = subprocess.Popen(self.argv, cwd=self.cwd, env=self.environ, stdin=subprocess.DEVNULL,
                                     stdout=self._files[0], stderr=self._files[1], start_new_session=True,
                                     preexec_fn=_die_with_parent if sys.platform == "linux" else None)

    @property
    def pid(self) -> int:
        """Return the process id (also its process group id)."""
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.pid

    def running(self) -> bool:
        """Tell whether the process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def signal_group(self, signum: int) -> None:
        """Send a signal to the whole process group, if it still exists."""
        if self.proc is not None:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signum)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to exit and return its exit status."""
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """Kill the whole process group at once and reap the leader."""
        self.signal_group(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()

    def stop(self, timeout: float = STOP_TIMEOUT_S, leader_only: bool = False) -> None:
        """Stop gracefully (SIGTERM), kill the group after ``timeout`` seconds, and close the logs."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.signal_group(signal.SIGCONT)  # a paused process cannot act on SIGTERM
                if leader_only:
                    with suppress(ProcessLookupError):
                        self.proc.send_signal(signal.SIGTERM)
                else:
                    self.signal_group(signal.SIGTERM)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    pass
            # Whatever the leader did, no member of its group may outlive the test.
            self.kill()
        self._close_files()

    def _close_files(self) -> None:
        for file in self._files:
            file.close()
        self._files = []

    def stdout_text(self) -> str:
        """Return everything the process wrote to stdout so far."""
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def stderr_text(self) -> str:
        """Return everything the process wrote to stderr so far."""
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def log_text(self) -> str:
        """Return stdout and stderr, labelled."""
        return f"--- {self.name} stdout ---\n{self.stdout_text()}--- {self.name} stderr ---\n{self.stderr_text()}"

    def log_sections(self) -> list[tuple[str, str]]:
        """Return the log tails to attach to a failed test's report."""
        return [(f"{self.name} log", self.log_text()[-LOG_TAIL_CHARS:])]

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``ready`` until true; fail with the captured logs if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        while not ready():
            if not self.running():
                code = self.proc.returncode if self.proc is not None else None
                raise ProcessStartError(f"{self.name} exited with {code} before {what}\n{self.log_text()}")
            if time.monotonic() > deadline:
                raise ProcessStartError(f"{self.name}: no {what} within {timeout} s\n{self.log_text()}")
            time.sleep(0.05)


class RedisServer(ManagedProcess):
    """A throwaway redis-server on 127.0.0.1 without persistence."""

    password: str | None = None  # a subclass whose server requires one sets it

    def __init__(self, log_dir: Path, extra_args: Sequence[str] = (), port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(log_dir), *extra_args]
        super().__init__(f"redis-{self.port}", argv, log_dir=log_dir, env=base_env(), cwd=log_dir)
        self._clients: list[redis.Redis] = []
        self._resume_timers: list[threading.Timer] = []

    def start(self, timeout: float = 10.0) -> None:
        """Start redis-server and wait until it answers PING."""
        super().start()
        self.wait_until(self._answers_ping, timeout, "answer to PING")

    def _answers_ping(self) -> bool:
        probe = redis.Redis(port=self.port, password=self.password, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            return bool(probe.ping())
        except redis.RedisError:
            return False
        finally:
            probe.close()

    def client(self, **options: Any) -> redis.Redis:
        """Return a redis-py client of this server (closed when the server stops)."""
        client = redis.Redis.from_url(self.url, **{"socket_timeout": 5.0, **options})
        self._clients.append(client)
        return client

    def restart(self, timeout: float = 10.0) -> None:
        """Kill the server if it runs and start a new, empty one on the same port."""
        self.kill()
        self.start(timeout)

    def pause(self, seconds: float) -> threading.Timer:
        """Freeze the server (SIGSTOP) and let it go on (SIGCONT) after ``seconds`` in the background."""
        self.signal_group(signal.SIGSTOP)
        timer = threading.Timer(seconds, self.resume)
        timer.daemon = True
        timer.start()
        self._resume_timers.append(timer)
        return timer

    def resume(self) -> None:
        """Let a paused server go on."""
        if self.running():
            self.signal_group(signal.SIGCONT)

    def stop(self, timeout: float = STOP_TIMEOUT_S, leader_only: bool = False) -> None:
        """Close clients, cancel pending resumes and stop the server."""
        for timer in self._resume_timers:
            timer.cancel()
        for client in self._clients:
            client.close()
        self._clients = []
        super().stop(timeout, leader_only)


@contextmanager
def start_redis(log_dir: Path, extra_args: Sequence[str] = ()) -> Iterator[RedisServer]:
    """Run a throwaway redis-server for the duration of the block."""
    server = RedisServer(log_dir, extra_args)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def control_answers(url: str) -> bool:
    """Tell whether a sample service answers its control endpoint (which faults never touch)."""
    return http_status(url, "/_control/faults") == 200


class SampleServices(ManagedProcess):
    """The five sample services in one process (``python -m samples all``) on free ports."""

    def __init__(self, log_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.ports = {name: free_port() for name in SERVICES}
        self.urls = {name: f"http://127.0.0.1:{port}" for name, port in self.ports.items()}
        argv = [sys.executable, "-m", "samples", "all", *(f"--port={n}={p}" for n, p in self.ports.items())]
        super().__init__("samples", argv, log_dir=log_dir, env={**base_env(), **(env or {})})

    def start(self, timeout: float = 15.0) -> None:
        """Start the services and wait until every one answers its control endpoint."""
        super().start()
        for url in self.urls.values():
            self.wait_until(partial(control_answers, url), timeout, f"answer on {url}")

    def env(self) -> dict[str, str]:
        """Return the AUTH_SERVICE_URL, ORDER_SERVICE_URL, ... variables pointing a gateway here."""
        return {spec.url_env: self.urls[name] for name, spec in SERVICES.items()}

    def _control(self, method: str, name: str, what: str, body: Any = None) -> Any:
        status, data = http_json(method, f"{self.urls[name]}/_control/{what}", body)
        if status != 200:
            raise AssertionError(f"{method} /_control/{what} on {name} answered {status}: {data}")
        return data

    def faults(self, name: str, **settings: Any) -> dict[str, Any]:
        """Change the faults one service injects (error_rate, latency_ms, down, status); return them all."""
        return self._control("POST", name, "faults", settings)  # type: ignore[no-any-return]

    def reset_faults(self, name: str | None = None) -> None:
        """Stop injecting faults in one service, or in all of them."""
        for service in [name] if name else self.urls:
            self._control("DELETE", service, "faults")

    def stats(self, name: str) -> dict[str, Any]:
        """Return one service's request counters: {"requests": n, "by_path": {...}}."""
        return self._control("GET", name, "stats")  # type: ignore[no-any-return]

    def reset_stats(self, name: str | None = None) -> None:
        """Reset the request counters of one service, or of all of them."""
        for service in [name] if name else self.urls:
            self._control("DELETE", service, "stats")

    def reset(self) -> None:
        """Reset faults and counters of every service."""
        self.reset_faults()
        self.reset_stats()


@contextmanager
def start_samples(log_dir: Path, env: Mapping[str, str] | None = None) -> Iterator[SampleServices]:
    """Run the five sample services for the duration of the block."""
    services = SampleServices(log_dir, env)
    try:
        services.start()
        yield services
    finally:
        services.stop()


class GatewayProcess(ManagedProcess):
    """The gateway under gunicorn (``python -m gunicorn -c gunicorn.conf.py wsgi:app``) on a free port."""

    def __init__(self, env: Mapping[str, str], workers: int = 1, extra_args: Sequence[str] = (), *,
                 log_dir: Path, cwd: Path = REPO_ROOT, app: str = "wsgi:app",
                 config: str | None = "gunicorn.conf.py") -> None:
        self.port = free_port()
        # Test gateways listen on loopback only (BIND), unless a test names another address.
        self.host = env.get("BIND") or "127.0.0.1"
        self.url = f"http://{self.host}:{self.port}"
        full_env = {**base_env(), **{spec.url_env: UNREACHABLE_URL for spec in SERVICES.values()},
                    "PORT": str(self.port), "BIND": self.host, "WEB_CONCURRENCY": str(workers), "LOG_FORMAT": "json",
                    **env}
        config_args = ["-c", config] if config else []
        argv = [sys.executable, "-m", "gunicorn", *config_args, *extra_args, app]
        super().__init__(f"gateway-{self.port}", argv, log_dir=log_dir, env=full_env, cwd=cwd)

    def start(self, timeout: float = 20.0, wait: bool = True) -> None:
        """Start gunicorn and (unless ``wait`` is false) wait until GET /health answers 200."""
        super().start()
        if wait:
            self.wait_until(lambda: http_status(self.url, "/health") == 200, timeout, "200 from GET /health")

    def terminate(self) -> None:
        """Ask gunicorn's master to shut down gracefully (SIGTERM)."""
        if self.running():
            self.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]

    def stop(self, timeout: float = STOP_TIMEOUT_S, leader_only: bool = True) -> None:
        """SIGTERM the master (which stops its workers), then kill the group after ``timeout``."""
        super().stop(timeout, leader_only)

    def worker_pids(self) -> list[int]:
        """Return the pids of gunicorn's current worker processes."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        return [int(pid) for pid in children.read_text().split()] if children.exists() else []

    def json_logs(self) -> list[dict[str, Any]]:
        """Return the JSON objects the gateway logged on stdout, skipping any other lines."""
        entries = []
        for line in self.stdout_text().splitlines():
            with suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    entries.append(entry)
        return entries


@contextmanager
def start_gateway(env: Mapping[str, str], workers: int = 1, extra_args: Sequence[str] = (), *,
                  log_dir: Path, wait: bool = True, **options: Any) -> Iterator[GatewayProcess]:
    """Run the gateway under gunicorn for the duration of the block (``options``: cwd, app, config)."""
    gateway = GatewayProcess(env, workers, extra_args, log_dir=log_dir, **options)
    try:
        gateway.start(wait=wait)
        yield gateway
    finally:
        gateway.stop()
    # Every gateway of the whole suite, whatever its test did: its tokens never reach its logs.
    logs = gateway.log_text()
    for name in ("ADMIN_TOKEN", "OPS_TOKEN"):
        token = env.get(name) or ""
        if len(token) >= 8 and token in logs:
            raise AssertionError(f"the gateway logged the value of {name}")
