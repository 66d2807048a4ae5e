"""Per-service circuit breakers, kept per worker or shared through Redis.

Owns, lower modules first (none imports a higher one; ``core`` and ``shared`` never import each other)::

    rules      states, outcomes, tickets, the opening rule, the ``Breaker`` protocol both kinds satisfy
    window     the rolling error-rate window and the snapshot
    core       the in-process breaker
    scripts    the Lua scripts (``*.lua`` here) run by name, and every Redis key of a breaker
    shared     the Redis-backed breaker, with the in-process one as its fallback
    registry   one breaker per service, of the kind its builder chooses

May import: ``gateway.redis``, ``gateway.share``, ``gateway.config``, ``gateway.errors``, ``gateway.clock``.
"""
