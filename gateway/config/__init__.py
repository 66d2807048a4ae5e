"""Settings: the environment table, the ``GATEWAY_CONFIG`` file, per-service overrides, validation.

Owns, lower modules first (none imports a higher one)::

    values        ConfigError, the readers of one raw value, ``option`` (a setting declared once)
    traffic       a service's rate_limit and cors sections
    upstream      a service's urls, balance, retries and outlier_detection
    services      ServiceConfig, its breaker and health check, reading a service's entry
    redis         Redis through Sentinel or a Redis Cluster (REDIS_SENTINELS, REDIS_CLUSTER_NODES...)
    environment   the environment as read, and the readers of the gateway-wide variables
    file          the GATEWAY_CONFIG file, with file:line:col for every error in it
    settings      Settings (the environment table) and load_settings; what the rest of the gateway imports

May import: nothing else of the gateway.
"""
