"""The RFC 9111 response cache: its rules, its stores and one request's dealings with it.

Owns: ``policy`` (every caching rule: freshness, keys, ``Vary``, directives, validators),
``entry`` (a stored answer and its encoding), ``store`` (memory and Redis stores), ``tier`` and
``broadcast`` (per-worker copies and their invalidation), ``responses`` (the cache a request meets),
``exchange`` and ``passthrough`` (one request's lookup, store, revalidation and invalidation).

May import: ``gateway.redis``, ``gateway.share``, ``gateway.config``, ``gateway.errors``,
``gateway.messages``, ``gateway.clock``.
"""
