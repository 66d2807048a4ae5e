"""What operators see: live stats, their history, Prometheus metrics, the access log, health checks.

Owns: ``stats`` (the hooks, the flusher, the ``/stats/*`` answers) with ``stats_tally`` (what a
worker counts and keeps), ``stats_share`` (snapshot files and Redis hashes), ``stats_merge`` (other
workers' files folded in), ``stats_report`` (the figures) and ``stats_history``; ``metrics`` (with
``metrics_processes``), ``request_log``, ``health`` (+ ``target_health``: each target of a service
with several), ``upstreams`` (retries and targets in the stats and metrics), ``inventory`` (the service listing),
``lifecycle`` (start time, draining), ``instance`` (being one of an instance's workers) and
``sources`` (what is read of the breakers and the cache, as Protocols).

May import: ``gateway.redis``, ``gateway.config``, ``gateway.messages``, ``gateway.clock``.
"""
