"""Process lifecycle facts the ops endpoints report: start time and draining after SIGTERM."""

from __future__ import annotations

import time


class Lifecycle:
    """Start time, and whether this worker is draining (stopped accepting, finishing in-flight requests)."""

    def __init__(self) -> None:
        self.started_at = time.time()
        self.draining = False

    def drain(self) -> None:
        """Mark the worker as draining; ``/health`` answers 503 from now on."""
        self.draining = True
