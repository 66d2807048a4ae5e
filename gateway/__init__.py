"""The gateway engine: configuration, forwarding, cache, breakers, stats and health.

Nothing here knows Flask routes; ``blueprints/`` is the HTTP surface.
"""

__version__ = "1.0.0"
