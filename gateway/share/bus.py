"""Messages between the workers of one gateway instance when there is no Redis.

Without ``REDIS_URL`` each worker keeps its own cache and breakers, yet a write answered by one
worker must drop the cached entry in all of them (on every worker, within 1 s), and an
operator's forced breaker state must hold whichever worker answers. So each such event is appended
as one JSON line to a log in the instance's run directory, and every worker reads what its
siblings appended before it looks up the cache or asks a breaker.

Every publish also writes a new random value into a small shared-memory file beside the log, so a
worker's look before each lookup is one 8-byte compare in memory; it reads the log only when the
value changed (a value is read before the log, so a message appended meanwhile is never missed).

When the log grows past ``MAX_LOG_BYTES`` a writer replaces it with an empty one; a worker that sees
the file replaced cannot know what it missed and tells its subscribers (the cache drops everything).
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import threading
import time
import uuid
from collections.abc import Callable

# Look before every lookup: one compare in shared memory is cheaper than any window in which a
# worker could still answer from an entry a sibling has dropped.
CHECK_EVERY = 0.0
MAX_LOG_BYTES = 4 * 1024 * 1024
LOG_NAME = "instance-bus.log"
SEQ_NAME = "instance-bus.seq"
SEQ_BYTES = 8

log = logging.getLogger(__name__)
Message = dict[str, object]  # one JSON object: its fields, and the "topic" and "pid" the bus adds
Handler = Callable[[Message], None]


class InstanceBus:
    """An append-only log in the run directory that every worker of the instance reads.

    The first line of each log names its generation, so a worker notices a replaced log even when
    the file system hands the new file the old inode number.
    """

    def __init__(self, run_dir: str, monotonic: Callable[[], float] = time.monotonic,
                 pid: int | None = None) -> None:
        # Built by create_app in each worker (never preloaded), so the pid is the worker's own.
        self.path = os.path.join(run_dir, LOG_NAME)
        self._monotonic = monotonic
        self._pid = os.getpid() if pid is None else pid
        self._checked = 0.0
        self._handlers: dict[str, Handler] = {}
        self._gap_handlers: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        # A worker starting now (at boot, or replacing one that exited) reads the current log from its
        # start at its first poll: an operator's forced breaker state published before it existed
        # holds for it too, and replayed drops find nothing in its empty cache. The log exists from the
        # first worker's start, so any later generation means a replacement.
        self._generation: bytes | None = None
        self._offset = 0
        if not os.path.exists(self.path):
            self._new_log(replace=False)
        self._seq = self._map_seq(os.path.join(run_dir, SEQ_NAME))
        self._seen = b""  # never the marker's value: the first poll reads what is already in the log
        with open(self.path, "rb") as handle:
            self._generation = handle.readline()
            self._offset = len(self._generation)

    @staticmethod
    def _map_seq(path: str) -> mmap.mmap:
        """Map the shared change marker (created zeroed by whichever worker comes first)."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < SEQ_BYTES:
                os.ftruncate(fd, SEQ_BYTES)
            return mmap.mmap(fd, SEQ_BYTES)
        finally:
            os.close(fd)

    def subscribe(self, topic: str, handler: Handler, on_gap: Callable[[], None] | None = None) -> None:
        """Call ``handler(message)`` for each message a sibling publishes on ``topic``."""
        self._handlers[topic] = handler
        if on_gap is not None:
            self._gap_handlers.append(on_gap)

    def poll(self) -> None:
        """Deliver what siblings published since the last look (cheap: one compare while nothing changed)."""
        seen = self._seq[:SEQ_BYTES]
        if seen == self._seen:
            return
        now = self._monotonic()
        if now - self._checked < CHECK_EVERY:
            return
        self._checked = now
        with self._lock:
            self._seen = seen
            self._read()

    def _read(self) -> None:
        try:
            size = os.path.getsize(self.path)
        except FileNotFoundError:
            return
        if size == self._offset:
            return
        with open(self.path, "rb") as handle:
            generation = handle.readline()
            if generation != self._generation:
                if self._generation is not None:  # replaced: we may have missed messages
                    for on_gap in self._gap_handlers:
                        on_gap()
                self._generation, self._offset = generation, len(generation)
            handle.seek(self._offset)
            data = handle.read()
        complete = data.rfind(b"\n") + 1  # a line still being written is read next time
        self._offset += complete
        for line in data[:complete].splitlines():
            self._deliver(line)

    def _deliver(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            return
        if not isinstance(message, dict) or message.get("pid") == self._pid:
            return
        handler = self._handlers.get(str(message.get("topic")))
        if handler is not None:
            try:
                handler(message)
            except Exception:  # one bad message must not stop a worker
                log.exception("instance bus message failed")

    def _new_log(self, replace: bool) -> None:
        """Put a fresh log (just its generation line) in place: create it, or replace a full one."""
        fresh = f"{self.path}.{self._pid}.{uuid.uuid4().hex}.tmp"
        with open(fresh, "wb") as handle:
            handle.write(json.dumps({"generation": uuid.uuid4().hex}).encode() + b"\n")
        try:
            if replace:
                os.replace(fresh, self.path)
            else:
                os.link(fresh, self.path)  # fails if a sibling created it first: then theirs is used
        except FileExistsError:
            pass
        finally:
            if os.path.exists(fresh):
                os.unlink(fresh)

    def publish(self, topic: str, message: Message) -> None:
        """Tell every sibling worker (not this one)."""
        with self._lock:
            self._read()  # catch up first, so the gap check below is about others' messages only
        line = (json.dumps({**message, "topic": topic, "pid": self._pid}) + "\n").encode()
        try:
            if os.path.getsize(self.path) > MAX_LOG_BYTES:
                self._new_log(replace=True)
        except FileNotFoundError:
            self._new_log(replace=False)
        while True:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)  # one write: lines from several workers never interleave
                written_to = os.fstat(fd).st_ino
            finally:
                os.close(fd)
            try:
                if os.stat(self.path).st_ino == written_to:
                    break
            except FileNotFoundError:
                break
            # The log was replaced while we wrote: say it again in the new one.
        self._seq[:SEQ_BYTES] = os.urandom(SEQ_BYTES)  # after the line: a sibling that sees it finds the line
