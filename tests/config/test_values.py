"""Reading one raw value: numbers, switches, URLs, prefixes; options declared once and read from any source."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from gateway.config.values import (
    REQUIRED,
    ConfigError,
    check_keys,
    count,
    number,
    option,
    option_names,
    percentage,
    positive,
    read_group,
    read_options,
    service_prefix,
    service_url,
    switch,
    unknown_key,
    whole,
)


@pytest.mark.parametrize(("reader", "raw", "value"), [
    (number, "1.5", 1.5), (number, 0, 0.0), (whole, "3", 3), (count, 1, 1), (positive, "0.25", 0.25),
    (percentage, "100", 100.0), (switch, "On", True), (switch, "0", False), (switch, False, False),
    (service_url, " https://svc.internal:8443/base/ ", "https://svc.internal:8443/base"),
    (service_prefix, " /menus/v2 ", "/menus/v2"),
])
def test_readers(reader: Any, raw: Any, value: Any) -> None:
    assert reader("X", raw) == value


@pytest.mark.parametrize(("reader", "raw", "message"), [
    (number, True, "expected a number, got True"), (number, "inf", "must be a number >= 0, got 'inf'"),
    (whole, "2.5", "expected a whole number, got '2.5'"), (count, "0", "must be a number >= 1, got '0'"),
    (positive, 0, "must be greater than 0, got 0"), (percentage, 150, "is a percentage (0-100), got 150"),
    (switch, "maybe", "expected true or false, got 'maybe'"),
    (service_url, "http://u:p@svc", "a service URL takes no query or credentials, got 'http://u:p@svc'"),
    (service_url, "http://svc:0", "malformed URL 'http://svc:0'"),
    (service_prefix, "/admin/x", "/admin is the gateway's own path"),
    (service_prefix, "/a b", "a prefix may use letters, digits and -._~/ only, got '/a b'"),
])
def test_errors_name_the_setting_in_one_line(reader: Any, raw: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        reader("X", raw)
    assert str(caught.value) == f"invalid setting X: {message}"


def test_unknown_keys_suggest_the_nearest() -> None:
    assert unknown_key("S.timout", "timout", {"timeout", "cache"}).message == "unknown key 'timout'; did you mean " \
                                                                              "'timeout'?"
    with pytest.raises(ConfigError) as caught:
        check_keys("S", {"zzz": 1, "cache": 2}, {"cache", "url"})
    assert (caught.value.setting, caught.value.message) == ("S.zzz", "unknown key 'zzz'; valid keys: cache, url")


@dataclass(frozen=True)
class Example:
    name: str
    url: str = option(REQUIRED, service_url)
    retries: int = option(2, whole, env="EXAMPLE_RETRIES")
    quick: bool = option(False, switch)


def test_an_option_is_read_from_the_environment_by_its_variable_and_from_a_file_by_its_name() -> None:
    assert option_names(Example) == {"url", "retries", "quick"}
    assert read_options(Example, {"EXAMPLE_RETRIES": "5", "quick": "yes"}) == {"retries": 5}
    assert read_options(Example, {"retries": "1", "quick": "yes"}, "S") == {"retries": 1, "quick": True}
    with pytest.raises(ConfigError) as caught:
        read_options(Example, {"retries": None}, "GATEWAY_CONFIG services.x")
    assert caught.value.setting == "GATEWAY_CONFIG services.x.retries"  # a key given as null is an error
    assert Example(name="x", url="http://x").retries == 2


def test_a_group_is_a_mapping_of_options() -> None:
    assert read_group("S.example", {"quick": 1}, Example) == {"quick": True}
    with pytest.raises(ConfigError, match="invalid setting S.example: must be a mapping"):
        read_group("S.example", [1], Example)
    with pytest.raises(ConfigError, match="did you mean 'retries'"):
        read_group("S.example", {"retry": 1}, Example)
