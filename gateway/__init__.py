"""The gateway engine; ``blueprints/`` is the HTTP surface, and nothing here knows Flask routes.

Folders by part, lower ones first (a part imports only those above it in this list)::

    clock, errors, messages, config/   the leaves: time, the error tree, the request's types, settings
    redis/, share/                     Redis links and pub/sub; what workers share without Redis
    http/                              the server under gunicorn, the inbound request, the upstream client
    cache/, breaker/, traffic/         the RFC 9111 cache, circuit breakers, rate limits and CORS
    observe/                           stats, metrics, the access log, health checks
    engine                             the Gateway: every part in one typed object, started in one place
    forwarder                          the request flow, top to bottom, over a Gateway
    build                              build_gateway: every part made once, the flow wired into the cache
"""

__version__ = "1.0.0"
