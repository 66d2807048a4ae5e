"""The rate limiter's rules: GCRA in memory on an injected clock, keys, headers, settings."""

from __future__ import annotations

import pytest

from gateway.clock import FakeClock
from gateway.config.settings import ConfigError, ServiceConfig, load_settings
from gateway.config.traffic import parse_limit, parse_rate_limit
from gateway.errors import RateLimited
from gateway.messages import ProxyCall
from gateway.redis.link import RedisLink
from gateway.traffic.ratelimit import (
    GCRA,
    MemoryCells,
    RateLimiter,
    Verdict,
    cell_keys,
    client_key,
    gcra_argv,
    gcra_reply,
    limit_headers,
)


def limited(raw: dict, prefix: str = "/orders") -> ServiceConfig:
    return ServiceConfig(name="order-service", prefix=prefix, url="http://127.0.0.1:9",
                         rate_limit=parse_rate_limit("rate_limit", raw, prefix))


def call(service: ServiceConfig, path: str = "/orders/1", ip: str = "10.0.0.1",
         headers: list[tuple[str, str]] | None = None) -> ProxyCall:
    return ProxyCall(service=service, method="GET", target=path, path=path, query="", host="gw",
                     headers=headers or [], body=b"", request_id="r", client_ip=ip)


def test_limits_parse_with_units_and_names() -> None:
    assert parse_limit("x", "10/s") == parse_limit("x", "10/1s")
    assert (parse_limit("x", "1000/h").window, parse_limit("x", "1000/h").name) == (3600, "per-hour")
    assert (parse_limit("x", "100/5m").window, parse_limit("x", "100/5m").name) == (300, "per-300s")
    for bad in ("10", "10/x", "0/s", "ten/s", "-1/s", True, "10/0s"):
        with pytest.raises(ConfigError):
            parse_limit("x", bad)


def test_settings_are_validated_with_the_setting_named() -> None:
    def error(rate_limit: object) -> str:
        with pytest.raises(ConfigError) as caught:
            load_settings({}, {"services": {"order-service": {"rate_limit": rate_limit}}})
        return str(caught.value)

    assert "services.order-service.rate_limit.key" in error({"key": "cookie", "limits": ["1/s"]})
    assert "services.order-service.rate_limit.limits" in error({"limits": ["1/fortnight"]})
    assert "services.order-service.rate_limit.limits" in error({"key": "ip"})
    assert "same window" in error({"limits": ["1/s", "5/1s"]})
    assert "did you mean 'limits'" in error({"limit": ["1/s"]})
    assert "services.order-service.rate_limit.redis_down" in error({"limits": ["1/s"], "redis_down": "maybe"})
    assert "under /orders" in error({"limits": ["1/s"], "paths": {"/menus": ["1/s"]}})
    settings = load_settings({}, {"services": {"order-service": {"rate_limit": {"limits": "5/m"}}}})
    assert settings.services["order-service"].guarded and not settings.services["auth-service"].guarded
    assert load_settings({}, {"services": {"order-service": {"rate_limit": "off"}}}).services[
        "order-service"].rate_limit is None


def test_memory_limiter_allows_the_quota_then_one_per_interval() -> None:
    clock = FakeClock()
    limiter = RateLimiter(None, clock=clock)
    service = limited({"limits": ["3/s"]})
    seen = [limiter.check(call(service))[1][1] for _ in range(3)]
    assert seen == ['"per-second";r=2;t=1', '"per-second";r=1;t=1', '"per-second";r=0;t=1']
    with pytest.raises(RateLimited) as refused:
        limiter.check(call(service))
    headers = dict(refused.value.headers)
    assert headers["Retry-After"] == "1" and headers["RateLimit"] == '"per-second";r=0;t=1'
    assert headers["RateLimit-Policy"] == '"per-second";q=3;w=1'
    clock.advance(1 / 3)  # one request earned back
    assert limiter.check(call(service))[1][1] == '"per-second";r=0;t=1'
    with pytest.raises(RateLimited):
        limiter.check(call(service))
    clock.advance(1.0)  # a full quota again
    assert limiter.check(call(service))[1][1] == '"per-second";r=2;t=1'


def test_every_limit_must_pass_and_a_refusal_spends_nothing() -> None:
    clock = FakeClock()
    limiter = RateLimiter(None, clock=clock)
    service = limited({"limits": ["2/s", "3/m"]})
    limiter.check(call(service))
    limiter.check(call(service))
    with pytest.raises(RateLimited) as first:
        limiter.check(call(service))  # the per-second limit refuses
    assert dict(first.value.headers)["RateLimit"] == '"per-second";r=0;t=1, "per-minute";r=1;t=40'
    clock.advance(1.0)
    limiter.check(call(service))  # the third of the minute
    clock.advance(1.0)
    with pytest.raises(RateLimited) as second:
        limiter.check(call(service))  # now the per-minute one refuses: 20 s until one more
    assert dict(second.value.headers)["Retry-After"] == "18"
    clock.advance(18.0)
    assert "per-minute" in limiter.check(call(service))[1][1]


def test_clients_and_path_rules_are_counted_apart() -> None:
    clock = FakeClock()
    limiter = RateLimiter(None, clock=clock)
    service = limited({"limits": ["1/s"], "paths": {"/orders/search": ["2/s"], "/orders/search/deep": []}})
    limiter.check(call(service, ip="10.0.0.1"))
    limiter.check(call(service, ip="10.0.0.2"))  # another client
    limiter.check(call(service, path="/orders/search"))  # another rule, its own count
    limiter.check(call(service, path="/orders/search/x"))
    with pytest.raises(RateLimited):
        limiter.check(call(service, path="/orders/search"))
    for _ in range(5):
        assert limiter.check(call(service, path="/orders/search/deep/1")) == []  # no limits: not limited
    with pytest.raises(RateLimited):
        limiter.check(call(service, path="/orders/searchable"))  # not under /orders/search
    escaped = limited({"limits": ["5/s"], "paths": {"/orders/search": ["1/s"]}})
    limiter.check(call(escaped, path="/orders/search", ip="10.0.0.9"))
    with pytest.raises(RateLimited):
        limiter.check(call(escaped, path="/orders/%73earch", ip="10.0.0.9"))  # an escape is the same path


def test_keys_digest_secrets_and_fall_back_to_the_ip() -> None:
    by_header = limited({"key": "header:X-Api-Key", "limits": ["1/s"]}).rate_limit
    by_credentials = limited({"key": "credentials", "limits": ["1/s"]}).rate_limit
    assert by_header is not None and by_credentials is not None
    service = limited({"limits": ["1/s"]})
    secret = "sk-very-secret-key"
    keyed = client_key(by_header, call(service, headers=[("X-Api-Key", secret)]))
    assert keyed.startswith("h:") and secret not in keyed
    assert client_key(by_header, call(service, ip="10.9.9.9")) == "ip:10.9.9.9"
    token = client_key(by_credentials, call(service, headers=[("Authorization", f"Bearer {secret}")]))
    assert token.startswith("c:") and secret not in token
    assert token != client_key(by_credentials, call(service, headers=[("Authorization", "Bearer other")]))
    assert client_key(by_credentials, call(service, ip="10.1.1.1")) == "ip:10.1.1.1"


def test_memory_cells_are_bounded() -> None:
    cells = MemoryCells(FakeClock(), bound=10)
    rule = limited({"limits": ["1/s"]}).rate_limit.rule  # type: ignore[union-attr]
    for index in range(50):
        cells.decide(f"client-{index}", rule)
    assert len(cells) == 10


def test_headers_name_each_limit() -> None:
    service = limited({"limits": ["1000/h", "10/s"]})
    rule = service.rate_limit.rule  # type: ignore[union-attr]
    assert rule.policy == '"per-second";q=10;w=1, "per-hour";q=1000;w=3600'
    verdict = MemoryCells(FakeClock()).decide("k", rule)
    assert limit_headers(rule, verdict)[1] == ("RateLimit", '"per-second";r=9;t=1, "per-hour";r=999;t=4')


def test_a_bad_limit_in_the_file_is_told_with_its_line_and_column(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "gateway.yaml"
    path.write_text('services:\n  order-service:\n    rate_limit:\n      limits: ["10/s", "10/fortnight"]\n'
                    '  restaurant-service:\n    cors:\n      origin: ["*"]\n')
    with pytest.raises(ConfigError) as caught:
        load_settings({"GATEWAY_CONFIG": str(path)})
    assert str(caught.value).startswith("invalid setting GATEWAY_CONFIG services.order-service.rate_limit.limits: ")
    assert str(caught.value).endswith(f"(at {path}:4:15)")
    path.write_text('services:\n  restaurant-service:\n    cors:\n      origin: ["*"]\n')
    with pytest.raises(ConfigError) as caught:
        load_settings({"GATEWAY_CONFIG": str(path)})
    assert "cors.origin: unknown key 'origin'; did you mean 'origins'?" in str(caught.value)
    assert str(caught.value).endswith(f"(at {path}:4:7)")


def test_the_script_is_called_by_name() -> None:
    rule = limited({"limits": ["10/s", "1000/h"]}).rate_limit.rule  # type: ignore[union-attr]
    # Per limit its interval and window in microseconds (the script's "interval" and "window"), then "count".
    assert gcra_argv(rule) == [100_000, 1_000_000, 3_600_000, 3_600_000_000, 1]
    assert gcra_argv(rule, 7)[-1] == 7
    # "refused", then per limit "remaining" and "reset" in microseconds.
    assert gcra_reply([1, 0, 250_000, 12, 0], 2) == Verdict(True, [(0, 0.25), (12, 0.0)])
    for name in ("KEYS[i]", "cell", "interval", "window", "count", "refused", "remaining", "reset"):
        assert name in GCRA.split("local t = ")[0], name  # the script's header names what it is given


def test_one_clients_cells_share_one_hash_tag_and_name_no_secret() -> None:
    rule = limited({"limits": ["10/s", "1000/h"]}).rate_limit.rule  # type: ignore[union-attr]
    link = RedisLink("redis://127.0.0.1:9", "gw:")
    keys = cell_keys(link, "order-service\0\0ip:10.0.0.1", rule)
    tags = {key.split("{")[1].split("}")[0] for key in keys}
    assert len(tags) == 1 and [key.rsplit(":", 1)[1] for key in keys] == ["1", "3600"]
    assert all(key.startswith("gw:rl:{") for key in keys) and "10.0.0.1" not in "".join(keys)
    assert cell_keys(link, "order-service\0\0ip:10.0.0.2", rule) != keys
