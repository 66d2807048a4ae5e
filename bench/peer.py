"""The seed's own design written in Node (Express + opossum + redis), run beside the gateway as a yardstick.

Its folder (``SEED_PEER_DIR``, default ``../shared/peers/seed-node`` beside the checkout) may be
read-only, so it is copied into a temporary folder named by a digest of its files and installed
there once with ``npm install``; later runs reuse that folder. Without node or npm, or when the
install fails, :func:`prepare` says why and the peer's columns read "skipped".

The peer caches every GET answered 200 in Redis and protects each service with an opossum breaker.
It is fed the benchmark's upstream for its order service and a closed port for its delivery service,
so ``/delivery/...`` meets an open circuit after its first failures: its open-circuit case.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.servers import REPO_ROOT, Server, base_env, free_port

DEFAULT_DIR = REPO_ROOT.parent / "shared" / "peers" / "seed-node"
HIT_PATH = "/orders/123"
OPEN_PREFIX = "/delivery/"  # its delivery service points at a closed port
INSTALL_TIMEOUT_S = 300


def source_dir() -> Path:
    """Where the peer's sources are: ``SEED_PEER_DIR`` or the default beside the checkout."""
    return Path(os.environ.get("SEED_PEER_DIR") or DEFAULT_DIR)


def prepare(source: Path) -> tuple[Path | None, str]:
    """Copy and install the peer; return its folder, or None and the reason it cannot run."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return None, "node and npm are not installed (apt-get install nodejs npm)"
    files = sorted(p for p in source.glob("*") if p.is_file()) if source.is_dir() else []
    if not any(p.name == "gateway.js" for p in files):
        return None, f"no gateway.js in {source} (set SEED_PEER_DIR)"
    digest = hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in files)).hexdigest()[:12]
    target = Path(tempfile.gettempdir()) / f"gateway-bench-peer-{digest}"
    if (target / "node_modules" / ".installed").exists():
        return target, ""
    target.mkdir(parents=True, exist_ok=True)
    for path in files:
        shutil.copyfile(path, target / path.name)
    try:
        done = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=target,
                              capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None, f"npm install did not finish within {INSTALL_TIMEOUT_S} s"
    if done.returncode != 0:
        return None, f"npm install failed: {(done.stderr or done.stdout).strip()[-300:]}"
    (target / "node_modules" / ".installed").touch()
    return target, ""


def peer_server(folder: Path, log_dir: Path, upstream_url: str, redis_url: str, workers: int) -> Server:
    """The peer on a free port: 2 cluster workers, the benchmark's upstream and Redis."""
    port = free_port()
    env = {**base_env(), "PORT": str(port), "WORKERS": str(workers), "REDIS_URL": redis_url,
           "ORDER_SERVICE_URL": upstream_url, "DELIVERY_SERVICE_URL": f"http://127.0.0.1:{free_port()}",
           "AUTH_SERVICE_URL": upstream_url, "RESTAURANT_SERVICE_URL": upstream_url}
    node = shutil.which("node") or "node"
    return Server("seed-peer", [node, str(folder / "gateway.js")], env, log_dir, port)  # node_modules beside it
