"""Traffic control in front of the request flow: rate limits (GCRA, local or on Redis) and CORS.

Owns: ``ratelimit``, ``cors``, ``guard`` (what the forwarder calls for a guarded service).

May import: ``gateway.redis``, ``gateway.config``, ``gateway.errors``, ``gateway.messages``, ``gateway.clock``.
"""
