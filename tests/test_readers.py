"""Tests for rnnkit.data.readers: clear errors for bad files, bundled corpora, splits."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnkit.data.readers import IRISH_TUNES, TINY_SHAKESPEARE, bundled_path, read_text, split_text
from rnnkit.errors import DataError


def test_missing_file(tmp_path):
    path = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError) as info:
        read_text(path)
    assert isinstance(info.value, DataError)
    assert str(info.value) == f"{path}: no such file"


def test_directory(tmp_path):
    with pytest.raises(DataError, match="is a directory"):
        read_text(tmp_path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    with pytest.raises(DataError) as info:
        read_text(path)
    assert str(info.value).startswith(f"{path}: is empty")


def test_non_utf8_names_offset_line_and_byte(tmp_path):
    path = tmp_path / "data.txt"
    data = b"first line\nsecond\nthird caf\xe9 au lait\n"
    path.write_bytes(data)
    with pytest.raises(DataError) as info:
        read_text(path)
    message = str(info.value)
    offset = data.index(b"\xe9")
    assert message.startswith(f"{path}: byte 0xe9 at offset {offset} (line 3)")
    assert "--encoding latin-1" in message
    assert "\n" not in message
    assert read_text(path, encoding="latin-1").endswith("café au lait\n")


def test_unknown_encoding(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("abc")
    with pytest.raises(DataError, match="unknown text encoding"):
        read_text(path, encoding="no-such-codec")


def test_bom_and_line_endings_kept(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbfab\r\ncd")
    assert read_text(path) == "ab\r\ncd"


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=64),
    encoding=st.sampled_from(["utf-8", "ascii", "utf-16", "cp1252", "latin-1"]),
)
def test_fuzz_read_text_returns_str_or_data_error(tmp_path_factory, data, encoding):
    path = tmp_path_factory.mktemp("fuzz") / "f.txt"
    path.write_bytes(data)
    try:
        text = read_text(path, encoding=encoding)
    except DataError as exc:  # any other exception type fails the test
        assert str(path) in str(exc)
        assert "\n" not in str(exc)
    else:
        expected = data.decode(encoding)
        if encoding == "utf-8":
            expected = expected.removeprefix("\ufeff")
        assert text == expected


def test_bundled_corpora():
    text = read_text(bundled_path(TINY_SHAKESPEARE))
    assert text.startswith("First Citizen:") and len(text) > 1_000_000
    assert bundled_path(IRISH_TUNES).is_file()
    with pytest.raises(FileNotFoundError, match="tinyshakespeare.txt"):
        bundled_path("missing.txt")
    with pytest.raises(FileNotFoundError):
        bundled_path("../readers.py")


def test_split_text():
    text = "abcdefghij" * 10
    train, valid = split_text(text)
    assert (train, valid) == (text[:90], text[90:])
    assert split_text("abcdefghij", 0.25) == ("abcdefg", "hij")
    with pytest.raises(ValueError):
        split_text(text, 1.0)
