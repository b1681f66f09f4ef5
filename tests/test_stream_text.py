"""Incremental detokenization for streams: what is sent is always a prefix of the final text
(partial UTF-8 characters and possible starts of a stop string are held back)."""

from __future__ import annotations

from drover.infer.stream_text import TextDelta


class ByteTokenizer:
    """Token i is byte i: decoding a cut UTF-8 character gives U+FFFD, as byte-level BPE does."""

    def decode(self, ids, skip_special_tokens=True):
        return bytes(ids).decode("utf-8", errors="replace")


def _stream(text: str, stop: tuple[str, ...] = ()) -> tuple[list[str], TextDelta]:
    delta = TextDelta(ByteTokenizer(), stop)
    return [delta.push(b) for b in text.encode()], delta


def test_a_multibyte_character_is_sent_whole():
    pieces, delta = _stream("né")
    assert pieces == ["n", "", "é"] and delta.finish("né") == ""


def test_a_possible_stop_string_is_held_until_it_is_not_one():
    pieces, delta = _stream("ab##c", stop=("###",))
    assert pieces == ["a", "b", "", "", "##c"]
    pieces, delta = _stream("xy##", stop=("###",))
    assert "".join(pieces) == "xy" and delta.finish("xy##") == "##"  # max_tokens hit: the held text is sent


def test_text_from_a_whole_stop_string_on_is_never_sent():
    pieces, delta = _stream("hi STOP more", stop=("STOP",))
    final = "hi "  # what generation returns, cut at the stop string
    assert "".join(pieces) == final and delta.finish(final) == "" and delta.sent == final


def test_the_longest_held_prefix_counts_across_several_stop_strings():
    pieces, _ = _stream("a<e", stop=("<end>", "e"))
    assert "".join(pieces) == "a"
