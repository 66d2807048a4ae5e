"""Smoke test of the benchmark harness's pieces: its servers, its wrk parsing, its table. No timing is asserted."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import client, peer, wrk
from bench.__main__ import parse_args
from bench.apps import BODY
from bench.report import Row, markdown
from bench.servers import bare_server, running, upstream_server

WRK_OUTPUT = """Running 1s test @ http://127.0.0.1:1/
  2 threads and 4 connections

BENCH_JSON {"requests":1200,"duration_us":1000000,"bytes":9000,"connect":0,"read":1,"write":0,"status":3,\
"timeout":0,"mean_us":812.5,"max_us":9000,"p50_us":700,"p90_us":1500,"p99_us":4000,"p999_us":8000}
"""


def test_wrk_result_line_is_parsed() -> None:
    result = wrk.parse(WRK_OUTPUT)
    assert result.requests == 1200
    assert result.rps == 1200.0
    assert result.p50_ms == 0.7 and result.p99_ms == 4.0
    assert result.errors["status"] == 3 and result.socket_errors == 1


def test_missing_result_line_is_an_error() -> None:
    with pytest.raises(wrk.WrkError):
        wrk.parse("wrk: unable to connect\n")


def test_command_line_quick_and_only() -> None:
    options = parse_args(["--quick", "--only", "6,1", "--cache", "redis"])
    assert (options.rounds, options.seconds) == (1, 1)
    assert set(options.only) == {"1", "6"} and tuple(options.modes) == ("redis",)
    with pytest.raises(SystemExit):
        parse_args(["--only", "99"])
    assert tuple(parse_args([]).modes) == ("embedded", "redis", "cluster")  # one Redis and a Redis Cluster
    assert tuple(parse_args(["--cache", "both"]).modes) == ("embedded", "redis")


def test_table_lists_rows_and_problems() -> None:
    rows = [Row("1", "cache hit", "embedded", "req/s", "100", "bare 200", "0.50× bare", "0.80× (seed 125 req/s)",
                "≥ 1.0× seed", False),
            Row("4", "circuit open", "redis", "req/s", "90", problems=["gateway: 3 socket errors"])]
    context = {"started": "now", "cpus": 2, "workers": 2, "rounds": 1, "seconds": 1, "wrk_threads": "-t2",
               "request_log": "file", "modes": ["embedded", "redis"]}
    table = markdown(rows, context)
    assert "| vs seed (Node) |" in table
    assert "| 1 | cache hit | embedded | req/s | 100 | bare 200 | 0.50× bare | 0.80× (seed 125 req/s) |" in table
    assert "**no**" in table
    assert "**ERRORS**" in table and "gateway: 3 socket errors" in table
    skipped = markdown(rows, {**context, "peer_skipped": "node and npm are not installed"})
    assert "vs seed (Node): skipped: node and npm are not installed" in skipped


def test_peer_is_skipped_with_its_reason_without_node(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(peer.shutil, "which", lambda name: None)
    folder, reason = peer.prepare(tmp_path)
    assert folder is None and "node and npm are not installed" in reason


def test_peer_folder_without_its_sources_is_skipped(tmp_path: Path) -> None:
    folder, reason = peer.prepare(tmp_path / "nowhere")
    assert folder is None and ("SEED_PEER_DIR" in reason or "node" in reason)


def test_upstream_counts_calls_and_bare_answers_the_same_bytes(tmp_path: Path) -> None:
    with running(upstream_server(tmp_path), "/__count") as upstream:
        with running(bare_server(tmp_path, upstream.url, 2, {}), "/") as bare:
            from_upstream = client.call(upstream.port, "GET", "/123")
            from_bare = client.call(bare.port, "GET", "/orders/123")
            assert from_upstream.body == from_bare.body == BODY
            assert client.upstream_calls(upstream.port) == 1
            assert client.upstream_calls(upstream.port, "/12") == 1
            assert client.upstream_calls(upstream.port, "/z") == 0
            assert bare.worker_class() is not None
            if not wrk.available():
                pytest.skip("wrk is not installed (apt-get install -y wrk): the wrk run was not tried")
            result = wrk.run(bare.url + "/", wrk.write_script(tmp_path, "plain"), connections=4, seconds=1)
            assert result.requests > 0
            assert result.socket_errors == 0 and result.errors["status"] == 0
