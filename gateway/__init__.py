"""The gateway engine; ``blueprints/`` is the HTTP surface, and nothing here knows Flask routes.

Folders by part, lower ones first (a part imports only those above it in this list)::

    clock, errors, messages, config/   the leaves: time, the error tree, the request's types, settings
    redis/, share/                     Redis links and pub/sub; what workers share without Redis
    http/                              the server under gunicorn, the inbound request, the upstream client
    cache/, breaker/, traffic/         the RFC 9111 cache, circuit breakers, rate limits and CORS
    observe/                           stats, metrics, the access log, health checks
    forwarder                          the request flow, top to bottom
"""

__version__ = "1.0.0"
