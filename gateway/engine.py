"""The engine in one typed object: every part the request flow and the HTTP surface use.

:func:`gateway.build.build_gateway` makes each part once and hands each what it needs when it makes
it; the flow (``gateway.forwarder``) and the blueprints are handed the :class:`Gateway` and read its
parts by name and type, never from a registry of string keys. The background work of the parts
starts and stops here, in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.breaker.registry import BreakerRegistry
from gateway.cache.responses import ResponseCache
from gateway.config.settings import Settings
from gateway.http.upstream import UpstreamClient
from gateway.observe.health import HealthMonitor
from gateway.observe.lifecycle import Lifecycle
from gateway.observe.metrics import Metrics
from gateway.observe.request_log import RequestLog
from gateway.observe.stats import GatewayStats
from gateway.observe.stats_history import StatsHistory
from gateway.redis.link import RedisLink
from gateway.share.bus import InstanceBus
from gateway.traffic.guard import TrafficGuard


@dataclass(eq=False)
class Gateway:
    """One worker's gateway: its settings and every engine part, each built once."""

    settings: Settings
    link: RedisLink | None  # Redis, when configured: shared by the cache, breakers, stats, limits and health
    bus: InstanceBus | None  # several workers without Redis: invalidations and forced breaker states
    lifecycle: Lifecycle
    metrics: Metrics
    stats: GatewayStats
    history: StatsHistory
    breakers: BreakerRegistry
    cache: ResponseCache
    upstream: UpstreamClient
    traffic: TrafficGuard
    health: HealthMonitor
    requests: RequestLog  # the access line and the stats of each finished request

    def start(self, *, health_checks: bool = True) -> None:
        """Start the background work, in the worker that serves: the stats flusher and the health poller.

        The flusher also samples the stats history; the stale-while-revalidate refresher needs no
        start (the cache runs one refresh at a time, when a stale entry answers). Calling it again
        starts nothing twice.
        """
        self.stats.start()
        if health_checks:
            self.health.start()

    def stop(self) -> None:
        """Stop the background work (tests, shutdown): the poller gives up its lock, the stats flush once more."""
        self.health.stop()
        self.stats.close()
