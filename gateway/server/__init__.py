"""The HTTP/1.1 server under the app: a gunicorn gevent worker whose connections are parsed by llhttp.

It owns the wire: request framing (strict, every refusal in the JSON envelope), keep-alive and
pipelining, the WSGI environ, and writing each answer with as few ``send`` calls as it can. It may
import :mod:`gateway.errors` (for the refusals' envelope) and nothing else of the engine.
"""
