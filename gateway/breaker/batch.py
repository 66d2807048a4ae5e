"""Successes of calls let through on a held CLOSED answer: counted in this process, told to Redis in batches.

A success never changes a CLOSED circuit, so it need not reach Redis at once. A failure must, and it
must reach Redis after every success of this process that ended before it: the rule that opens the
circuit runs only on a failure, so if a batch of earlier successes overtook it, no rule would run on
the window with both in it (one success and two failures, with three calls the minimum, would leave
the circuit CLOSED). So a failure takes the batch being counted with it and, when another batch is on
its way to Redis (the stats flusher's, say, or a request's in another greenlet), waits for that
one's answer first.
"""

from __future__ import annotations

import threading

from gateway.breaker.scripts import LuaValue

LATENCY_SAMPLES = 512  # latencies Redis keeps per breaker, and a batch carries at most
TOLD_SECONDS = 0.1  # successes counted here reach Redis at least this often while calls go on
TOLD_MAX = 256  # ... or once this many have gathered


class Told:
    """One batch: successes of calls let through on a held CLOSED answer, not yet told to Redis."""

    def __init__(self) -> None:
        self.count = 0
        self.ms = 0.0
        self.samples: list[str] = []  # the newest LATENCY_SAMPLES latencies, ms
        self.generation = ""
        self.since = 0.0  # monotonic time of the first
        self.answered: threading.Event | None = None  # set once its round trip is over (told, or lost)

    def add(self, generation: str, latency_ms: float, now: float) -> None:
        if not self.count:
            self.generation, self.since = generation, now
        self.count += 1
        self.ms += latency_ms
        if len(self.samples) < LATENCY_SAMPLES:
            self.samples.append(repr(latency_ms))

    def args(self) -> dict[str, LuaValue]:
        """The ``told_*`` arguments of ``told.lua`` and ``after.lua``."""
        return {"told_successes": self.count, "told_ms": round(self.ms, 3), "told_samples": " ".join(self.samples),
                "told_generation": self.generation}

    def done(self) -> None:
        """Its round trip is over: a failure waiting to follow it may go."""
        if self.answered is not None:
            self.answered.set()


class Batches:
    """The batch being counted, and the one on its way to Redis (if any), of one shared breaker."""

    def __init__(self) -> None:
        self.counting = Told()
        self._on_its_way: Told | None = None
        self._lock = threading.Lock()

    def due(self, now: float) -> bool:
        """Whether the batch being counted should be told now (it is old enough, or big enough)."""
        return self.counting.count >= TOLD_MAX or now - self.counting.since >= TOLD_SECONDS

    def take(self) -> Told:
        """The batch counted so far, to tell on its own (``done()`` once its round trip is over).

        Taken before the round trip: calls ending meanwhile start the next batch, and no other request
        can send this one a second time.
        """
        with self._lock:
            told, self.counting = self.counting, Told()
            if told.count:
                told.answered = threading.Event()
                self._on_its_way = told
        return told

    def take_for_failure(self, wait: float) -> Told:
        """The batch counted so far, to send with a failure, once a batch on its way has been answered.

        ``wait``: how long at most (the batch's own round trip is bounded by the Redis timeout).
        """
        with self._lock:
            told, self.counting = self.counting, Told()
            on_its_way = self._on_its_way
        if on_its_way is not None and on_its_way.answered is not None:
            on_its_way.answered.wait(wait)
        return told
