"""The shared breaker's Lua scripts: keys and arguments by name, checked at load, every key in one slot."""

from __future__ import annotations

import dataclasses
import itertools
import time
from pathlib import Path
from typing import Any

import pytest
from redis.crc import key_slot

from gateway.breaker import scripts
from gateway.breaker.core import CircuitBreaker
from gateway.breaker.scripts import NAMES, LuaScript, breaker_keys, compiled, lua_text
from gateway.breaker.shared import SharedBreaker
from gateway.config.settings import BreakerSettings, ServiceConfig
from gateway.config.values import count, option
from gateway.redis.link import RedisLink

_names = itertools.count()
UNREACHABLE = "redis://127.0.0.1:9/0"  # registering a script does not connect


@pytest.mark.parametrize("name", NAMES)
def test_each_script_reads_exactly_what_its_header_declares(name: str) -> None:
    text, keys, args = compiled(name)
    assert keys and args[0] == "now"  # every script runs on the scripts' clock
    binding = text.splitlines()[:2]
    assert binding[0] == "local KEY = {" + ", ".join(f"{k} = KEYS[{i}]" for i, k in enumerate(keys, 1)) + "}"
    assert binding[1].startswith("local ARG = {now = ARGV[1], ")


def _script_file(folder: Path, body: str) -> str:
    name = f"probe{next(_names)}"
    (folder / f"{name}.lua").write_text(body)
    return name


@pytest.mark.parametrize(("body", "complaint"), [
    ("-- KEYS.state  the state\n-- ARGV.now  clock\nreturn {KEY.state, ARG.now, ARG.nwo}\n", "ARGV.nwo"),
    ("-- KEYS.state  the state\n-- ARGV.now  clock\n-- ARGV.spare  unused\nreturn {KEY.state, ARG.now}\n",
     "ARGV.spare"),
    ("-- KEYS.state  the state\n-- ARGV.now  clock\nreturn {KEY.totals, KEY.state, ARG.now}\n", "KEYS.totals"),
])
def test_a_name_read_but_not_declared_or_declared_but_never_read_does_not_load(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str, complaint: str) -> None:
    (tmp_path / "prelude.lua").write_text("")
    monkeypatch.setattr(scripts, "HERE", tmp_path)
    with pytest.raises(ValueError, match=complaint):
        compiled(_script_file(tmp_path, body))


def test_a_missing_argument_is_named_before_anything_is_sent() -> None:
    link = RedisLink(UNREACHABLE, "t:")
    confirm = LuaScript(link, "confirm")
    with pytest.raises(TypeError, match="confirm.lua needs 'lease_seconds'"):
        confirm(None, {"state": "k"}, {"now": None, "call_id": "1", "not_after": None})
    link.close()


@pytest.mark.parametrize(("value", "sent"), [(None, ""), (True, "1"), (False, "0"), (3, "3"), (0.1, "0.1"),
                                             (1_700_000_000.25, "1700000000.25"), ("a b", "a b")])
def test_values_reach_the_scripts_as_text(value: Any, sent: str) -> None:
    assert lua_text(value) == sent


def test_arguments_arrive_by_name(redis_server_session: Any) -> None:
    link = RedisLink(redis_server_session.url, f"ts{time.monotonic_ns()}:")
    keys = breaker_keys(link, "svc")
    client = redis_server_session.client()
    client.hset(keys.state, mapping={"state": "HALF_OPEN", "lease": "1", "lease_by": "call-7"})
    confirm = LuaScript(link, "confirm")
    args = {"now": 100.0, "call_id": "call-7", "lease_seconds": 11.0, "not_after": None, "unused": "ignored"}
    assert confirm(link.client, keys.by_name(), args) == [b"ok", b"100"]
    assert client.hget(keys.state, "lease") == b"111"
    assert confirm(link.client, keys.by_name(), {**args, "call_id": "call-8"})[0] == b"lost"
    link.close()


def test_every_key_of_a_breaker_shares_one_cluster_slot() -> None:
    link = RedisLink(UNREACHABLE, "gw:")
    keys = breaker_keys(link, "order-service")
    every = list(keys.by_name().values())
    assert len(every) == 4 and {key_slot(key.encode()) for key in every} == {key_slot(b"{order-service}")}
    assert keys.state == "gw:cb:{order-service}:state" and keys.window == "gw:cb:{order-service}:w"
    link.close()


@dataclasses.dataclass(frozen=True)
class GrownBreakerSettings(BreakerSettings):
    """A breaker setting added as one field, as a new one would be."""

    half_open_calls: int = option(1, count, env="CB_HALF_OPEN_CALLS")


def test_every_breaker_setting_reaches_the_scripts_by_its_name() -> None:
    link = RedisLink(UNREACHABLE, "gw:")
    service = ServiceConfig(name="svc", prefix="/svc", url="http://127.0.0.1:9",
                            breaker=GrownBreakerSettings(reset_timeout=1.5, half_open_calls=2))
    breaker = SharedBreaker(service, link, scripts.BreakerScripts(link), CircuitBreaker(service), [])
    standing = breaker._standing
    assert {f.name for f in dataclasses.fields(GrownBreakerSettings)} <= set(standing)
    assert (standing["half_open_calls"], standing["reset_timeout"]) == (2, 1.5)  # read in Lua as ARG.half_open_calls
    link.close()
