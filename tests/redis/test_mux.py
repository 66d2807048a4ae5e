"""The multiplexed connection of ``gateway.redis.mux``: every greenlet's commands on one connection, each reply its own.

Each test runs a short program under gevent in a subprocess (as in a worker: gevent's sockets in
place), against the session's throwaway Redis, and reads what it printed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

PRELUDE = r"""
import sys
from gevent import monkey
monkey.patch_all()
import gevent
import redis
from gateway.redis.mux import Multiplexer, available

url = sys.argv[1]
plain = redis.Redis.from_url(url)
pool = redis.ConnectionPool.from_url(url)


def connections_received():
    return int(plain.info("stats")["total_connections_received"])


def fresh(timeout=2.0):
    return Multiplexer(lambda: pool.connection_class(**pool.connection_kwargs), timeout)
"""


def run(redis_url: str, body: str, *more: object) -> list[str]:
    done = subprocess.run([sys.executable, "-c", PRELUDE + body, redis_url, *map(str, more)], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split()


def test_many_greenlets_share_one_connection_and_each_gets_its_own_reply(redis_server_session: Any) -> None:
    printed = run(redis_server_session.url, r"""
assert available()
mux = fresh()
before = connections_received()

def one(i):
    mux.call("SET", f"mux-test:{i}", f"value-{i}")
    return mux.call("GET", f"mux-test:{i}")

jobs = [gevent.spawn(one, i) for i in range(500)]
gevent.joinall(jobs, raise_error=True)
assert [j.value for j in jobs] == [f"value-{i}".encode() for i in range(500)]
print(connections_received() - before)
""")
    assert printed == ["1"]


def test_a_caller_that_leaves_early_leaves_its_reply_to_nobody(redis_server_session: Any) -> None:
    printed = run(redis_server_session.url, r"""
mux = fresh()
mux.call("SET", "mux-test:mine", "mine")
try:
    with gevent.Timeout(0.05):
        mux.call("BLPOP", "mux-test:empty-list", 0.3)  # answered (nil) after the caller has gone
except gevent.Timeout:
    print("left")
print(mux.call("GET", "mux-test:mine").decode())  # its own reply, not the BLPOP's nil
""")
    assert printed == ["left", "mine"]


def test_a_connection_the_server_closes_fails_its_waiters_and_is_made_again(redis_server_session: Any) -> None:
    printed = run(redis_server_session.url, r"""
mux = fresh()
victim = mux.call("CLIENT", "ID")
waiting = gevent.spawn(mux.call, "BLPOP", "mux-test:never", 5)
gevent.sleep(0.1)
plain.client_kill_filter(_id=victim)
waiting.join(2)
print(type(waiting.exception).__name__)
print(int(mux.call("CLIENT", "ID")) != victim)
""")
    assert printed == ["ConnectionError", "True"]


def test_a_command_unanswered_past_the_timeout_fails_and_the_next_gets_a_new_connection(
        redis_server_session: Any) -> None:
    printed = run(redis_server_session.url, r"""
mux = fresh(timeout=0.2)
mux.call("SET", "mux-test:after", "after")
first = mux.call("CLIENT", "ID")
try:
    mux.call("BLPOP", "mux-test:never", 2)  # Redis holds the answer back for 2 s
except redis.TimeoutError:
    print("timeout")
print(mux.call("GET", "mux-test:after").decode(), int(mux.call("CLIENT", "ID")) != first)
""")
    assert printed == ["timeout", "after", "True"]


def test_error_replies_are_redis_pys_exceptions_and_a_large_command_is_sent_whole(redis_server_session: Any) -> None:
    printed = run(redis_server_session.url, r"""
mux = fresh()
for args in (("EVALSHA", "0" * 40, 0), ("NOT-A-COMMAND",)):
    try:
        mux.call(*args)
    except redis.ResponseError as exc:
        print(type(exc).__name__)
big = b"x" * (8 << 20)  # more than a socket takes at once: the rest goes when it has room
jobs = [gevent.spawn(mux.call, "SET", "mux-test:big", big), gevent.spawn(mux.call, "STRLEN", "mux-test:big")]
gevent.joinall(jobs, raise_error=True)
print(jobs[1].value == len(big))
""")
    assert printed == ["NoScriptError", "ResponseError", "True"]


def test_the_link_multiplexes_scripts_under_gevent_and_loads_a_script_redis_forgot(redis_server_session: Any) -> None:
    printed = run(redis_server_session.url, r"""
from gateway.cache.store import RedisStore
from gateway.redis.link import RedisLink

link = RedisLink(url, "mux-test:")
store = RedisStore(link)
store.put("k", "/k", "v", b"entry", 30.0)
print(store.get_variants("k") == [b"entry"], len(link._muxes))
plain.script_flush()
store.put("k", "/k", "v", b"again", 30.0)  # NOSCRIPT on the multiplexed call: redis-py loads and runs it
print(store.get_variants("k") == [b"again"])
""")
    assert printed == ["True", "1", "True"]


def test_a_master_demoted_to_a_replica_drops_the_multiplexed_connection(redis_server: Any,
                                                                        redis_server_session: Any) -> None:
    printed = run(redis_server.url, r"""
from gateway.cache.store import RedisStore
from gateway.redis.link import RedisLink, StoreUnavailable

link = RedisLink(url, "mux-test:", skip_seconds=0.0)
store = RedisStore(link)
store.put("k", "/k", "v", b"entry", 30.0)
first = link._muxes[None]._raw
plain.replicaof("127.0.0.1", int(sys.argv[2]))  # what Sentinel does to a master it has replaced
try:
    store.put("k", "/k", "v", b"again", 30.0)
except StoreUnavailable as exc:
    print(type(exc.__cause__).__name__)
print(link._muxes[None]._raw is None)  # dropped: the next call connects (and, on Sentinel, asks again)
plain.replicaof("no", "one")
store.put("k", "/k", "v", b"third", 30.0)
print(store.get_variants("k") == [b"third"], link._muxes[None]._raw is not first)
""", redis_server_session.port)
    assert printed == ["ReadOnlyError", "True", "True", "True"]
