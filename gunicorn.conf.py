"""gunicorn settings for the gateway: validated once in the master, before any worker forks.

Nothing imported here needs gevent's monkey patching (the gevent worker patches after fork), so a
bad setting stops start-up with one line and a non-zero exit, instead of workers failing to boot
in a loop.
"""

import math
import os
import sys
import tempfile

from gateway.config.settings import ConfigError, load_settings

try:
    _settings = load_settings()
except ConfigError as _error:
    sys.stderr.write(f"gateway: {_error}\n")
    sys.stderr.flush()
    os._exit(2)

# BIND (default 0.0.0.0, every interface) and PORT; an IPv6 address goes in brackets.
bind = f"[{_settings.bind}]:{_settings.port}" if ":" in _settings.bind else f"{_settings.bind}:{_settings.port}"
workers = _settings.web_concurrency
# gunicorn's gevent worker with the gateway's own HTTP/1.1 connections (gateway/http/): strict framing,
# one send per answer. GUNICORN_WORKER_CLASS=gevent puts gunicorn's own parser back.
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gateway.http.worker.GatewayWorker")
worker_connections = 2000
preload_app = False
# In-flight requests get longer than an upstream may take to answer before a worker is stopped.
graceful_timeout = math.ceil(_settings.cb_timeout) + 5
timeout = max(30, int(_settings.cb_timeout * 2))
keepalive = 5
forwarded_allow_ips = ",".join(_settings.forwarded_allow_ips)
accesslog = None  # the gateway writes its own JSON request log
errorlog = "-"
loglevel = _settings.log_level.lower()
control_socket_disable = True

# One run directory per gateway instance, shared by its workers: stats snapshots, the health
# poller's election lock, and prometheus_client's multiprocess files.
_run_dir = _settings.run_dir or tempfile.mkdtemp(prefix="gateway-")
os.environ["GATEWAY_RUN_DIR"] = _run_dir
_metrics_dir = os.path.join(_run_dir, "metrics")
os.makedirs(_metrics_dir, exist_ok=True)
for _name in os.listdir(_metrics_dir):
    os.unlink(os.path.join(_metrics_dir, _name))
# Counters are "since start": a reused run directory must not carry the last run's numbers.
for _name in os.listdir(_run_dir):
    if _name.startswith(("stats-", "health", "history", "instance-bus")):
        os.unlink(os.path.join(_run_dir, _name))
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir


def post_worker_init(worker):  # noqa: ANN001, ANN201 - gunicorn hook signature
    """Make SIGTERM also mark the worker as draining, so /health answers 503 while it finishes."""
    from flask import Flask

    from blueprints.envelope import gateway_of  # the worker has loaded the app by now

    # The benchmark's bare WSGI apps run under this configuration too: they have nothing to drain.
    lifecycle = gateway_of(worker.wsgi).lifecycle if isinstance(worker.wsgi, Flask) else None
    original = worker.handle_exit

    def handle_exit(sig, frame):  # noqa: ANN001, ANN202
        if lifecycle is not None:
            lifecycle.drain()
        original(sig, frame)

    worker.handle_exit = handle_exit
    import signal

    signal.signal(signal.SIGTERM, handle_exit)


def child_exit(server, worker):  # noqa: ANN001, ANN201 - gunicorn hook signature
    """Drop a dead worker's live gauges from the metrics files."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, _metrics_dir)
