"""The event-stream decoder (``app/upstream/sse.py``): the parts of the WHATWG rules a status
stream needs, whatever the line endings and however the bytes are cut into chunks."""

from __future__ import annotations

import pytest

from app.upstream.sse import EventDataDecoder, EventTooLarge


def decode(*chunks: bytes) -> list[str]:
    decoder = EventDataDecoder()
    return [data for chunk in chunks for data in decoder.feed(chunk)]


def byte_by_byte(stream: bytes) -> list[str]:
    return decode(*(stream[i : i + 1] for i in range(len(stream))))


STREAM = (
    b": keep-alive\r\n\r\n"
    b"event: status\r\nid: 7\r\nretry: 1000\r\ndata: first\r\n\r\n"
    b"data:second\rdata:  two\r\r"
    b"data: third\n\n"
)


@pytest.mark.parametrize("split", ["whole", "byte by byte"])
def test_events_are_the_same_whatever_the_line_endings_and_chunks(split: str) -> None:
    events = decode(STREAM) if split == "whole" else byte_by_byte(STREAM)
    # One space after the colon is dropped, a second one is data; comments, event, id and retry
    # carry no data.
    assert events == ["first", "second\n two", "third"]


def test_data_lines_of_one_event_are_joined_with_newlines() -> None:
    assert decode(b'data: {"status":\ndata: "IN_QUEUE"}\ndata\n\n') == ['{"status":\n"IN_QUEUE"}\n']


def test_a_crlf_cut_between_chunks_ends_one_line_only() -> None:
    assert decode(b"data: a\r", b"", b"\ndata: b\r\n\r\n") == ["a\nb"]


def test_only_cr_and_lf_end_lines() -> None:
    # JSON leaves U+2028 and U+0085 unescaped in strings; they are not line ends in an event stream.
    text = '{"message": "a\u2028b\u0085c"}'
    assert decode(f"data: {text}\n\n".encode()) == [text]


def test_a_character_cut_between_chunks_is_decoded_whole() -> None:
    encoded = "data: café\n\n".encode()
    cut = encoded.index(b"\xa9")  # the second byte of "é"
    assert decode(encoded[:cut], encoded[cut:]) == ["café"]


def test_a_leading_byte_order_mark_is_dropped() -> None:
    assert decode(b"\xef\xbb\xbfdata: x\n\n") == ["x"]


def test_blank_lines_without_data_and_an_unfinished_event_give_nothing() -> None:
    assert decode(b"\n\n: only a comment\n\nid: 3\n\ndata: never ended\n") == []


def test_an_event_over_the_limit_is_refused() -> None:
    decoder = EventDataDecoder(max_event_bytes=100)
    decoder.feed(b"data: " + b"x" * 60 + b"\n")
    with pytest.raises(EventTooLarge):
        decoder.feed(b"data: " + b"y" * 60)
