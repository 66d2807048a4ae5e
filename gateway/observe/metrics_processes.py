"""The ``process_*`` metrics of every worker of the instance, each sample labelled by its ``pid``.

Read from ``/proc`` when a scrape asks, so whichever worker answers it reports them all (the
workers are found by :func:`~gateway.observe.instance.worker_pids`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import ProcessCollector
from prometheus_client.metrics_core import Metric

from gateway.observe.instance import worker_pids


def process_families(multiprocess: bool) -> Iterator[Metric]:
    """One family per ``process_*`` metric, with a sample per worker (a worker that just exited is left out)."""
    families: dict[str, Metric] = {}
    for pid in worker_pids(multiprocess):
        try:
            found = list(ProcessCollector(pid=_fixed(pid), registry=None).collect())
        except Exception:  # a worker that just exited
            continue
        for family in found:
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(
                    family.name, f"{family.documentation} Per worker, by pid.", family.type)
            for sample in family.samples:
                merged.add_sample(sample.name, {**sample.labels, "pid": str(pid)}, sample.value)
    yield from families.values()


def _fixed(pid: int) -> Callable[[], int]:
    return lambda: pid
