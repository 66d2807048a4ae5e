"""The ``GATEWAY_CONFIG`` file (YAML or JSON): its ``services`` mapping, and where in it each key and value is.

An error about a service's entry is told at the file, line and column of the key or value it is
about (``at gateway.yaml:4:7``), by :func:`locate`.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.config.values import ConfigError, unknown_key

Positions = dict[tuple[str, ...], tuple[int, int]]


def positions_in(text: str) -> Positions:
    """Line and column (1-based) of every key and value in a YAML (or JSON) text, by key path.

    A key's own position is stored under its path plus ``"<key>"``. JSON is read through the YAML
    composer too: it only serves to point at places, the values come from ``json``.
    """
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    found: Positions = {}

    def walk(node: Any, path: tuple[str, ...]) -> None:
        found.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                here = (*path, str(key.value))
                found[(*here, "<key>")] = (key.start_mark.line + 1, key.start_mark.column + 1)
                walk(value, here)

    if root is not None:
        walk(root, ())
    return found


def _parse(path: str, text: str) -> Any:
    """The file's data (JSON if its name ends in ``.json``, else YAML), or a ConfigError at the place it fails."""
    if path.endswith(".json"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError("GATEWAY_CONFIG", f"{path} does not parse: {exc.msg}",
                              f"at {path}:{exc.lineno}:{exc.colno}") from None
    import yaml  # only needed when a YAML file is used

    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"at {path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else None
        problem = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        raise ConfigError("GATEWAY_CONFIG", f"{path} does not parse: {problem}", where) from None
    except yaml.YAMLError as exc:
        raise ConfigError("GATEWAY_CONFIG", f"{path} does not parse: {exc}".splitlines()[0]) from None


def read_config_file(path: str) -> tuple[dict[str, Any], Positions]:
    """The ``services`` mapping of a GATEWAY_CONFIG file and where each of its keys and values is."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise ConfigError("GATEWAY_CONFIG", f"cannot read {path}: {reason}") from None
    data = _parse(path, text)
    positions = positions_in(text)

    def at(*keys: str) -> str | None:
        spot = positions.get(keys)
        return f"at {path}:{spot[0]}:{spot[1]}" if spot else None

    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("GATEWAY_CONFIG", "the file is a mapping with one key, 'services'", at())
    extra = sorted(map(str, set(data) - {"services"}))
    if extra:
        error = unknown_key("GATEWAY_CONFIG", extra[0], {"services"})
        raise ConfigError("GATEWAY_CONFIG", error.message, at(extra[0], "<key>"))
    services = data.get("services") or {}
    if not isinstance(services, dict):
        raise ConfigError("GATEWAY_CONFIG", "'services' must be a mapping of name to settings", at("services"))
    return services, positions


def locate(error: ConfigError, name: str, positions: Positions, path: str) -> ConfigError:
    """The same error, told where in the GATEWAY_CONFIG file the offending key or value of service ``name`` is."""
    head = f"GATEWAY_CONFIG services.{name}"
    if error.where or not error.setting.startswith(head):
        return error
    rest = [part for part in error.setting[len(head):].split(".") if part]
    keys: tuple[str, ...] = ("services", name, *rest)
    if error.message.startswith("unknown key"):
        keys = (*keys, "<key>")
    while keys and keys not in positions:
        keys = keys[:-1]
    spot = positions.get(keys)
    if spot is None:
        return error
    return ConfigError(error.setting, error.message, f"at {path}:{spot[0]}:{spot[1]}")
