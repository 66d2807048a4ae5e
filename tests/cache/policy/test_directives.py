"""What requests and responses ask of a cache: Cache-Control, Pragma, targeted fields."""

from __future__ import annotations

import pytest

from gateway.cache.policy import directives
from tests.support.cache import h


@pytest.mark.parametrize("lines, expected", [
    (["max-age=60"], {"max-age": "60"}),
    (["public, max-age=60, s-maxage=30"], {"public": None, "max-age": "60", "s-maxage": "30"}),
    (["No-Cache", "MAX-AGE=5"], {"no-cache": None, "max-age": "5"}),
    (['private="Set-Cookie, X-A", max-age=1'], {"private": "Set-Cookie, X-A", "max-age": "1"}),
    (["max-age=1, max-age=9"], {"max-age": "1"}),
    ([" , ,no-store"], {"no-store": None}),
    ([], {}),
])
def test_parse_cache_control(lines: list[str], expected: dict) -> None:
    assert directives.parse_cache_control([("Cache-Control", line) for line in lines]) == expected


def test_pragma_no_cache_only_without_cache_control() -> None:
    assert "no-cache" in directives.request_cache_control(h("Pragma: no-cache"))
    assert "no-cache" not in directives.request_cache_control(h("Pragma: no-cache", "Cache-Control: max-age=9"))


def test_the_gateways_own_targeted_field_is_not_sent_downstream() -> None:
    headers = h("Gateway-Cache-Control: max-age=60", "CDN-Cache-Control: max-age=5", "Cache-Control: no-cache")
    assert directives.downstream_headers(headers) == h("CDN-Cache-Control: max-age=5", "Cache-Control: no-cache")


@pytest.mark.parametrize("headers, expected", [
    (h("Cache-Control: no-store", "CDN-Cache-Control: max-age=60"), ({"max-age": "60"}, True)),
    (h("CDN-Cache-Control: max-age=60", "Gateway-Cache-Control: no-store"), ({"no-store": None}, True)),
    (h("Cache-Control: no-store", "CDN-Cache-Control: max-age=60, &&&"), ({"no-store": None}, False)),
    (h('CDN-Cache-Control: a="xy"'), ({"a": '"xy"'}, True)),  # a string stays quoted
    (h("Cache-Control: max-age=5"), ({"max-age": "5"}, False)),
])
def test_response_cache_control_prefers_a_valid_targeted_field(headers: list, expected: tuple) -> None:
    assert directives.response_cache_control(headers) == expected


@pytest.mark.parametrize("line, expected", [
    ('a, b="x, y", c', ["a", 'b="x, y"', "c"]),
    (" , a ,, ", ["a"]),
    ("", []),
])
def test_split_list_keeps_commas_in_quotes(line: str, expected: list[str]) -> None:
    assert directives.split_list(line) == expected


@pytest.mark.parametrize("value, expected", [("60", 60.0), ("0", 0.0), ("-1", None), ("1.5", None), (None, None)])
def test_seconds_reads_delta_seconds_only(value: str | None, expected: float | None) -> None:
    cc = {} if value is None else {"max-age": value}
    assert directives.seconds(cc, "max-age") == expected
