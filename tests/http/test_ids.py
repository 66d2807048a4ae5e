"""Request ids: 128 random bits in hex, never handed out twice, not shared with a forked worker."""

from __future__ import annotations

import os
import re

from gateway.http import ids
from gateway.http.ids import new_request_id


def test_ids_are_32_hex_digits_and_never_repeat_across_refills() -> None:
    made = [new_request_id() for _ in range(1000)]  # several refills of 256
    assert all(re.fullmatch(r"[0-9a-f]{32}", rid) for rid in made)
    assert len(set(made)) == len(made)


def test_a_forked_child_draws_its_own_ids_not_the_parents_pending_ones() -> None:
    new_request_id()  # the parent now holds ids not handed out yet
    pending = set(ids._IDS)
    assert pending
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its first ids and leave at once
        os.close(read)
        os.write(write, " ".join(new_request_id() for _ in range(5)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split())
    os.waitpid(pid, 0)
    assert len(child) == 5
    assert not child & pending
