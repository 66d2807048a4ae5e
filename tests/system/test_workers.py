"""Worker loss and shutdown: a worker killed under load, SIGTERM under load, and draining on /health."""

from __future__ import annotations

import http.client
import json
import os
import runpy
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from app import create_app
from tests.support.chaos import Answer, Load, connection_owners, fetch, kinds, report, wait_for
from tests.support.processes import REPO_ROOT, SampleServices, start_gateway

SLOW = "/tracking/_debug/slow-headers?ms=300"


@pytest.mark.e2e
def test_killed_worker_is_replaced_and_only_its_requests_fail(clean_samples: SampleServices, tmp_path: Path,
                                                              request: pytest.FixtureRequest) -> None:
    env = {**clean_samples.env(), "HEALTH_CHECK_INTERVAL": "0"}
    with start_gateway(env, 2, log_dir=tmp_path) as gw:
        victim, survivor = gw.worker_pids()
        with Load(gw.port, [SLOW, "/restaurants/1", "/orders/_debug/echo"], threads=8, pause=0.01) as load:
            time.sleep(0.6)
            flying = load.flying()
            owners = connection_owners(gw.port, [victim, survivor])
            killed = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            assert wait_for(lambda: len(gw.worker_pids()) == 2 and victim not in gw.worker_pids(), 10.0)
            replacement = next(pid for pid in gw.worker_pids() if pid != survivor)
            time.sleep(0.8)
        answers = load.answers
        lost = [a for a in answers if a.status is None]
        # Only requests in flight when the worker died can be lost, and at most one per client thread.
        assert all(a.started < killed + 0.05 and a.ended >= killed for a in lost), lost
        assert len(lost) <= load.threads
        # Which worker held each request in flight just before the kill: none of the survivor's is lost,
        # and every lost one was the victim's (or opened in the instant between the look and the kill).
        on_victim = {rid for rid, port in flying.items() if owners.get(port) == victim}
        on_survivor = {rid for rid, port in flying.items() if owners.get(port) == survivor}
        lost_ids = {a.request_id for a in lost}
        assert not lost_ids & on_survivor, (lost_ids, on_survivor)
        assert lost_ids <= on_victim | (lost_ids - set(flying)), (lost_ids, on_victim)
        assert all(200 <= a.status < 300 for a in answers if a.status is not None), kinds(answers)
        after = load.between(killed + 0.05, float("inf"))
        assert after and all(a.status == 200 for a in after)
        assert survivor in gw.worker_pids()

        # The new worker serves: with the survivor frozen, every new connection goes to it.
        os.kill(survivor, signal.SIGSTOP)
        try:
            served = [fetch(gw.port, "/restaurants/1", timeout=5) for _ in range(5)]
        finally:
            os.kill(survivor, signal.SIGCONT)
        assert [a.status for a in served] == [200] * 5
        assert "Traceback" not in gw.stdout_text()
        report(request, "worker-kill", requests=len(answers), answers=kinds(answers), lost=len(lost),
               in_flight_at_kill=len([a for a in answers if a.started < killed <= a.ended]),
               in_flight_on_victim=len(on_victim), in_flight_on_survivor=len(on_survivor),
               replacement_served=len(served), replacement_pid_differs=replacement != victim)


@pytest.mark.e2e
def test_sigterm_under_load_finishes_every_request_in_flight(clean_samples: SampleServices, tmp_path: Path,
                                                             request: pytest.FixtureRequest) -> None:
    env = {**clean_samples.env(), "HEALTH_CHECK_INTERVAL": "0", "CB_TIMEOUT": "3"}
    with start_gateway(env, 2, log_dir=tmp_path) as gw:
        results: list[Answer] = []
        lock = threading.Lock()

        def slow(ms: int) -> None:
            answer = fetch(gw.port, f"/tracking/_debug/slow-headers?ms={ms}", timeout=15)
            with lock:
                results.append(answer)

        threads = [threading.Thread(target=slow, args=(600 + 100 * (i % 5),)) for i in range(16)]
        for thread in threads:
            thread.start()
        assert wait_for(lambda: clean_samples.stats("tracking-service")["requests"] == 16, 5.0, 0.01)  # all in flight
        gw.terminate()
        for thread in threads:
            thread.join(20)
        assert [a.status for a in results] == [200] * 16, [a.error for a in results]
        assert gw.wait(timeout=15) == 0
        report(request, "sigterm", in_flight=len(results), completed_200=sum(a.status == 200 for a in results),
               exit_code=0)


@pytest.mark.e2e
def test_health_answers_draining_after_sigterm(clean_samples: SampleServices, tmp_path: Path) -> None:
    env = {**clean_samples.env(), "HEALTH_CHECK_INTERVAL": "0", "CB_TIMEOUT": "3"}
    with start_gateway(env, 1, log_dir=tmp_path) as gw:
        # An open keep-alive connection, and a slow request that keeps the worker alive after SIGTERM.
        kept = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        kept.request("GET", "/health")
        first = kept.getresponse()
        assert first.status == 200 and first.getheader("Connection", "").lower() != "close"
        first.read()
        slow = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        slow.request("GET", "/tracking/_debug/slow-headers?ms=1500")
        assert wait_for(lambda: clean_samples.stats("tracking-service")["requests"] == 1, 5.0, 0.01)  # in flight
        gw.terminate()

        def draining() -> tuple[int, Any]:
            kept.request("GET", "/health")  # 200 until the worker has handled the signal
            answer = kept.getresponse()
            return answer.status, json.loads(answer.read())
        seen: list[tuple[int, Any]] = []
        assert wait_for(lambda: seen.append(draining()) or seen[-1][0] != 200, 1.0, 0.02), seen
        assert seen[-1] == (503, {"status": "draining"})
        assert slow.getresponse().status == 200
        kept.close()
        slow.close()
        assert gw.wait(timeout=15) == 0


class FakeWorker:
    """The parts of a gunicorn worker the post_worker_init hook touches."""

    def __init__(self, app: Any) -> None:
        self.wsgi = app
        self.exits: list[int] = []

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.exits.append(sig)


def test_post_worker_init_hook_marks_the_worker_draining(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Loading the config sets these for its workers; keep them out of this process afterwards.
    monkeypatch.setenv("GATEWAY_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    monkeypatch.delenv("REDIS_URL", raising=False)
    config = runpy.run_path(str(REPO_ROOT / "gunicorn.conf.py"))
    app = create_app({"HEALTH_CHECK_INTERVAL": 0})
    worker = FakeWorker(app)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        config["post_worker_init"](worker)
        client = app.test_client()
        assert client.get("/health").status_code == 200
        worker.handle_exit(signal.SIGTERM, None)
        assert signal.getsignal(signal.SIGTERM) == worker.handle_exit
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert worker.exits == [signal.SIGTERM]  # gunicorn's own exit handling still runs
    answer = client.get("/health")
    assert (answer.status_code, answer.get_json()) == (503, {"status": "draining"})
