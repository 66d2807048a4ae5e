"""The lighter lease of ``gateway.redis.pool``: a pooled connection with anything left to read is never reused.

Run in a subprocess per mode: under gevent, as in a worker (the one-peek check on the OS socket), and
without it (redis-py's own check, since a blocking socket cannot be peeked at without waiting).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

LEASES = r"""
import sys
if sys.argv[2] == "gevent":
    from gevent import monkey
    monkey.patch_all()
import select
import redis
from gateway.redis.link import RedisLink
from gateway.redis.pool import LeanBlockingPool

link = RedisLink(sys.argv[1], "gw-pool-test:")
client, pool = link.client, link.client.connection_pool
assert isinstance(pool, LeanBlockingPool), type(pool)
checks = []
own_check = redis.Connection.can_read
redis.Connection.can_read = lambda self, *a, **k: checks.append(self) or own_check(self, *a, **k)
original_select = select.select if sys.argv[2] != "gevent" else monkey.get_original("select", "select")


def readable(connection):
    # Await the bytes with the OS's own select (no switch to anything else meanwhile).
    sock = getattr(connection._sock, "_sock", connection._sock)
    assert original_select([sock], [], [], 5.0)[0], "nothing arrived"


client.set("gw-pool-test:mine", "mine")
client.set("gw-pool-test:other", "other")
one = pool.get_connection()
first = one._sock
pool.release(one)
assert client.get("gw-pool-test:mine") == b"mine"
assert one._sock is first, "a clean connection is reused as it is"

# A reply left unread on a pooled connection (as a command cut short would leave it) ...
dirty = pool.get_connection()
dirty.send_command("GET", "gw-pool-test:other")
readable(dirty)
pool.release(dirty)
# ... never answers the next command: the connection is made again.
assert client.get("gw-pool-test:mine") == b"mine"
assert dirty._sock is not None and dirty._sock is not first, "the dirty connection was made again"

# A connection the server closed is made again too.
gone = pool.get_connection()
gone.send_command("CLIENT", "ID")
victim = gone.read_response()
pool.release(gone)
client_of_its_own = redis.Redis.from_url(sys.argv[1])
client_of_its_own.client_kill_filter(_id=victim)
readable(gone)
assert client.get("gw-pool-test:mine") == b"mine"
assert int(client.client_id()) != victim

ours = [connection for connection in checks if connection in pool._connections]  # not client_of_its_own's
print("peek" if not ours else "redis-py's check")
"""


@pytest.mark.parametrize(("mode", "check"), [("gevent", "peek"), ("plain", "redis-py's check")])
def test_a_pooled_connection_with_anything_to_read_is_made_again(redis_server_session: Any, mode: str,
                                                                 check: str) -> None:
    done = subprocess.run([sys.executable, "-c", LEASES, redis_server_session.url, mode],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == check
