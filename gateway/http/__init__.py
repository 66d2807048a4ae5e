"""The wire: the gateway's HTTP/1.1 server under gunicorn, the inbound request, the upstream client.

Owns: ``server`` (connections parsed with llhttp, served request by request), ``parsed`` (one request as
parsed, its ``wsgi.input``), ``writer`` (one answer's head and framing, written in one send), ``worker`` (the
gunicorn worker class), ``inbound`` (a WSGI environ to a :class:`~gateway.messages.ProxyCall`),
``upstream`` (the pooled client that sends a call to its service), ``targets`` (a service's several
targets: balancing, passive outlier ejection), ``retries`` (which failed attempts are tried again,
the backoff and the retry budget), ``redirects`` (prefix rewriting of the service's ``Location`` and
cookie paths).

May import: ``gateway.config``, ``gateway.errors``, ``gateway.messages``, ``gateway.clock``, ``gateway.sockets``.
"""
