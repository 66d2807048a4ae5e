"""Being one of an instance's forked workers: the run directory they share, electing one of them for a
job, files replaced whole, a fresh start after a fork, and finding the sibling workers.

Every observer needs these: the stats publish through the run directory, one worker per instance
polls the health checks and samples the history (whoever holds an ``flock``), and a scrape reports
the process metrics of every worker.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import tempfile
import weakref
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def private_run_dir() -> str:
    """A run directory for a process that was given none (development server, tests), removed at exit."""
    path = tempfile.mkdtemp(prefix="gateway-run-")
    atexit.register(shutil.rmtree, path, True)
    return path


def try_flock(path: str) -> int | None:
    """Take an exclusive ``flock`` on ``path`` without waiting: the open descriptor, or None if another holds it.

    How one worker per instance is elected for a job (health checks, the stats history): the
    kernel drops the lock when its holder dies, and another worker takes it on its next try.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def atomic_write(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a reader sees the old file or the new one, never half of it."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def reset_after_fork(owner: T, reset: Callable[[T], None]) -> None:
    """Run ``reset(owner)`` in every forked child, while ``owner`` lives (it is held weakly).

    A child must not publish under its parent's identity, nor keep its parent's locks and threads.
    """
    ref = weakref.ref(owner)

    def after_fork() -> None:
        target = ref()
        if target is not None:
            reset(target)

    os.register_at_fork(after_in_child=after_fork)


def worker_pids(multiprocess: bool) -> list[int]:
    """This worker and, under gunicorn (multiprocess mode), its sibling workers.

    The siblings are the master's children that run the same command line as this one (forked
    workers do), so nothing else the parent may have started is taken for a worker.
    """
    own = os.getpid()
    if not multiprocess:
        return [own]
    master = os.getppid()
    try:
        with open(f"/proc/{master}/task/{master}/children", encoding="ascii") as handle:
            children = [int(p) for p in handle.read().split()]
    except (OSError, ValueError):
        children = [int(entry) for entry in os.listdir("/proc") if entry.isdigit() and _parent(int(entry)) == master]
    mine = _cmdline(own)
    return sorted({own, *(pid for pid in children if pid != own and _cmdline(pid) == mine)})


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return int(handle.read().rpartition(")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _cmdline(pid: int) -> bytes | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read()
    except OSError:
        return None
