"""What operators see: live stats, their history, Prometheus metrics, the access log, health checks.

Owns: ``stats`` (+ ``stats_report``, ``stats_share``, ``stats_history``), ``metrics``,
``request_log``, ``health`` (+ ``target_health``: each target of a service with several),
``upstreams`` (retries and targets in the stats and metrics), ``inventory`` (the service listing),
``lifecycle`` (start time, draining).

May import: ``gateway.redis``, ``gateway.config``, ``gateway.messages``, ``gateway.clock``.
"""
