"""The connection to Redis: one link (plain, Sentinel or Cluster), and pub/sub subscriptions that survive reconnects.

Owns: ``link`` (the client, its breaker-like back-off, ``StoreUnavailable``, what differs on a
cluster), ``cluster`` (the Redis Cluster client), ``pool`` (the connection pool's lease), ``slots`` (hash
tags), ``subscription``.

May import: ``gateway.config``, ``gateway.sockets``.
"""
