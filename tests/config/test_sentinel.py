"""The Sentinel settings (REDIS_SENTINELS and its companions) as read; a live Sentinel: tests/redis/test_sentinel.py."""

from __future__ import annotations

import pytest

from gateway.config.sentinel import RedisSentinel, read_sentinel
from gateway.config.settings import ConfigError


def test_not_used_without_the_sentinels() -> None:
    assert read_sentinel({}) is None
    with pytest.raises(ConfigError) as caught:
        read_sentinel({"REDIS_DB": "1"})
    assert caught.value.setting == "REDIS_DB"


def test_addresses_ports_and_login() -> None:
    sentinel = read_sentinel({"REDIS_SENTINELS": "a, b:26380,[::1]:1,[fe80::1]", "REDIS_SENTINEL_MASTER": " m ",
                              "REDIS_PASSWORD": "pw", "REDIS_DB": "2", "REDIS_TLS": "yes"})
    assert sentinel == RedisSentinel(addresses=(("a", 26379), ("b", 26380), ("::1", 1), ("fe80::1", 26379)),
                                     master="m", password="pw", db=2, tls=True)
    assert sentinel.describe() == "rediss+sentinel://a:26379,b:26380,::1:1,fe80::1:26379/m/2"


@pytest.mark.parametrize(("env", "setting"), [
    ({"REDIS_SENTINELS": "a", "REDIS_URL": "redis://x"}, "REDIS_SENTINELS"),
    ({"REDIS_SENTINELS": "a:0", "REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINELS"),
    ({"REDIS_SENTINELS": "a"}, "REDIS_SENTINEL_MASTER"),
    ({"REDIS_SENTINELS": "a", "REDIS_SENTINEL_MASTER": "my master"}, "REDIS_SENTINEL_MASTER"),
    ({"REDIS_SENTINELS": "a", "REDIS_SENTINEL_MASTER": "m", "REDIS_USERNAME": "u"}, "REDIS_USERNAME"),
])
def test_bad_forms_name_the_setting(env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError) as caught:
        read_sentinel(env)
    assert caught.value.setting == setting
