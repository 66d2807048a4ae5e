"""Benchmarks of the gateway against a bare WSGI app and a direct upstream (``python -m bench``)."""
