"""Lua scripts kept as ``.lua`` files beside their caller, and called with their KEYS and ARGV by name.

Each file opens with its interface, one line for each list, then a line per name saying what it is::

    -- KEYS: entry group lock
    -- ARGV: variant blob ttl_ms channel message token

A last KEYS name ending in ``...`` takes a list (every remaining key); ``-- ARGV: (none)`` declares no
arguments. The names are read from the file, so they are written once: a call that leaves one out or
adds another fails at once with ``TypeError`` instead of shifting every argument after it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.redis.link import RedisLink

Value = str | bytes | int | float
Named = Value | Sequence[str]
"""A key (a str, or for a ``name...`` key a list of them) or an argument (one value)."""

_INTERFACE = re.compile(r"^-- (KEYS|ARGV): (.*)$", re.MULTILINE)


class LuaScript:
    """One script's source and the names of its KEYS and ARGV, read once (at import, by its caller)."""

    def __init__(self, path: Path) -> None:
        self.name = path.stem
        self.source = path.read_text(encoding="utf-8")
        declared = {kind: line.split() for kind, line in _INTERFACE.findall(self.source)}
        if "KEYS" not in declared or "ARGV" not in declared:
            raise ValueError(f"{path.name} does not declare its interface (-- KEYS: ... and -- ARGV: ...)")
        self.keys: tuple[str, ...] = tuple(declared["KEYS"])
        self.args: tuple[str, ...] = tuple(n for n in declared["ARGV"] if n != "(none)")

    @classmethod
    def beside(cls, module_file: str, name: str) -> LuaScript:
        """The script ``<name>.lua`` in the folder of the module ``module_file`` (pass ``__file__``)."""
        return cls(Path(module_file).with_name(name + ".lua"))

    def arguments(self, named: dict[str, Named]) -> tuple[list[str], list[Value]]:
        """KEYS and ARGV in the script's order, from ``named``; TypeError for a name missing or unknown."""
        expected = [n.removesuffix("...") for n in (*self.keys, *self.args)]
        if sorted(named) != sorted(expected):
            missing, unknown = set(expected) - set(named), set(named) - set(expected)
            raise TypeError(f"{self.name}.lua: missing {sorted(missing)}, unknown {sorted(unknown)}")
        keys: list[str] = []
        for name in self.keys:
            value = named[name.removesuffix("...")]
            if name.endswith("..."):
                if isinstance(value, str | bytes | int | float):
                    raise TypeError(f"{name} takes a list of keys, not one")
                keys.extend(value)
            elif isinstance(value, str):
                keys.append(value)
            else:
                raise TypeError(f"{name} is a key: one str")
        return keys, [_one(name, named[name]) for name in self.args]

    def register(self, link: RedisLink) -> Callable[..., Any]:
        """The script on ``link``'s Redis (sent by SHA, loaded when missing), to call as ``run(**names)``
        (``always`` as for :meth:`RedisLink.run`); it answers whatever the script returns, and raises
        ``StoreUnavailable`` when Redis cannot be used."""
        script = link.client.register_script(self.source)

        def run(always: bool = False, **named: Named) -> Any:
            keys, args = self.arguments(named)
            return link.evalsha(script, keys, args, always=always)

        return run


def _one(name: str, value: Named) -> Value:
    if not isinstance(value, str | bytes | int | float):
        raise TypeError(f"{name} takes one value, not a list")
    return value
