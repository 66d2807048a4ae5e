"""Settings: the environment table, the ``GATEWAY_CONFIG`` file, per-service overrides, validation.

Owns: ``settings`` (``Settings``, ``ServiceConfig``, ``load_settings``), ``traffic`` (rate-limit and
CORS sections), ``upstream`` (``urls``, ``balance``, ``retries``, ``outlier_detection``).

May import: nothing else of the gateway.
"""
