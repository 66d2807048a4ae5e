"""Cache safety end to end, through gunicorn with both stores (per-worker memory and Redis).

No user's response reaches another; headers outside the key cannot poison an entry; responses
that forbid storing are never stored; a pickle planted in Redis is never executed; purges leave
keys that are not the gateway's alone.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.redis.slots import hash_tag
from tests.support.chaos import Answer, fetch, kinds, report
from tests.support.processes import GatewayProcess, RedisServer, SampleServices, start_gateway

pytestmark = pytest.mark.e2e

TOKEN = "cache-safety-admin"
ECHO = "/restaurants/_debug/echo"
HOST = "shop.example"


@pytest.fixture(scope="module", params=["memory", "redis"])
def gateway(request: pytest.FixtureRequest, samples: SampleServices, redis_server_session: RedisServer,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway with 2 workers on either store; the test client is not a trusted proxy."""
    env = {**samples.env(), "HEALTH_CHECK_INTERVAL": "0", "ADMIN_TOKEN": TOKEN,
           "FORWARDED_ALLOW_IPS": "10.255.255.1", "CB_VOLUME_THRESHOLD": "100000"}
    if request.param == "redis":
        env.update(REDIS_URL=redis_server_session.url, REDIS_KEY_PREFIX=f"safety-{os.getpid()}:")
    with start_gateway(env, 2, log_dir=tmp_path_factory.mktemp(f"gw-safety-{request.param}")) as gw:
        gw.store = request.param  # type: ignore[attr-defined]
        gw.redis = redis_server_session if request.param == "redis" else None  # type: ignore[attr-defined]
        gw.prefix = env.get("REDIS_KEY_PREFIX", "")  # type: ignore[attr-defined]
        yield gw


def get(gw: GatewayProcess, target: str, headers: dict[str, str] | None = None) -> Answer:
    return fetch(gw.port, target, headers={"Host": HOST, **(headers or {})})


def echoed(answer: Answer) -> dict[str, list[str]]:
    """The request headers the upstream received, as the echo endpoint reports them."""
    received: dict[str, list[str]] = {}
    for name, value in json.loads(answer.body)["headers"]:
        received.setdefault(name.lower(), []).append(value)
    return received


def test_no_response_of_one_user_reaches_another(gateway: GatewayProcess, request: pytest.FixtureRequest) -> None:
    users: list[dict[str, str]] = [{}]  # the anonymous user first
    for n in range(12):
        secret = f"user-{n}-{os.urandom(4).hex()}"
        users.append({"Authorization": f"Bearer {secret}"} if n % 2 else {"Cookie": f"sid={secret}"})
    paths = [f"{ECHO}/p{k}?cc=public,max-age=60" for k in range(3)]  # shareable: stored per user
    paths += [f"{ECHO}/s{k}?cc=s-maxage=60" for k in range(2)] + [f"{ECHO}/h{k}" for k in range(2)]
    mixups: list[tuple[dict[str, str], dict[str, list[str]]]] = []
    answers: list[Answer] = []
    lock = threading.Lock()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(60):
            user = rng.choice(users)
            answer = get(gateway, rng.choice(paths), user)
            assert answer.status == 200, answer
            seen = echoed(answer)
            with lock:
                answers.append(answer)
                if seen.get("authorization") != ([user["Authorization"]] if "Authorization" in user else None) \
                        or seen.get("cookie") != ([user["Cookie"]] if "Cookie" in user else None):
                    mixups.append((user, seen))

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(answers) == 480
    assert not mixups, mixups[:3]
    by_cache = {label: sum(a.x_cache == label for a in answers) for label in ("HIT", "MISS", "BYPASS")}
    assert by_cache["HIT"] > 50  # the shareable answers really were reused, each by its own user
    report(request, "cache-users", store=gateway.store, users=len(users), requests=len(answers),  # type: ignore[attr-defined]
           x_cache=by_cache, served_to_wrong_user=len(mixups))


UNKEYED = [
    ("X-Forwarded-Host", "evil.example"),
    ("X-Forwarded-Proto", "gopher"),
    ("X-Forwarded-Scheme", "nothttps"),
    ("X-Original-URL", "/admin/cache"),
    ("X-Rewrite-URL", "/admin/cache"),
    ("X-HTTP-Method-Override", "DELETE"),
    ("X-HTTP-Method", "PUT"),
    ("X-Method-Override", "PATCH"),
]


@pytest.mark.parametrize(("name", "value"), UNKEYED)
def test_unkeyed_headers_cannot_poison_an_entry(gateway: GatewayProcess, name: str, value: str) -> None:
    target = f"{ECHO}/poison-{name.lower()}?cc=public,max-age=60"
    attack = get(gateway, target, {name: value, "X-Request-ID": "attacker-1"})
    assert attack.status == 200
    for _ in range(4):  # both workers
        victim = get(gateway, target, {"X-Request-ID": "victim-1"})
        assert victim.status == 200
        seen = echoed(victim)
        came_from_attack = seen["x-request-id"] == ["attacker-1"]
        # Either the attacker's value never reached the service, or its answer is not shared.
        if came_from_attack:
            assert value not in json.dumps(seen), (name, victim.x_cache, seen)
        assert seen["x-forwarded-host"] == [HOST] and seen["x-forwarded-proto"] == ["http"]
        assert json.loads(victim.body)["method"] == "GET"
        assert json.loads(victim.body)["raw_target"] == target.removeprefix("/restaurants")
    # Nothing was invalidated or purged by the attacker's headers: the victims' entry still answers
    # (a few tries, since with the memory store only the worker that stored it has it).
    assert any(get(gateway, target).x_cache == "HIT" for _ in range(8))


@pytest.mark.parametrize("query", ["cc=no-store", "cc=private,max-age=60", "cc=public,max-age=60&hdr=Set-Cookie:sid=1",
                                   "cc=max-age=60&vary=*", "cc=no-store,public,max-age=60", "status=206&cc=max-age=60"])
def test_forbidden_responses_are_never_stored(gateway: GatewayProcess, samples: SampleServices, query: str) -> None:
    path = f"{ECHO}/never-{abs(hash(query)) % 10**8}"
    upstream = path.removeprefix("/restaurants")
    before = samples.stats("restaurant-service")["by_path"].get(upstream, 0)
    labels = [get(gateway, f"{path}?{query}").x_cache for _ in range(4)]
    assert "HIT" not in labels and "STALE" not in labels, labels
    assert samples.stats("restaurant-service")["by_path"][upstream] == before + 4
    if gateway.redis is not None:  # type: ignore[attr-defined]
        assert not gateway.redis.client().exists(f"{gateway.prefix}cache:p:{hash_tag(path)}{path}")  # type: ignore[attr-defined]


class Planted:
    """A pickle that, if ever loaded, creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_planted_pickles_are_never_executed(clean_samples: SampleServices, redis_server: RedisServer,
                                            tmp_path: Path, request: pytest.FixtureRequest) -> None:
    env = {**clean_samples.env(), "HEALTH_CHECK_INTERVAL": "0", "REDIS_URL": redis_server.url,
           "CB_VOLUME_THRESHOLD": "100000"}
    marker = tmp_path / "pickle-ran"
    targets = ["/restaurants/1", "/orders/1", f"{ECHO}/pickled?cc=public,max-age=60", "/tracking/_debug/status/200"]
    with start_gateway(env, 2, log_dir=tmp_path / "gw") as gw:
        for target in targets:
            assert get(gw, target).status == 200
        client = redis_server.client()
        payload = pickle.dumps(Planted(marker))
        planted = 0
        for key in client.scan_iter("gw:*"):
            kind = client.type(key)
            if kind == b"hash":
                for field in client.hkeys(key):
                    client.hset(key, field, payload)
                    planted += 1
            elif kind == b"string":
                client.set(key, payload, keepttl=True)
                planted += 1
        assert planted >= 3
        answers = [get(gw, target) for target in targets * 4]
        assert [a.status for a in answers] == [200] * len(answers), kinds(answers)
        assert not marker.exists(), "a pickle from Redis was executed"
        assert "Traceback" not in gw.log_text()
        report(request, "cache-pickle", planted_values=planted, requests=len(answers), answers=kinds(answers),
               executed=marker.exists())


def test_purges_leave_foreign_keys_alone(clean_samples: SampleServices, redis_server: RedisServer,
                                         tmp_path: Path) -> None:
    prefix = "g*w?[1]:"  # glob characters in the prefix must match only themselves
    env = {**clean_samples.env(), "HEALTH_CHECK_INTERVAL": "0", "REDIS_URL": redis_server.url,
           "REDIS_KEY_PREFIX": prefix, "ADMIN_TOKEN": TOKEN}
    client = redis_server.client()
    foreign = {"gw:cache:e:abc": "default prefix", "gXXw1:cache:e:abc": "glob lookalike",
               "g*w?[1]cache:e:x": "no colon", "other:cache:p:/restaurants/1": "other app",
               "cache:e:1": "bare", "session:42": "user data"}
    for key, value in foreign.items():
        client.set(key, value)
    client.hset("g*w1:cache:e:h", "f", "v")
    client.sadd("gw:cache:p:/restaurants", "x")
    with start_gateway(env, 1, log_dir=tmp_path) as gw:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        for round_ in ("path", "prefix", "all"):
            for target in ("/restaurants/1", "/restaurants/2", "/orders/1"):
                assert get(gw, target).status == 200
            ours = [k for k in client.scan_iter() if k.decode().startswith(prefix + "cache:")]
            assert ours
            query = {"path": "?path=/restaurants/1", "prefix": "?prefix=/", "all": ""}[round_]
            assert fetch(gw.port, f"/admin/cache{query}", "DELETE", auth).status == 200
        assert not [k for k in client.scan_iter() if k.decode().startswith(prefix + "cache:e:")]
    for key, value in foreign.items():
        assert client.get(key) == value.encode(), key
        assert client.ttl(key) == -1
    assert client.hget("g*w1:cache:e:h", "f") == b"v"
    assert client.smembers("gw:cache:p:/restaurants") == {b"x"}
