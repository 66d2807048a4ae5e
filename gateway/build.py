"""``build_gateway``: every part of the engine made once, each handed what it needs as it is made.

The order is who tells whom: a part is made after the parts it reports to (the breakers, the cache
and the rate limiter tell the stats; the stats and the health checks tell the metrics). What the
reports read back when asked — the breakers' states, the cache's size, the other workers' in-flight
counts — is handed over last, once every part exists. The cache's stale-while-revalidate refresher
is the request flow itself (``forwarder.refresh``): wired here, above the flow, so the flow never
knows how the gateway is built.
"""

from __future__ import annotations

from functools import partial

from gateway.breaker.registry import BreakerRegistry
from gateway.cache.responses import ResponseCache
from gateway.cache.tier import DEFAULT_BOUND as TIER_BOUND
from gateway.clock import Clock, system_clock
from gateway.config.settings import Settings
from gateway.engine import Gateway
from gateway.forwarder import refresh
from gateway.http.upstream import UpstreamClient
from gateway.observe.health import HealthMonitor
from gateway.observe.instance import private_run_dir
from gateway.observe.lifecycle import Lifecycle
from gateway.observe.metrics import Metrics
from gateway.observe.request_log import AccessLog, RequestLog, configure_logging
from gateway.observe.stats import GatewayStats
from gateway.observe.stats_history import StatsHistory
from gateway.observe.upstreams import UpstreamEvents
from gateway.redis.link import RedisLink
from gateway.share.bus import InstanceBus
from gateway.traffic.guard import traffic_guard


def build_gateway(settings: Settings, *, clock: Clock = system_clock, run_dir: str | None = None) -> Gateway:
    """Build one worker's gateway from ``settings``; nothing starts until :meth:`Gateway.start`.

    ``clock`` and ``run_dir`` are for tests: a fake clock for every part that tells time, and a run
    directory of their own (else the instance's ``GATEWAY_RUN_DIR``, or a private one).
    """
    access = AccessLog(configure_logging(settings.log_level, settings.log_format))
    link = RedisLink.from_settings(settings)
    instance_dir = settings.run_dir
    run_dir = run_dir or instance_dir or private_run_dir()
    # Several workers without Redis: invalidations and forced breaker states travel between them.
    bus = InstanceBus(instance_dir) if link is None and instance_dir and settings.web_concurrency > 1 else None
    metrics = Metrics(settings, link=link)
    history = StatsHistory(metrics, run_dir, settings.stats_history_interval, clock)
    stats = GatewayStats(settings, link, clock, run_dir, metrics=metrics, history=history)
    breakers = BreakerRegistry(settings, link, clock, listeners=[stats], bus=bus)
    # With Redis, hot entries are also kept per worker for at most half a second, dropped at once on
    # every invalidation or purge (pub/sub): a hit then costs no Redis round trip.
    cache = ResponseCache(settings, link, clock, stats=stats, bus=bus, tier_seconds=TIER_BOUND)
    health = HealthMonitor(settings, clock, run_dir, link, metrics=metrics)
    upstream = UpstreamClient(settings)
    upstream.listeners.append(UpstreamEvents(stats))  # attempts, retries and ejections in stats and metrics
    upstream.health = health.latest_check  # an ejected target the checks see failing stays out
    stats.breakers, stats.cache, stats.upstream = breakers, cache, upstream
    metrics.breakers, metrics.stats = breakers, stats
    gateway = Gateway(
        settings=settings, link=link, bus=bus, lifecycle=Lifecycle(), metrics=metrics, stats=stats,
        history=history, breakers=breakers, cache=cache, upstream=upstream, traffic=traffic_guard(link, stats),
        health=health, requests=RequestLog(access, stats, metrics.in_flight),
    )
    cache.refresher = partial(refresh, gw=gateway)
    return gateway
