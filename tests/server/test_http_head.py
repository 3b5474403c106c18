"""proxy.http.HeadReader without sockets: the 16 KiB and 100-header limits, whatever the read boundaries."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.http import (
    BAD_REQUEST,
    HEAD_TOO_LARGE,
    MAX_REQUEST_HEAD_BYTES,
    TOO_MANY_HEADERS,
    BadHead,
    HeadReader,
    RequestHead,
    encode_answer,
)
from tests.fuzzing import fuzz_settings


def head_of(size: int, terminator: bytes = b"\r\n\r\n") -> bytes:
    start = b"GET /x HTTP/1.1\r\nHost: h\r\nX-Pad: "
    return start + b"a" * (size - len(start) - len(terminator)) + terminator


def feed_in(chunks: list[bytes]) -> RequestHead | BadHead | None:
    reader = HeadReader()
    for chunk in chunks:
        decided = reader.feed(chunk)
        if decided is not None:
            return decided
    return None


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@pytest.mark.parametrize("terminator", [b"\r\n\r\n", b"\n\n", b"\r\n\n"])
def test_the_limit_counts_the_whole_head_with_its_terminator(terminator: bytes) -> None:
    assert isinstance(feed_in([head_of(MAX_REQUEST_HEAD_BYTES, terminator)]), RequestHead)
    assert feed_in([head_of(MAX_REQUEST_HEAD_BYTES + 1, terminator)]) == HEAD_TOO_LARGE


def test_a_head_that_never_ends_is_refused_once_it_reaches_the_limit() -> None:
    reader = HeadReader()
    assert reader.feed(b"GET / HTTP/1.1\r\nX: " + b"a" * 100) is None
    assert reader.feed(b"a" * (MAX_REQUEST_HEAD_BYTES - 120)) is None
    assert reader.feed(b"a" * 100) == HEAD_TOO_LARGE


@pytest.mark.parametrize("terminator", [b"\r\n\r\n", b"\n\n", b"\r\n\n"])
def test_a_terminator_split_across_reads_is_found(terminator: bytes) -> None:
    head = b"GET / HTTP/1.1\r\nHost: h" + terminator
    for first in range(len(head) - 6, len(head)):
        for second in range(first, len(head)):
            decided = feed_in([head[:first], head[first:second], head[second:]])
            assert isinstance(decided, RequestHead), (first, second)


def test_bytes_after_the_head_are_kept_for_the_websocket() -> None:
    decided = feed_in([b"GET / HTTP/1.1\r\nHost: h\r\n\r\n\x81\x05hel", b"lo"])
    assert isinstance(decided, RequestHead)
    assert decided.buffered == b"\x81\x05hel"


@pytest.mark.parametrize(("count", "decision"), [(100, RequestHead), (101, BadHead)])
def test_more_than_100_headers_are_refused(count: int, decision: type) -> None:
    head = b"GET / HTTP/1.1\r\nHost: h\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(count - 1)) + b"\r\n"
    decided = feed_in([head])
    assert isinstance(decided, decision)
    if count > 100:
        assert decided == TOO_MANY_HEADERS


@pytest.mark.parametrize("head", [b"\x16\x03\x01 not http\r\n\r\n", b"GET / HTTP/1.1\r\nNo colon\r\n\r\n", b"\r\n\r\n"])
def test_garbage_is_a_bad_request(head: bytes) -> None:
    assert feed_in([head]) == BAD_REQUEST


@fuzz_settings(200)
@pytest.mark.fuzz
@given(
    st.integers(30, MAX_REQUEST_HEAD_BYTES + 64),
    st.sampled_from([b"\r\n\r\n", b"\n\n"]),
    st.lists(st.integers(0, 1 << 20), max_size=8),
    st.binary(max_size=16),
)
def test_the_decision_does_not_depend_on_the_read_boundaries(
    size: int, terminator: bytes, cuts: list[int], after: bytes
) -> None:
    data = head_of(size, terminator) + after
    whole = feed_in([data])
    assert feed_in(split(data, cuts)) == whole or (isinstance(whole, RequestHead) and whole.request.target == b"/x")
    assert (whole == HEAD_TOO_LARGE) == (size > MAX_REQUEST_HEAD_BYTES)


@fuzz_settings(200)
@pytest.mark.fuzz
@given(st.binary(max_size=MAX_REQUEST_HEAD_BYTES + 200), st.lists(st.integers(0, 1 << 20), max_size=8))
def test_any_bytes_get_one_bounded_decision(data: bytes, cuts: list[int]) -> None:
    reader = HeadReader()
    for chunk in split(data, cuts):
        decided = reader.feed(chunk)
        if decided is not None:
            assert isinstance(decided, RequestHead | BadHead)
            return
    assert len(data) < MAX_REQUEST_HEAD_BYTES  # undecided only while under the limit


def test_answers_close_the_connection_and_carry_the_safety_headers() -> None:
    answer = encode_answer(503, b"Busy", extra=((b"Retry-After", b"1"),))
    head = answer.split(b"\r\n\r\n")[0].split(b"\r\n")
    assert head[0] == b"HTTP/1.1 503 Service Unavailable"
    for line in (
        b"Connection: close",
        b"Retry-After: 1",
        b"X-Content-Type-Options: nosniff",
        b"Cache-Control: no-store",
    ):
        assert line in head
