"""The Sentinel and Cluster settings as read; live ones: tests/redis/test_sentinel.py, tests/redis/test_cluster.py."""

from __future__ import annotations

import pytest

from gateway.config.redis import RedisClusterNodes, RedisSentinel, read_redis
from gateway.config.settings import ConfigError


def read_sentinel(env: dict[str, str]) -> RedisSentinel | None:
    sentinel, cluster = read_redis(env)
    assert cluster is None
    return sentinel


def test_not_used_without_the_sentinels() -> None:
    assert read_redis({}) == (None, None)
    with pytest.raises(ConfigError) as caught:
        read_redis({"REDIS_DB": "1"})
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


def test_cluster_nodes_and_login() -> None:
    sentinel, cluster = read_redis({"REDIS_CLUSTER_NODES": "c1:7000, c2", "REDIS_PASSWORD": "pw"})
    assert sentinel is None
    assert cluster == RedisClusterNodes(nodes=(("c1", 7000), ("c2", 6379)), password="pw")
    assert cluster.describe() == "redis+cluster://c1:7000,c2:6379"
