"""The NDJSON decoder: tables, then random values cut anywhere."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from switchyard.protocol.ndjson import LineDecoder, LineTooLong, MalformedLine, NDJSONDecoder


@pytest.mark.parametrize(
    ("stream", "values", "last"),
    [
        (b'{"a":1}\n{"b":2}\n', [{"a": 1}, {"b": 2}], []),
        (b'{"a":1}\r\n{"b":2}\r\n', [{"a": 1}, {"b": 2}], []),  # the CR is JSON whitespace
        (b'{"a":1}\n\n  \n\t\r\n{"b":2}\n', [{"a": 1}, {"b": 2}], []),  # blank lines are nothing
        (b'{"a":1}\n{"b":2}', [{"a": 1}], [{"b": 2}]),  # the last line without its LF, at close
        (b'{"a":1}\n   ', [{"a": 1}], []),
        (b'1\n"x"\n[1, 2]\nnull\n', [1, "x", [1, 2], None], []),  # any JSON value
        (b'{"s":"a\\nb"}\n', [{"s": "a\nb"}], []),  # an escaped newline is inside the value
        (b"", [], []),
    ],
)
def test_values(stream: bytes, values: list[Any], last: list[Any]) -> None:
    decoder = NDJSONDecoder()
    assert decoder.feed(stream) == values
    assert decoder.close() == last
    assert decoder.close() == []


def test_a_line_that_is_not_json_is_refused() -> None:
    with pytest.raises(MalformedLine):
        NDJSONDecoder().feed(b'{"a":1}\n{"b":\n')
    decoder = NDJSONDecoder()
    assert decoder.feed(b'{"a":1}\n{"b":') == [{"a": 1}]
    with pytest.raises(MalformedLine):
        decoder.close()


def test_a_line_that_never_ends_is_refused_at_the_limit() -> None:
    decoder = NDJSONDecoder(max_line=10)
    assert decoder.feed(b'{"a":"12') == []
    with pytest.raises(LineTooLong):
        decoder.feed(b'345"}')
    assert NDJSONDecoder(max_line=10).feed(b'{"a":"12345"}\n') == [{"a": "12345"}]  # whole in one read


def test_lines_keep_their_line_feed() -> None:
    lines = LineDecoder()
    assert lines.feed(b"a\nb") == [b"a\n"]
    assert lines.feed(b"c\r\n\n") == [b"bc\r\n", b"\n"]
    assert lines.feed(b"d") == []
    assert lines.close() == b"d"


@pytest.mark.parametrize("seed", range(100))
def test_random_values_decode_whatever_the_cuts(seed: int) -> None:
    rng = random.Random(seed)
    values = [{"i": i, "text": "".join(rng.choice("ab é\n\"{}") for _ in range(rng.randrange(20)))}
              for i in range(rng.randrange(1, 20))]
    stream = b"".join(json.dumps(v, ensure_ascii=rng.random() < 0.5).encode() + rng.choice([b"\n", b"\r\n", b"\n\n"])
                      for v in values)
    if rng.random() < 0.5:
        stream = stream.rstrip(b"\r\n")  # the last line without its end
    cuts = sorted(rng.sample(range(1, len(stream)), min(len(stream) - 1, rng.randrange(30))))
    decoder = NDJSONDecoder()
    out = [v for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True) for v in decoder.feed(stream[a:b])]
    assert out + decoder.close() == values
