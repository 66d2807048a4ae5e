"""The environment as the settings read it, and the readers of the gateway-wide variables (PORT, BIND...).

Which variable sets which setting, and its default, is declared once on the settings' own fields
(``Settings`` in ``gateway.config.settings``, ``BreakerSettings`` in ``gateway.config.services``).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from typing import Any

from gateway.config.values import ConfigError, number, split_url, whole

LOG_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
LOG_FORMATS = ("json", "text")
HISTORY_MAX_SECONDS = 60
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*")


def environment(environ: Mapping[str, str] | None, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """``environ`` (the process's by default), then ``overrides`` but its ``services``; blank means unset."""
    given: dict[str, Any] = dict(os.environ if environ is None else environ)
    if overrides:
        given.update({name: value for name, value in overrides.items() if name != "services"})
    return {name: value for name, value in given.items()
            if value is not None and not (isinstance(value, str) and value.strip() == "")}


def tcp_port(setting: str, raw: Any) -> int:
    """A TCP port, 1 to 65535."""
    value = whole(setting, raw)
    if not 0 < value < 65536:
        raise ConfigError(setting, f"expected 1-65535, got {raw!r}")
    return value


def bind_address(setting: str, raw: Any) -> str:
    """An IPv4 or IPv6 address (``[::1]`` too) or a host name to listen on, without the port."""
    address = str(raw).strip()
    if address.startswith("[") and address.endswith("]"):
        address = address[1:-1]
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        pass
    if _HOST_NAME.fullmatch(address):
        return address.lower()
    raise ConfigError(setting, f"expected an IP address or host name to listen on (the port is PORT), got {raw!r}")


def workers(setting: str, raw: Any) -> int:
    """A number of worker processes, at least one."""
    value = whole(setting, raw)
    if value < 1:
        raise ConfigError(setting, "must be at least 1")
    return value


def redis_server_url(setting: str, raw: Any) -> str:
    """A ``redis://``, ``rediss://`` or ``unix://`` URL, kept as given (credentials and options included)."""
    return split_url(setting, raw, ("redis", "rediss", "unix"))[0]


def addresses(setting: str, raw: Any) -> tuple[str, ...]:
    """A comma-separated list (``127.0.0.1,::1``), blanks dropped."""
    return tuple(item.strip() for item in str(raw).split(",") if item.strip())


def level_name(setting: str, raw: Any) -> str:
    """One of Python's level names, any case."""
    level = str(raw).upper()
    if level not in LOG_LEVELS:
        raise ConfigError(setting, f"expected one of {', '.join(sorted(LOG_LEVELS))}, got {raw!r}")
    return level


def format_name(setting: str, raw: Any) -> str:
    """``json`` or ``text``, any case."""
    chosen = str(raw).lower()
    if chosen not in LOG_FORMATS:
        raise ConfigError(setting, f"expected json or text, got {raw!r}")
    return chosen


def existing_file(setting: str, raw: Any) -> str:
    """The path of a file that exists (a CA bundle)."""
    if not os.path.isfile(str(raw)):
        raise ConfigError(setting, f"no such file {raw!r}")
    return str(raw)


def history_interval(setting: str, raw: Any) -> float:
    """Seconds between two points of the stats history: 1 to 60."""
    value = number(setting, raw, minimum=1)
    if value > HISTORY_MAX_SECONDS:
        raise ConfigError(setting, f"at most {HISTORY_MAX_SECONDS} seconds, got {raw!r}")
    return value
