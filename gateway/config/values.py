"""One raw setting read and checked: the error that names it, the readers, and a setting declared once.

A setting is a dataclass field made by :func:`option`: its default and the reader of a raw value
(and, for a gateway-wide one, its environment variable). :func:`read_options` reads every such field
of a dataclass from one source, so a new setting is that one field::

    @dataclass(frozen=True)
    class BreakerSettings:
        reset_timeout: float = option(30.0, number, env="CB_RESET_TIMEOUT")

is read from ``CB_RESET_TIMEOUT``, from a service's ``breaker: {reset_timeout: ...}``, validated by
``number`` with errors naming whichever it came from, and listed with every other one.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, field, fields
from typing import Any
from urllib.parse import SplitResult, urlsplit

Reader = Callable[[str, Any], Any]  # (the setting's name for errors, the raw value) -> the value

RESERVED_PREFIXES = ("/health", "/ready", "/stats", "/metrics", "/dashboard", "/admin")


class ConfigError(ValueError):
    """A setting has a value the gateway cannot start with (``where``: file, line and column, if known)."""

    def __init__(self, setting: str, message: str, where: str | None = None) -> None:
        super().__init__(f"invalid setting {setting}: {message}" + (f" ({where})" if where else ""))
        self.setting = setting
        self.message = message
        self.where = where


def unknown_key(setting: str, key: Any, valid: Iterable[str]) -> ConfigError:
    """An unknown key, with the nearest valid one suggested when there is a close one."""
    near = difflib.get_close_matches(str(key), sorted(valid), n=1, cutoff=0.6)
    hint = f"; did you mean {near[0]!r}?" if near else f"; valid keys: {', '.join(sorted(valid))}"
    return ConfigError(setting, f"unknown key {str(key)!r}{hint}")


def check_keys(setting: str, raw: Mapping[Any, Any], valid: Iterable[str]) -> None:
    """Raise :func:`unknown_key` for the first key of ``raw`` (alphabetically) that is not ``valid``."""
    bad = sorted(map(str, set(raw) - set(valid)))
    if bad:
        raise unknown_key(f"{setting}.{bad[0]}", bad[0], valid)


def option(default: Any, read: Reader, *, env: str | None = None) -> Any:
    """A dataclass field declared as a setting: its default, its reader, its environment variable if any.

    ``default`` may be ``dataclasses.MISSING`` for a field every instance must be given.
    """
    return field(default=default, metadata={"read": read, "env": env})


def option_names(cls: type) -> set[str]:
    """The fields of dataclass ``cls`` declared with :func:`option` (the keys a config mapping may use)."""
    return {f.name for f in fields(cls) if "read" in f.metadata}


def read_options(cls: type, source: Mapping[str, Any], where: str | None = None) -> dict[str, Any]:
    """Read the options of dataclass ``cls`` that ``source`` gives a value for, by field name.

    ``where`` None: ``source`` is the environment and each option is found under its ``env`` name
    (those without one are not set there). Otherwise ``source`` is a mapping of ``GATEWAY_CONFIG``,
    each option under its field name, an error naming ``<where>.<name>``.
    """
    values: dict[str, Any] = {}
    for f in fields(cls):
        read = f.metadata.get("read")
        key = f.metadata.get("env") if where is None else f.name
        if read is not None and key is not None and key in source:
            values[f.name] = read(key if where is None else f"{where}.{key}", source[key])
    return values


def read_group(setting: str, raw: Any, cls: type) -> dict[str, Any]:
    """A mapping of ``cls``'s options (such as a service's ``breaker``): checked keys, read values."""
    if not isinstance(raw, Mapping):
        raise ConfigError(setting, "must be a mapping")
    check_keys(setting, raw, option_names(cls))
    return read_options(cls, raw, setting)


def number(setting: str, raw: Any, *, minimum: float = 0.0, integer: bool = False) -> float:
    """A finite number of at least ``minimum`` (0 by default); ``integer``: a whole one."""
    if isinstance(raw, bool):
        raise ConfigError(setting, f"expected a number, got {raw!r}")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ConfigError(setting, f"expected a number, got {raw!r}") from None
    if not math.isfinite(value) or value < minimum:
        raise ConfigError(setting, f"must be a number >= {minimum:g}, got {raw!r}")
    if integer and value != int(value):
        raise ConfigError(setting, f"expected a whole number, got {raw!r}")
    return int(value) if integer else value


def whole(setting: str, raw: Any) -> int:
    """A whole number, 0 or more."""
    return int(number(setting, raw, integer=True))


def count(setting: str, raw: Any) -> int:
    """A whole number, 1 or more."""
    return int(number(setting, raw, minimum=1, integer=True))


def positive(setting: str, raw: Any) -> float:
    """A number greater than 0 (a duration that cannot be nothing)."""
    value = number(setting, raw)
    if value <= 0:
        raise ConfigError(setting, f"must be greater than 0, got {raw!r}")
    return value


def percentage(setting: str, raw: Any) -> float:
    """A number from 0 to 100."""
    value = number(setting, raw)
    if value > 100:
        raise ConfigError(setting, f"is a percentage (0-100), got {value:g}")
    return value


def switch(setting: str, raw: Any) -> bool:
    """true/false, also as 1/0, yes/no, on/off."""
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(setting, f"expected true or false, got {raw!r}")


def text(setting: str, raw: Any) -> str:
    """Any text, as given."""
    return str(raw)


def split_url(setting: str, raw: Any, schemes: tuple[str, ...]) -> tuple[str, SplitResult]:
    """A URL with one of ``schemes`` and a host (stripped text, and its parts)."""
    stripped = str(raw).strip()
    try:
        parts = urlsplit(stripped)
        port = parts.port
    except ValueError:
        raise ConfigError(setting, f"malformed URL {raw!r}") from None
    if parts.scheme not in schemes or not parts.hostname:
        raise ConfigError(setting, f"expected a {'/'.join(schemes)} URL, got {raw!r}")
    if port == 0 or parts.fragment:
        raise ConfigError(setting, f"malformed URL {raw!r}")
    return stripped, parts


def service_url(setting: str, raw: Any) -> str:
    """A service's http(s) URL, without query or credentials, its trailing slashes dropped."""
    stripped, parts = split_url(setting, raw, ("http", "https"))
    if parts.query or parts.username:
        raise ConfigError(setting, f"a service URL takes no query or credentials, got {raw!r}")
    return stripped.rstrip("/")


def service_prefix(setting: str, raw: Any) -> str:
    """A service's path prefix: ``/name`` (more segments allowed), never one of the gateway's own paths."""
    stripped = str(raw).strip()
    if not stripped.startswith("/") or stripped == "/" or stripped.endswith("/") or "//" in stripped:
        raise ConfigError(setting, f"a prefix looks like /name, got {raw!r}")
    if any(not (c.isalnum() or c in "-._~/") for c in stripped):
        raise ConfigError(setting, f"a prefix may use letters, digits and -._~/ only, got {raw!r}")
    for reserved in RESERVED_PREFIXES:
        if stripped == reserved or stripped.startswith(reserved + "/"):
            raise ConfigError(setting, f"{reserved} is the gateway's own path")
    return stripped


REQUIRED = MISSING  # the default of an option every instance must be given
