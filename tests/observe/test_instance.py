"""Being one of an instance's workers (gateway/observe/instance.py): the run directory, the election lock,
whole-file writes, the fresh start after a fork, and finding the sibling workers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.observe.instance import atomic_write, private_run_dir, reset_after_fork, try_flock, worker_pids

REPO = Path(__file__).resolve().parents[2]


def test_a_private_run_dir_is_new_and_empty() -> None:
    first, second = private_run_dir(), private_run_dir()
    assert first != second and os.path.isdir(first) and os.listdir(first) == []


def test_one_holder_of_the_lock_at_a_time_and_the_next_takes_over(tmp_path: Path) -> None:
    path = str(tmp_path / "job.lock")
    held = try_flock(path)
    assert held is not None
    assert try_flock(path) is None  # another descriptor, even in this process, is refused
    os.close(held)  # the holder dies: the kernel drops its lock
    again = try_flock(path)
    assert again is not None
    os.close(again)


def test_an_atomic_write_replaces_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "figures.json"
    path.write_bytes(b"old")
    atomic_write(str(path), b"new and longer")
    assert path.read_bytes() == b"new and longer"
    assert os.listdir(tmp_path) == ["figures.json"]  # nothing left aside


def test_a_failed_atomic_write_leaves_the_old_file_and_no_litter(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "figures.json"
    path.write_bytes(b"old")

    def refuse(source: str, target: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(str(path), b"new")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["figures.json"]


class Owner:
    def __init__(self) -> None:
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1


def test_a_forked_child_resets_its_owner_and_the_parent_does_not() -> None:
    owner = Owner()
    reset_after_fork(owner, Owner.reset)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what it sees, then leave without running the parent's cleanup
        os.write(write, str(owner.resets).encode())
        os._exit(0)
    os.close(write)
    seen = os.read(read, 16)
    os.close(read)
    os.waitpid(pid, 0)
    assert seen == b"1" and owner.resets == 0


def test_an_owner_gone_before_the_fork_is_not_kept_alive() -> None:
    owner = Owner()
    reset_after_fork(owner, Owner.reset)
    del owner  # only a weak reference was kept: nothing to reset, and no error in the child
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_without_gunicorn_the_worker_is_alone() -> None:
    assert worker_pids(False) == [os.getpid()]


def test_siblings_are_the_parents_children_running_the_same_command() -> None:
    code = ("import os, sys, time; from gateway.observe.instance import worker_pids; "
            "print(os.getpid(), worker_pids(True))")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])  # not a worker
    try:
        done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                              capture_output=True, text=True, timeout=60, cwd=REPO)
    finally:
        other.kill()
        other.wait()
    assert done.returncode == 0, done.stderr
    own, _, pids = done.stdout.partition(" ")
    assert pids.strip() == f"[{own}]"
