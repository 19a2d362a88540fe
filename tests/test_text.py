"""Bytes shown as text (tinymono/text.py): every printable UTF-8 character is one piece, at the edges of the lead
and continuation byte ranges and at the end of a sequence."""
import pytest

from tinymono import text


@pytest.mark.parametrize("ch", ["\u00bf", "\u07c0", "\u07ff", "\uff01", "\uffe0", "\u0800", "\U0001f600"])
def test_a_character_at_the_edge_of_the_utf8_ranges_is_one_piece(ch):
    """¿ (C2 BF: the last continuation byte), ߀ (DF 80: the last two-byte lead), ！ (EF BC 81: the last three-byte
    lead), ... are whole characters, not escaped bytes."""
    data = list(ch.encode())
    assert ch.isprintable()
    assert text.byte_pieces([0x61] + data + [0x62]) == [("a", 0, 1), (ch, 1, 1 + len(data)),
                                                        ("b", 1 + len(data), 2 + len(data))]


def test_a_character_that_ends_the_sequence_is_one_piece():
    tokens = list("xب".encode())
    assert text.byte_pieces(tokens) == [("x", 0, 1), ("ب", 1, 3)]
    assert text.byte_pieces(tokens[:-1]) == [("x", 0, 1), ("\\xd8", 1, 2)], "a lead byte cut off stays one byte"


@pytest.mark.parametrize("centre", range(6))
def test_format_example_marks_exactly_the_piece_that_holds_the_centre(centre):
    tokens = list("ab".encode()) + list("ب".encode()) + list("cd".encode())  # pieces a, b, ب (2 bytes), c, d
    shown = text.format_example(tokens, centre)
    assert shown.count("\u27e6") == shown.count("\u27e7") == 1, shown
    marked = shown[shown.index("\u27e6") + 1:shown.index("\u27e7")]
    assert marked.split("\u00b7")[0] == ["a", "b", "ب", "ب", "c", "d"][centre], shown
