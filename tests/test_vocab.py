"""Tests for rnnkit.data.vocab: building, encoding/decoding, specials, unknowns, JSON."""

import json

import numpy as np
import pytest
import torch

from rnnkit.data.vocab import SPECIALS, Vocab
from rnnkit.errors import DataError


def test_char_build_is_sorted_characters_after_specials():
    v = Vocab.build("hello world")
    assert v.itos[:4] == list(SPECIALS)
    assert v.itos[4:] == sorted(set("hello world"))
    assert (v.pad_id, v.unk_id, v.bos_id, v.eos_id) == (0, 1, 2, 3)
    assert len(v) == 4 + len(set("hello world"))
    assert "h" in v and "z" not in v
    assert v.stoi["h"] == v.itos.index("h")


def test_char_round_trip():
    text = "To be, or not to be:\nthat is the question."
    v = Vocab.build(text)
    ids = v.encode(text)
    assert len(ids) == len(text)
    assert v.decode(ids) == text
    assert v.decode(torch.tensor(ids)) == text
    assert v.decode(np.array(ids)) == text


def test_word_build_orders_by_frequency_then_alphabet():
    v = Vocab.build("b a c a b a d", level="word")
    assert v.itos[4:] == ["a", "b", "c", "d"]
    text = "a b  c\td\n a"
    assert v.decode(v.encode(text)) == "a b c d a"


def test_word_build_from_token_lists():
    v = Vocab.build([["x", "y"], ["y", "z"]], level="word", specials=())
    assert v.itos == ["y", "x", "z"]
    assert v.encode(["z", "y"]) == [2, 0]


def test_max_size_and_min_freq():
    text = "a a a a b b b c c d"
    v = Vocab.build(text, level="word", max_size=6)
    assert len(v) == 6 and v.itos[4:] == ["a", "b"]
    v = Vocab.build(text, level="word", min_freq=2)
    assert v.itos[4:] == ["a", "b", "c"]
    v = Vocab.build("aaabbc", level="char", max_size=6)
    assert v.itos[4:] == ["a", "b"]
    with pytest.raises(ValueError):
        Vocab.build(text, max_size=3)


def test_specials_subset_and_none():
    v = Vocab(["a", "b"], specials=("<pad>",))
    assert v.pad_id == 0 and v.unk_id is None and v.bos_id is None and v.eos_id is None
    v = Vocab(["a", "b"], specials=())
    assert v.itos == ["a", "b"] and v.pad_id is None
    v = Vocab(["<eos>", "x"], specials=("<eos>", "<bos>"), level="word")
    assert (v.eos_id, v.bos_id) == (0, 1) and v.itos == ["<eos>", "<bos>", "x"]


def test_decode_skips_specials_unless_asked():
    v = Vocab.build("ab")
    ids = [v.bos_id, *v.encode("ab"), v.eos_id, v.pad_id]
    assert v.decode(ids) == "ab"
    assert v.decode(ids, keep_specials=True) == "<bos>ab<eos><pad>"
    with pytest.raises(ValueError, match="out of range"):
        v.decode([len(v)])


def test_unknown_handling():
    v = Vocab.build("abc")
    assert v.encode("abz", unknown="unk") == [v.stoi["a"], v.stoi["b"], v.unk_id]
    assert v.encode("azbz", unknown="drop") == [v.stoi["a"], v.stoi["b"]]
    with pytest.raises(DataError) as info:
        v.encode("aé€é", unknown="error")
    assert str(info.value) == "characters not in the vocabulary: 'é', '€'"
    no_unk = Vocab.build("abc", specials=())
    with pytest.raises(DataError, match="no <unk>"):
        no_unk.encode("az")
    w = Vocab.build("the cat", level="word")
    with pytest.raises(DataError, match="words not in the vocabulary: 'dog'"):
        w.encode("the dog", unknown="error")
    with pytest.raises(ValueError):
        v.encode("a", unknown="ignore")


def test_many_unknowns_are_summarised():
    v = Vocab.build("a")
    with pytest.raises(DataError, match="and 5 more"):
        v.encode("bcdefghijklmnop", unknown="error")


def test_invalid_construction():
    with pytest.raises(ValueError, match="duplicate"):
        Vocab(["a", "a"])
    with pytest.raises(ValueError, match="single characters"):
        Vocab(["ab"], level="char")
    with pytest.raises(ValueError, match="level"):
        Vocab(["a"], level="byte")


def test_json_round_trip(tmp_path):
    for v in (Vocab.build("héllo\nwörld"), Vocab.build("to be or not to be", level="word")):
        assert Vocab.from_dict(json.loads(json.dumps(v.to_dict()))) == v
        path = tmp_path / f"{v.level}.json"
        v.save(path)
        loaded = Vocab.load(path)
        assert loaded == v and loaded.level == v.level
        assert not list(tmp_path.glob(".*.tmp"))
    assert Vocab.build("ab") != Vocab.build("abc")
    assert Vocab.build("ab") != Vocab.build("ab", level="word")


def test_load_errors_name_the_file(tmp_path):
    bad = tmp_path / "vocab.json"
    bad.write_text('{"level": "char",\n "tokens": [}')
    with pytest.raises(DataError) as info:
        Vocab.load(bad)
    assert str(info.value).startswith(f"{bad}:2:")
    bad.write_text('{"level": "char"}')
    with pytest.raises(DataError, match="missing key"):
        Vocab.load(bad)
    with pytest.raises(FileNotFoundError):
        Vocab.load(tmp_path / "nope.json")
