"""The connection to Redis: one link (plain, Sentinel), and pub/sub subscriptions that survive reconnects.

Owns: ``link`` (the client, its breaker-like back-off, ``StoreUnavailable``), ``subscription``.

May import: ``gateway.config``.
"""
