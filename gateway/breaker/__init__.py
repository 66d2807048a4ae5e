"""Per-service circuit breakers, kept per worker or shared through Redis.

Owns: ``core`` (outcomes, tickets, the local breaker, the registry), ``window`` (the rolling
error-rate window), ``shared`` (the Redis-backed breaker and its scripts).

May import: ``gateway.redis``, ``gateway.share``, ``gateway.config``, ``gateway.errors``, ``gateway.clock``.
"""
