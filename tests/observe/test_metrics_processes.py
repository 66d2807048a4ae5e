"""Per-worker process metrics (gateway/observe/metrics_processes.py): every worker's ``process_*``, by pid."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from prometheus_client import ProcessCollector

from gateway.observe import metrics_processes


def samples_by_pid(families: list) -> dict[str, set[str]]:  # type: ignore[type-arg]
    seen: dict[str, set[str]] = {}
    for family in families:
        for sample in family.samples:
            seen.setdefault(sample.labels["pid"], set()).add(sample.name)
    return seen


def test_this_workers_process_metrics_are_labelled_by_its_pid() -> None:
    families = list(metrics_processes.process_families(False))
    names = {family.name for family in families}
    assert {"process_resident_memory_bytes", "process_cpu_seconds", "process_open_fds"} <= names
    assert all(family.documentation.endswith("Per worker, by pid.") for family in families)
    assert set(samples_by_pid(families)) == {str(os.getpid())}


def test_each_worker_has_its_samples_and_a_gone_one_is_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    gone = 2**22 + 12345  # past the kernel's default pid_max: no such process
    real = metrics_processes.ProcessCollector

    def collector(pid: Callable[[], int], registry: None) -> ProcessCollector:
        if pid() == gone:
            raise FileNotFoundError(f"/proc/{gone}")  # it exited between the listing and the read
        return real(pid=pid, registry=registry)

    monkeypatch.setattr(metrics_processes, "ProcessCollector", collector)
    monkeypatch.setattr(metrics_processes, "worker_pids", lambda multiprocess: [os.getpid(), os.getppid(), gone])
    seen = samples_by_pid(list(metrics_processes.process_families(True)))
    assert set(seen) == {str(os.getpid()), str(os.getppid())}
    assert "process_resident_memory_bytes" in seen[str(os.getppid())]
    families = list(metrics_processes.process_families(True))
    assert len({family.name for family in families}) == len(families)  # one family per metric, not per worker
