"""Active health checks: one poller per gateway instance calls each service's health path.

Each service's check is configurable (``health_check`` in ``GATEWAY_CONFIG``: path, interval,
timeout, expected statuses) or off; by default it is ``GET <url>/health`` every
``HEALTH_CHECK_INTERVAL`` seconds, passing on any 2xx. A service whose check is off reports
``off`` and never turns red.

Every worker has a :class:`HealthMonitor`, but only the one holding an ``flock`` on a file in the
instance's run directory polls; when that worker dies the kernel releases the lock and another
worker takes over (with the history the last poller left in ``health.json``). Results go to that
file and, with Redis, to one key per instance, so ``/health/services`` describes the whole gateway:
the histories of every instance are merged in time order and the status rules applied to the merge.
Health checks never touch the circuit breakers.
"""

from __future__ import annotations

import fcntl
import http.client
import json
import logging
import os
import ssl
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import redis

from gateway.clock import Clock, system_clock
from gateway.config.settings import HealthCheck, ServiceConfig, Settings
from gateway.config.upstream import service_targets
from gateway.observe.instance import atomic_write, private_run_dir, reset_after_fork, try_flock
from gateway.observe.metrics import Metrics
from gateway.observe.target_health import LatestChecks, combine, merge, target_checks, with_targets
from gateway.redis.link import RedisLink, StoreUnavailable

log = logging.getLogger("gateway.health")

SLOW_MS = 1000.0  # a check slower than this makes a service degraded
HISTORY_SECONDS = 3600  # uptime_pct covers the last hour
MAX_HISTORY = 3600  # checks kept per service (one hour at one check a second)

Check = tuple[float, bool, float]  # (epoch seconds, passed, latency in ms)


def instance_key(link: RedisLink, instance: str) -> str:
    """The Redis key of one instance's published results."""
    return link.key("health", instance)


def instances_key(link: RedisLink) -> str:
    """The Redis key of the instances that published results (a sorted set, scored by when)."""
    return link.key("health", "instances")


def classify(history: list[Check]) -> str:
    """Status of a time-ordered check history: down, degraded, healthy or unknown."""
    if not history:
        return "unknown"
    last = history[-10:]
    if len(last) >= 3 and not any(ok for _, ok, _ in last[-3:]):
        return "down"
    if any(not ok or ms > SLOW_MS for _, ok, ms in last):
        return "degraded"
    return "healthy"


def summarize(service: ServiceConfig, history: list[Check], now: float,
              check: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``/health/services`` entry of one service (``check``: its settings, None when off)."""
    if not service.health_check.enabled:
        return {"status": "off", "url": service.url, "last_check": None, "latency_ms": None,
                "uptime_pct": None, "checks": 0, "check": None}
    hour = [c for c in history if c[0] > now - HISTORY_SECONDS]
    last = history[-1] if history else None
    return {
        "status": classify(history),
        "url": service.url,
        "last_check": last[0] if last else None,
        "latency_ms": round(last[2], 3) if last else None,
        "uptime_pct": round(100.0 * sum(1 for c in hour if c[1]) / len(hour), 2) if hour else None,
        "checks": len(hour),
        "check": check,
    }


def check_service(url: str, timeout: float, context: ssl.SSLContext | None = None,
                  check: HealthCheck | None = None) -> tuple[bool, float]:
    """Call ``GET <url><path>`` once; return (passed: an expected status, latency in ms)."""
    check = check or HealthCheck()
    parts = urlsplit(url)
    path = (parts.path.rstrip("/") or "") + check.path
    started = time.monotonic()
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(parts.hostname or "", parts.port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"User-Agent": "gateway-health-check", "Accept": "application/json"})
        response = conn.getresponse()
        response.read(65536)
        ok = check.passes(response.status)
    except (OSError, http.client.HTTPException):
        ok = False
    finally:
        conn.close()
    return ok, (time.monotonic() - started) * 1000


class HealthMonitor:
    """Polls every service's health (when elected) and reports the instance's or gateway's view."""

    def __init__(self, settings: Settings, clock: Clock = system_clock, run_dir: str | None = None,
                 link: RedisLink | None = None, *, interval: float | None = None, timeout: float | None = None,
                 metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.link = link
        self.metrics = metrics
        self.interval = settings.health_check_interval if interval is None else interval
        self.timeout = timeout if timeout is not None else min(2.0, self.interval or 2.0)
        self._run_dir = run_dir
        self._ssl = ssl.create_default_context(cafile=settings.upstream_ca_bundle)
        self._history: dict[str, deque[Check]] = {}
        self._due: dict[str, float] = {}  # service name -> clock time of its next check
        self.latest_check = LatestChecks(self._read_file)  # for the upstream client: ejected targets' checks
        self._reset()
        reset_after_fork(self, HealthMonitor._forked)

    def _forked(self) -> None:
        """A forked child holds no lock and runs no poller, whatever its parent did."""
        if self._lock_fd is not None:
            # Close (never unlock: the lock is shared with the parent) so the child does not keep
            # the election lock alive after the parent dies.
            os.close(self._lock_fd)
        self._reset()

    def _reset(self) -> None:
        """Nothing started and no lock held (at construction, and in a forked child)."""
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock_fd: int | None = None
        self._start_lock = threading.Lock()

    @property
    def run_dir(self) -> str:
        """The instance's shared run directory (a private one if none was given)."""
        if self._run_dir is None:
            self._run_dir = self.settings.run_dir or private_run_dir()
        return self._run_dir

    # -- polling ----------------------------------------------------------------------------------

    def interval_for(self, service: ServiceConfig) -> float:
        """Seconds between two checks of ``service`` (0: not checked)."""
        check = service.health_check
        if not check.enabled:
            return 0.0
        return self.interval if check.interval is None else check.interval

    def timeout_for(self, service: ServiceConfig) -> float:
        """How long one check of ``service`` may take."""
        check = service.health_check
        if check.timeout is not None:
            return check.timeout
        return self.timeout if check.interval is None else min(2.0, check.interval)

    def checked(self) -> list[ServiceConfig]:
        """The services that have an active check."""
        return [s for s in self.settings.services.values() if self.interval_for(s) > 0]

    def check_settings(self, service: ServiceConfig) -> dict[str, Any] | None:
        """A service's effective check, as ``/health/services`` and ``/admin/services`` show it."""
        interval = self.interval_for(service)
        if interval <= 0:
            return None
        check = service.health_check
        return {"path": check.path, "interval_s": interval, "timeout_s": self.timeout_for(service),
                "expected_status": list(check.expected_status)}

    def start(self) -> None:
        """Start the background poller (it polls only while it holds the instance's lock)."""
        if not self.checked():
            return
        with self._start_lock:
            if self._thread is not None:
                return
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._run, name="gateway-health", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop polling and give up the lock, so another worker may take over."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.timeout + 2)
        self._release()

    @property
    def is_poller(self) -> bool:
        """Whether this monitor holds the instance's poller lock."""
        return self._lock_fd is not None

    def _run(self) -> None:
        stop = self._stop
        while not stop.is_set():
            wait = min([self.interval_for(s) for s in self.checked()] or [1.0])
            try:
                if self._lock_fd is not None or self._acquire():
                    wait = self.poll_due()
            except Exception:  # the poller must outlive any one bad round
                log.exception("health check round failed")
            stop.wait(max(0.05, wait))

    def _acquire(self) -> bool:
        fd = try_flock(os.path.join(self.run_dir, "health.lock"))
        if fd is None:
            return False
        self._lock_fd = fd
        self._history = {name: deque(checks, maxlen=MAX_HISTORY) for name, checks in self._read_file().items()}
        log.info("this worker runs the health checks", extra={"pid": os.getpid()})
        return True

    def _release(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def poll_due(self) -> float:
        """Check the services whose interval has passed; return the seconds until the next is due."""
        now = self.clock()
        due = [s for s in self.checked() if self._due.get(s.name, now) <= now]
        if due:
            self.poll_once(due)
            for service in due:
                self._due[service.name] = now + self.interval_for(service)
        upcoming = [self._due.get(s.name, now) for s in self.checked()]
        return max(0.0, min(upcoming) - now) if upcoming else 1.0

    def poll_once(self, services: list[ServiceConfig] | None = None) -> None:
        """Check every checked service (or ``services``) once, concurrently, and publish the results."""
        chosen = self.checked() if services is None else services
        jobs = [(s, url) for s in chosen for url in service_targets(s)]  # each target of a service
        results: dict[tuple[str, str], tuple[bool, float]] = {}

        def one(service: ServiceConfig, url: str) -> None:
            results[(service.name, url)] = check_service(url, self.timeout_for(service), self._ssl,
                                                         service.health_check)

        workers = [threading.Thread(target=one, args=job, daemon=True) for job in jobs]
        for worker in workers:
            worker.start()
        for worker, (service, _) in zip(workers, jobs, strict=True):
            worker.join(self.timeout_for(service) + 1)
        now = self.clock()
        for service in chosen:
            missed = (False, self.timeout_for(service) * 1000)
            checks = {url: results.get((service.name, url), missed) for url in service_targets(service)}
            for key, (passed, took) in target_checks(service, checks):
                self._history.setdefault(key, deque(maxlen=MAX_HISTORY)).append((now, passed, took))
            ok, ms = combine(checks)
            self._history.setdefault(service.name, deque(maxlen=MAX_HISTORY)).append((now, ok, ms))
            if self.metrics is not None:
                self.metrics.set_service_up(service.name, ok)
        self._publish(now)

    def _publish(self, now: float) -> None:
        hour = {name: [list(c) for c in checks if c[0] > now - HISTORY_SECONDS]
                for name, checks in self._history.items()}
        document = {"instance": self._instance_id(), "written_at": now, "services": hour}
        data = json.dumps(document, separators=(",", ":")).encode()
        atomic_write(os.path.join(self.run_dir, "health.json"), data)
        link = self.link
        if link is not None:
            ttl = int(self._horizon())
            instance = self._instance_id()

            def run(client: redis.Redis) -> None:
                pipe = client.pipeline(transaction=False)
                pipe.set(instance_key(link, instance), data, ex=ttl)
                pipe.zadd(instances_key(link), {instance: now})
                pipe.expire(instances_key(link), HISTORY_SECONDS)
                pipe.execute()

            try:
                link.run(run)
            except StoreUnavailable:
                pass  # the file still serves this instance; Redis gets the next round

    def _horizon(self) -> float:
        """How long an instance's published results stay current (three of its slowest rounds)."""
        rounds = [3 * self.interval_for(s) + self.timeout_for(s) for s in self.checked()]
        return max([60.0, *rounds])

    def _instance_id(self) -> str:
        """A stable id of this gateway instance (shared by its workers through the run directory)."""
        path = os.path.join(self.run_dir, "instance-id")
        try:
            with open(path, encoding="ascii") as handle:
                return handle.read().strip()
        except FileNotFoundError:
            pass
        # Write aside, then link into place: the first worker wins and nobody reads a half-written id.
        fd, tmp = tempfile.mkstemp(dir=self.run_dir, prefix=".instance-")
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(uuid.uuid4().hex)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
        with open(path, encoding="ascii") as handle:
            return handle.read().strip()

    # -- reading ----------------------------------------------------------------------------------

    def _read_file(self) -> dict[str, list[Check]]:
        try:
            with open(os.path.join(self.run_dir, "health.json"), "rb") as handle:
                return _histories(json.loads(handle.read()))
        except (OSError, ValueError):
            return {}

    def _read_redis(self, now: float) -> list[dict[str, list[Check]]]:
        if self.link is None:
            return []
        link = self.link
        ttl = self._horizon()
        own = self._instance_id()

        def run(client: redis.Redis) -> list[bytes | str | None]:
            members = client.zrangebyscore(instances_key(link), now - ttl, "+inf")
            ids = [i.decode() if isinstance(i, bytes) else str(i) for i in members]
            ids = [i for i in ids if i != own]
            # One GET per instance in a pipeline, not MGET: on a Redis Cluster the instances' keys
            # are in different slots, and the pipeline sends each primary its own in one round trip.
            pipe = client.pipeline(transaction=False)
            for i in ids:
                pipe.get(instance_key(link, i))
            return list(pipe.execute()) if ids else []

        try:
            raws = link.run(run)
        except StoreUnavailable:
            return []
        found = []
        for raw in raws:
            if not raw:
                continue
            try:
                found.append(_histories(json.loads(raw)))
            except ValueError:
                continue
        return found

    def services(self) -> dict[str, Any]:
        """``/health/services``: every configured service's status, merged over instances."""
        now = self.clock()
        sources = [self._read_file(), *self._read_redis(now)]
        out: dict[str, Any] = {}
        for name, service in self.settings.services.items():
            entry = summarize(service, merge(sources, name), now, self.check_settings(service))
            out[name] = with_targets(entry, service, lambda key: merge(sources, key), now, summarize)
        return {"services": out, "interval_s": self.interval}


def _histories(document: Mapping[str, Any]) -> dict[str, list[Check]]:
    services = document.get("services") if isinstance(document, Mapping) else None
    if not isinstance(services, Mapping):
        return {}
    return {str(name): [(float(t), bool(ok), float(ms)) for t, ok, ms in _rows(rows)]
            for name, rows in services.items()}


def _rows(rows: Any) -> Iterable[Any]:
    return [r for r in rows if isinstance(r, list) and len(r) == 3] if isinstance(rows, list) else []

