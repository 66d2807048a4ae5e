"""Lua scripts beside their caller: their interface read from the file, and called by name only."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from gateway.cache import store
from gateway.cache.lua import LuaScript
from gateway.redis.link import RedisLink


def script(tmp_path: Path, text: str) -> LuaScript:
    path = tmp_path / "demo.lua"
    path.write_text(text)
    return LuaScript(path)


DEMO = "-- Demo.\n--\n-- KEYS: first rest...\n--   first  a key\n-- ARGV: a b\n--   a  one\nreturn 1\n"


def test_the_interface_is_read_from_the_header(tmp_path: Path) -> None:
    demo = script(tmp_path, DEMO)
    assert (demo.name, demo.keys, demo.args) == ("demo", ("first", "rest..."), ("a", "b"))
    assert demo.arguments({"b": 2, "rest": ["k2", "k3"], "a": b"1", "first": "k1"}) == (["k1", "k2", "k3"], [b"1", 2])


@pytest.mark.parametrize("named, message", [
    ({"first": "k", "rest": [], "a": 1}, "missing ['b']"),
    ({"first": "k", "rest": [], "a": 1, "b": 2, "c": 3}, "unknown ['c']"),
    ({"first": ["k"], "rest": [], "a": 1, "b": 2}, "first is a key"),
    ({"first": "k", "rest": "k2", "a": 1, "b": 2}, "rest... takes a list"),
    ({"first": "k", "rest": [], "a": [1], "b": 2}, "a takes one value"),
])
def test_a_call_that_does_not_name_exactly_the_interface_fails(tmp_path: Path, named: dict[str, Any],
                                                               message: str) -> None:
    with pytest.raises(TypeError, match=re.escape(message)):
        script(tmp_path, DEMO).arguments(named)


def test_a_script_without_its_interface_is_refused_at_load(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="interface"):
        script(tmp_path, "-- KEYS: a\nreturn 1\n")
    assert script(tmp_path, "-- KEYS: a\n-- ARGV: (none)\n").args == ()


@pytest.mark.parametrize("loaded", [store.PUT, store.LOCK_AND_READ, store.DROP, store.RELEASE], ids=lambda s: s.name)
def test_each_store_script_names_in_lua_what_it_declares(loaded: LuaScript) -> None:
    """The file beside store.py declares its interface and reads KEYS and ARGV only into those names, in order."""
    assert Path(store.__file__).with_name(loaded.name + ".lua").read_text() == loaded.source
    if loaded.keys[-1].endswith("..."):
        assert loaded.keys == ("groups...",) and "ipairs(KEYS)" in loaded.source
        return
    keys = re.search(r"^local (.+) = (KEYS\[1\].*)$", loaded.source, re.M)
    assert keys is not None and tuple(keys.group(1).split(", ")) == loaded.keys
    assert keys.group(2).split(", ") == [f"KEYS[{i}]" for i in range(1, len(loaded.keys) + 1)]
    args = re.search(r"^local (.+) = (.*ARGV\[1\].*)$", loaded.source, re.M)
    assert args is not None and len(args.group(1).split(", ")) == len(loaded.args)
    assert re.findall(r"ARGV\[(\d)\]", args.group(2)) == [str(i) for i in range(1, len(loaded.args) + 1)]
    assert len(re.findall(r"KEYS\[|ARGV\[", loaded.source)) == len(loaded.keys) + len(loaded.args)


def test_every_lua_file_beside_the_store_is_one_it_loads() -> None:
    beside = {p.stem for p in Path(store.__file__).parent.glob("*.lua")}
    assert beside == {s.name for s in (store.PUT, store.LOCK_AND_READ, store.READ_OR_LOCK, store.READ_MISS, store.DROP,
                                       store.RELEASE)}


def test_a_registered_script_runs_by_name(redis_server_session: Any) -> None:
    client = redis_server_session.client()
    run = store.RELEASE.register(RedisLink(redis_server_session.url, "lua-test:"))
    client.set("lua-test:lock", "mine")
    assert run(lock="lua-test:lock", token="theirs") == 0 and client.get("lua-test:lock") == b"mine"
    assert run(lock="lua-test:lock", token="mine") == 1 and client.get("lua-test:lock") is None
