"""The SSE decoder against the WHATWG standard: tables, then random streams cut anywhere."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from switchyard.protocol.sse import EventFramer, ServerSentEvent, SSEDecoder


def decode(stream: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    return decoder.feed(stream)


def datas(stream: bytes) -> list[bytes]:
    return [event.data for event in decode(stream)]


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        (b"data: x\n\n", [b"x"]),
        (b"data:x\n\n", [b"x"]),  # the space is optional
        (b"data:  x\n\n", [b" x"]),  # exactly one space is dropped
        (b"data: x \n\n", [b"x "]),  # nothing at the end is
        (b"data: a: b\n\n", [b"a: b"]),  # only the first colon splits
        (b"data: a\ndata: b\n\n", [b"a\nb"]),  # data lines join with LF
        (b"data: a\ndata:\ndata: b\n\n", [b"a\n\nb"]),
        (b"data\n\n", [b""]),  # a line without a colon is a field with an empty value
        (b"data:\n\n", [b""]),
        (b"data\ndata\n\n", [b"\n"]),
        (b": a comment\ndata: x\n:another\n\n", [b"x"]),
        (b":\n\n", []),
        (b"Data: x\n\n", []),  # field names are case-sensitive
        (b"foo: bar\ndata: x\n\n", [b"x"]),  # unknown fields are ignored
        (b"event: ping\n\n", []),  # no data: nothing is dispatched
        (b"data: x\r\n\r\n", [b"x"]),
        (b"data: x\r\r", [b"x"]),
        (b"data: a\rdata: b\ndata: c\r\n\n", [b"a\nb\nc"]),  # line ends mixed in one event
        (b"data: x\n\r\n", [b"x"]),
        (b"data: x\n\rdata: y\r\n\r", [b"x", b"y"]),  # LF then CR is a blank line
        (b"data: a\n\n\n\ndata: b\n\n", [b"a", b"b"]),
        (b"\n\n\ndata: a\n\n", [b"a"]),
        (b"\xef\xbb\xbfdata: x\n\n", [b"x"]),  # one leading byte order mark is skipped
        (b"data: x\n\n\xef\xbb\xbfdata: y\n\n", [b"x"]),  # anywhere else it is part of a field name
        (b"data: \xc3\xa9t\xc3\xa9\n\n", ["été".encode()]),
        (b"data: x\n", []),  # no blank line yet
        (b"data: {\"a\":\n data: 1}\n\n", [b"{\"a\":"]),  # " data" is not "data"
    ],
)
def test_data(stream: bytes, expected: list[bytes]) -> None:
    assert datas(stream) == expected


def test_event_names_default_to_message_and_do_not_carry_over() -> None:
    events = decode(b"event: add\ndata: 1\n\nevent: ignored\n\ndata: 2\n\nevent:\ndata: 3\n\nevent:  x\ndata: 4\n\n")
    assert [(e.event, e.data) for e in events] == [("add", b"1"), ("message", b"2"), ("message", b"3"), (" x", b"4")]


def test_the_last_event_id_outlives_its_event() -> None:
    stream = b"id: 7\ndata: a\n\ndata: b\n\nid: 8\n\ndata: c\n\nid: x\x00y\ndata: d\n\nid\ndata: e\n\n"
    assert [(e.id, e.data) for e in decode(stream)] == [("7", b"a"), ("7", b"b"), ("8", b"c"), ("8", b"d"),
                                                        ("", b"e")]


def test_retry_takes_ascii_digits_only() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b"retry: 1500\ndata: a\n\nretry: 15a\ndata: b\n\nretry: -3\n\nretry: \xd9\xa3\n\n")
    assert [(e.retry, e.data) for e in events] == [(1500, b"a"), (1500, b"b")]
    assert decoder.retry == 1500
    decoder.feed(b"retry:20\n\n")  # applies without an event
    assert decoder.retry == 20


def test_an_event_cut_short_is_held_back_until_close() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n\ndata: b\ndata: c") == [ServerSentEvent(b"a")]
    assert decoder.close() == ServerSentEvent(b"b\nc")
    assert decoder.close() is None
    empty = SSEDecoder()
    empty.feed(b"event: x\n")
    assert empty.close() is None


def test_a_crlf_split_across_reads_is_one_line_end() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\n") == []  # the LF of the CRLF, not a blank line
    assert decoder.feed(b"data: b\r") == []
    assert decoder.feed(b"\n\r") == [ServerSentEvent(b"a\nb")]
    assert decoder.feed(b"\ndata: c\r") == []  # this LF pairs with the CR before it
    assert decoder.feed(b"\r") == [ServerSentEvent(b"c")]


def test_a_byte_order_mark_split_across_reads_is_skipped() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"\xef") == []
    assert decoder.feed(b"\xbb") == []
    assert decoder.feed(b"\xbfdata: x\n\n") == [ServerSentEvent(b"x")]


def test_the_framer_cuts_after_the_last_blank_line_and_keeps_the_bytes() -> None:
    framer = EventFramer()
    assert framer.feed(b"data: 1\n\ndata: 2\n\nda") == b"data: 1\n\ndata: 2\n\n"
    assert framer.feed(b"ta: 3\r\n") == b""
    assert framer.feed(b"\r\n: more\n") == b"data: 3\n\n"
    assert framer.rest() == b": more\n"


# --------------------------------------------------------------------- random streams, cut anywhere
_LINE_ENDS = (b"\n", b"\r", b"\r\n")
_TEXT = "ab :{}\"é€ 1\t"


@dataclass
class Written:
    events: list[ServerSentEvent]  # what the writer meant
    stream: bytes


def _value(rng: random.Random) -> bytes:
    return "".join(rng.choice(_TEXT) for _ in range(rng.randrange(12))).encode()


def write_stream(rng: random.Random) -> Written:
    """A stream of random events, each line ended at random, with comments, unknown fields and
    data-less events between them; the events it holds are known without decoding it."""
    out: list[bytes] = [b"\xef\xbb\xbf"] if rng.random() < 0.2 else []
    events: list[ServerSentEvent] = []
    last_id = ""
    retry = None

    def end_line(line: bytes) -> None:
        # a CR followed by an LF would be one line end: after a CR, a blank line ends in CR or CRLF
        ends = _LINE_ENDS[1:] if not line and out and out[-1].endswith(b"\r") else _LINE_ENDS
        out.append(line + rng.choice(ends))

    for _ in range(rng.randrange(1, 12)):
        fields: list[bytes] = []
        name = rng.choice(["", "", "update", "message_start", "é"])
        if name:
            fields.append(b"event:" + rng.choice([b" ", b""]) + name.encode())
        if rng.random() < 0.3:
            last_id = rng.choice(["1", "abc", "id 3", ""])
            fields.append(b"id: " + last_id.encode())
        if rng.random() < 0.2:
            retry = rng.randrange(10_000)
            fields.append(b"retry: %d" % retry)
        if rng.random() < 0.3:
            fields.append(b":" + _value(rng))
        if rng.random() < 0.2:
            fields.append(b"other: " + _value(rng))
        rng.shuffle(fields)
        data = [_value(rng) for _ in range(rng.randrange(4))]
        after = 0  # data lines keep their order; the other fields fall anywhere between them
        for value in data:
            # one space after the colon is dropped: a value starting with a space needs it written
            sep = b": " if value.startswith(b" ") or rng.random() < 0.7 else b":"
            line = b"data" + sep + value if value or rng.random() < 0.5 else b"data"
            after = rng.randrange(after, len(fields) + 1)
            fields.insert(after, line)
            after += 1
        for line in fields:
            end_line(line)
        end_line(b"")  # the blank line
        if rng.random() < 0.2:
            end_line(b"")  # more blank lines are nothing
        if data:
            events.append(ServerSentEvent(data=b"\n".join(data), event=name or "message", id=last_id, retry=retry))
    return Written(events, b"".join(out))


def cut_anywhere(data: bytes, rng: random.Random) -> list[bytes]:
    if len(data) < 2:
        return [data]
    cuts = sorted(rng.sample(range(1, len(data)), rng.randrange(min(len(data) - 1, 30) + 1)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


@pytest.mark.parametrize("seed", range(300))
def test_random_streams_decode_to_what_was_written_however_they_are_cut(seed: int) -> None:
    rng = random.Random(seed)
    written = write_stream(rng)
    assert decode(written.stream) == written.events
    decoder = SSEDecoder()
    events = [event for piece in cut_anywhere(written.stream, rng) for event in decoder.feed(piece)]
    assert events == written.events
    assert decoder.close() is None
    byte_by_byte = SSEDecoder()
    assert [e for i in range(len(written.stream)) for e in byte_by_byte.feed(written.stream[i : i + 1])] == (
        written.events)


@pytest.mark.parametrize("seed", range(100))
def test_the_framer_forwards_every_byte_once_with_line_ends_made_lf(seed: int) -> None:
    rng = random.Random(seed)
    stream = write_stream(rng).stream
    framer = EventFramer()
    pieces = [framer.feed(piece) for piece in cut_anywhere(stream, rng)]
    expected = stream.removeprefix(b"\xef\xbb\xbf").replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    assert b"".join(pieces) + framer.rest() == expected
    assert all(not piece or piece.endswith(b"\n\n") for piece in pieces)
