"""The GATEWAY_CONFIG file: YAML or JSON, its one key, and every error told at its file, line and column."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.config.file import locate, positions_in, read_config_file
from gateway.config.settings import ConfigError, load_settings


def test_positions_of_keys_and_values() -> None:
    found = positions_in("services:\n  a:\n    timeout: 5\n")
    assert found[("services", "a", "timeout")] == (3, 14)
    assert found[("services", "a", "timeout", "<key>")] == (3, 5)
    assert positions_in("services: [\n") == {}


def test_an_error_is_located_at_its_key_or_the_nearest_place_known() -> None:
    positions = positions_in("services:\n  a:\n    breaker: {x: 1}\n")
    unknown = ConfigError("GATEWAY_CONFIG services.a.breaker.x", "unknown key 'x'")
    assert locate(unknown, "a", positions, "g.yaml").where == "at g.yaml:3:15"
    deeper = ConfigError("GATEWAY_CONFIG services.a.breaker.x.y", "must be a number")
    assert locate(deeper, "a", positions, "g.yaml").where == "at g.yaml:3:18"
    other = ConfigError("CACHE_TTL", "expected a number")
    assert locate(other, "a", positions, "g.yaml") is other


def test_an_empty_file_has_no_services(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("")
    assert read_config_file(str(path)) == ({}, {})


def test_gateway_config_json(tmp_path) -> None:
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps({"services": {"auth-service": {"cache": True}}}))
    assert load_settings({"GATEWAY_CONFIG": str(path)}).services["auth-service"].cache is True


@pytest.mark.parametrize(
    ("text", "setting_part"),
    [
        ("services:\n  order-service:\n    cache_tll: 60\n", "cache_tll"),
        ("services:\n  x-service:\n    prefix: /x\n", "x-service"),
        ("services:\n  x-service:\n    prefix: /health\n    url: http://127.0.0.1:1\n", "prefix"),
        ("services:\n  x-service:\n    prefix: /orders\n    url: http://127.0.0.1:1\n", "prefix"),
        ("services:\n  order-service:\n    breaker: {thresold: 1}\n", "thresold"),
        ("services:\n  order-service:\n    timeout: -1\n", "timeout"),
        ("other: 1\n", "GATEWAY_CONFIG"),
        ("services: [\n", "GATEWAY_CONFIG"),
    ],
)
def test_bad_gateway_config_is_named(tmp_path, text: str, setting_part: str) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings({"GATEWAY_CONFIG": str(path)})
    assert setting_part in caught.value.setting


@pytest.mark.parametrize(
    ("name", "text", "setting", "message", "where"),
    [
        ("gateway.yaml", "services:\n  order-service:\n    cache_tll: 60\n",
         "GATEWAY_CONFIG services.order-service.cache_tll", "did you mean 'cache_ttl'?", ":3:5"),
        ("gateway.yaml", "services:\n  order-service:\n    breaker:\n      reset_timout: 1\n",
         "GATEWAY_CONFIG services.order-service.breaker.reset_timout", "did you mean 'reset_timeout'?", ":4:7"),
        ("gateway.yaml", "services:\n  order-service:\n    health_check: {pth: /x}\n",
         "GATEWAY_CONFIG services.order-service.health_check.pth", "did you mean 'path'?", ":3:20"),
        ("gateway.yaml", "services:\n  order-service:\n    timeout: -1\n",
         "GATEWAY_CONFIG services.order-service.timeout", "must be", ":3:14"),
        ("gateway.yaml", "services:\n  x-service:\n    prefix: /orders\n    url: http://127.0.0.1:1\n",
         "GATEWAY_CONFIG services.x-service.prefix", "already used by order-service", ":3:13"),
        ("gateway.yaml", "service:\n  x: 1\n", "GATEWAY_CONFIG", "did you mean 'services'?", ":1:1"),
        ("gateway.yaml", "services:\n  a: [1,\n", "GATEWAY_CONFIG", "does not parse", ":3:1"),
        ("gateway.yaml", "services:\n\tx: 1\n", "GATEWAY_CONFIG", "does not parse", ":2:1"),
        ("gateway.json", '{"services": {"order-service": {"timeout": 0}}}',
         "GATEWAY_CONFIG services.order-service.timeout", "greater than 0", ":1:44"),
        ("gateway.json", '{"services": {"order-service": {"cach": true}}}',
         "GATEWAY_CONFIG services.order-service.cach", "did you mean 'cache'?", ":1:33"),
        ("gateway.json", '{"services": {"order-service": {"timeout": 1,}}}', "GATEWAY_CONFIG",
         "does not parse", ":1:46"),
    ],
)
def test_config_errors_point_at_file_line_and_column(tmp_path, name: str, text: str, setting: str,
                                                     message: str, where: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings({"GATEWAY_CONFIG": str(path)})
    error = caught.value
    assert error.setting == setting
    assert message in str(error) and "\n" not in str(error)
    assert error.where == f"at {path}{where}", str(error)
