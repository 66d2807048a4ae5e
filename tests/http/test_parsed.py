"""``wsgi.input`` (gateway/http/parsed.py): the body handed out as the app reads it, pulled only when needed."""

from __future__ import annotations

from collections import deque

import pytest

from gateway.errors import BadRequest
from gateway.http.parsed import Input, Request


class Socketless:
    """A body source that hands over one queued piece per pull, then completes the request."""

    def __init__(self, *pieces: bytes, fail: bool = False) -> None:
        self.pieces = deque(pieces)
        self.pulls = 0
        self.fail = fail

    def pull(self, request: Request) -> None:
        self.pulls += 1
        if self.fail:
            raise BadRequest("The client closed the connection before the request body ended.")
        request.body.append(self.pieces.popleft())
        if not self.pieces:
            request.complete = True


def body(*pieces: bytes, parsed: bytes = b"", fail: bool = False) -> tuple[Input, Socketless]:
    """An ``Input`` whose request already holds ``parsed`` and whose socket will give ``pieces``."""
    request = Request()
    if parsed:
        request.body.append(parsed)
    request.complete = not pieces and not fail
    source = Socketless(*pieces, fail=fail)
    return Input(source, request), source


def test_a_fresh_request_is_a_kept_alive_http11_get_with_nothing_yet() -> None:
    request = Request()
    assert (request.method, request.version, request.keep_alive, request.complete) == ("GET", "1.1", True, False)
    assert request.target == b"" and not request.headers and not request.body and request.body_size == 0


def test_read_all_joins_what_was_parsed_and_what_the_socket_brings() -> None:
    stream, source = body(b"lo ", b"world", parsed=b"hel")
    assert stream.read() == b"hello world"
    assert source.pulls == 2
    assert stream.read() == b""  # the end stays the end


def test_read_of_a_size_pulls_no_more_than_it_needs() -> None:
    stream, source = body(b"defgh", parsed=b"abc")
    assert stream.read(2) == b"ab"
    assert source.pulls == 0  # what the parser had was enough
    assert stream.read(4) == b"cdef"
    assert source.pulls == 1
    assert stream.read(None) == b"gh"


def test_readline_and_iteration_split_on_newlines() -> None:
    stream, _ = body(b"two\nthr", b"ee", parsed=b"one\n")
    assert stream.readline() == b"one\n"
    assert list(stream) == [b"two\n", b"three"]


def test_readline_stops_at_its_size_and_readlines_takes_the_rest() -> None:
    stream, _ = body(parsed=b"abcdef\ngh\n")
    assert stream.readline(3) == b"abc"
    assert stream.readlines() == [b"def\n", b"gh\n"]


def test_a_body_the_socket_cannot_finish_raises_the_gateway_error() -> None:
    stream, _ = body(parsed=b"part", fail=True)
    with pytest.raises(BadRequest):
        stream.read()
