"""The shared breaker's Lua scripts (``<name>.lua`` beside this module), run with keys and arguments by name.

Each script's header declares what it takes, one line a name::

    -- KEYS.state              the breaker's state hash
    -- ARGV.now                the scripts' clock ('' for Redis's TIME; tests drive it)

and its body reads them as ``KEY.state`` and ``ARG.now``: :class:`LuaScript` puts a ``KEY`` and an
``ARG`` table built from those lines in front of the functions of ``prelude.lua`` and the script, and
takes the values from Python as mappings by the same names. Nobody counts positions; a script
that reads a name it does not declare, or declares one it never reads, does not load.

Every key of one service's breaker is made by :func:`breaker_keys`, under one hash tag ``{name}``,
so a script's keys always share one cluster slot; and a script touches no key but those it declares
(the rolling window is one hash, never keys built in Lua), as a Redis Cluster requires.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.redis.link import RedisLink

HERE = Path(__file__).parent
NAMES = ("before", "after", "confirm", "snapshot", "force", "held", "told")
LuaValue = str | int | float | bool | None

_DECLARED = re.compile(r"^-- (KEYS|ARGV)\.([a-z_][a-z0-9_]*) ", re.MULTILINE)
_READ = re.compile(r"\b(KEY|ARG)\.([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class BreakerKeys:
    """The Redis keys of one service's breaker (see ``gateway.breaker.shared`` for what each holds)."""

    state: str
    totals: str
    lat: str
    window: str  # the rolling window: one hash, fields <bucket>:c, :f, :t, :r, :s and last

    def by_name(self) -> dict[str, str]:
        """The keys a script may declare (``KEYS.state``...), by name."""
        return {"state": self.state, "totals": self.totals, "lat": self.lat, "window": self.window}


def breaker_keys(link: RedisLink, service: str) -> BreakerKeys:
    """Every key of ``service``'s breaker: ``<prefix>cb:{service}:...``, one hash slot."""
    tag = "{" + service + "}"
    return BreakerKeys(state=link.key("cb", tag, "state"), totals=link.key("cb", tag, "totals"),
                       lat=link.key("cb", tag, "lat"), window=link.key("cb", tag, "w"))


def forced_channel(link: RedisLink) -> str:
    """The pub/sub channel on which a forced state is announced (the service's name is the message)."""
    return link.key("cb", "forced")


def lua_text(value: LuaValue) -> str:
    """How a value reaches a script: text; a flag as 1 or 0, a float exactly (``repr``), None as ''."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return repr(value) if isinstance(value, float) else str(value)


@functools.cache
def compiled(name: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """The text of ``<name>.lua`` as Redis runs it, with the key and argument names it declares, in order."""
    body = (HERE / f"{name}.lua").read_text(encoding="utf-8")
    declared = _DECLARED.findall(body)
    keys = tuple(n for kind, n in declared if kind == "KEYS")
    args = tuple(n for kind, n in declared if kind == "ARGV")
    read = {(kind + ("S" if kind == "KEY" else "V"), n) for kind, n in _READ.findall(body)}
    if read != set(declared) or len(set(declared)) != len(declared):
        unread = sorted(f"{k}.{n}" for k, n in set(declared) - read)
        undeclared = sorted(f"{k}.{n}" for k, n in read - set(declared))
        raise ValueError(f"{name}.lua: declared but never read {unread}, read but not declared {undeclared}, "
                         "or declared twice")
    table = "local {} = {{{}}}\n".format
    binding = (table("KEY", ", ".join(f"{n} = KEYS[{i}]" for i, n in enumerate(keys, 1)))
               + table("ARG", ", ".join(f"{n} = ARGV[{i}]" for i, n in enumerate(args, 1))))
    prelude = (HERE / "prelude.lua").read_text(encoding="utf-8")
    return binding + prelude + body, keys, args


class LuaScript:
    """One script registered with a Redis client: EVALSHA, loaded again if Redis has forgotten it."""

    def __init__(self, link: RedisLink, name: str) -> None:
        text, self.keys, self.args = compiled(name)
        self.name = name
        self._script = link.client.register_script(text)

    def __call__(self, client: Any, keys: Mapping[str, str], args: Mapping[str, LuaValue]) -> Any:
        """Run on ``client`` with ``keys`` and ``args`` by name; more may be given than the script takes."""
        try:
            key_list = [keys[n] for n in self.keys]
            arg_list = [lua_text(args[n]) for n in self.args]
        except KeyError as missing:
            raise TypeError(f"{self.name}.lua needs {missing.args[0]!r}") from None
        return self._script(keys=key_list, args=arg_list, client=client)


class BreakerScripts:
    """The shared breaker's scripts, registered once per Redis link."""

    def __init__(self, link: RedisLink) -> None:
        self.before = LuaScript(link, "before")
        self.after = LuaScript(link, "after")
        self.confirm = LuaScript(link, "confirm")
        self.snapshot = LuaScript(link, "snapshot")
        self.force = LuaScript(link, "force")
        self.held = LuaScript(link, "held")
        self.told = LuaScript(link, "told")
