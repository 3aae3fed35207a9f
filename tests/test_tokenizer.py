"""The item tokenizer: round trips, canonical whitespace-free tokens, unknown ids, save/load."""

import pytest
from transformers import AutoTokenizer

from modeling_geniusrec import ItemTokenizer, escape_item_id, unescape_item_id

RAW = ["Toy Story (1995)", "Amélie (2001)", "100% Love", "tab\there", "[PAD]", "東京物語 (1953)", "B00X 4", "a%20b"]


def test_round_trip_with_spaces_unicode_and_percent():
    tok = ItemTokenizer.from_raw_ids(RAW)
    ids = tok.encode_items(RAW)
    assert ids == list(range(4, 4 + len(RAW)))
    assert tok.decode_items(ids) == RAW
    for raw in RAW:
        token = escape_item_id(raw)
        assert not any(c.isspace() for c in token)
        assert unescape_item_id(token) == raw
    assert escape_item_id("a%20b") != escape_item_id("a b")  # the escape is injective


def test_space_joined_tokens_tokenize_back_to_the_same_ids():
    tok = ItemTokenizer.from_raw_ids(RAW)
    ids = [5, 4, 9, 7]
    text = " ".join(tok.convert_ids_to_tokens(ids))
    assert tok(text, add_special_tokens=False)["input_ids"] == ids
    assert tok("[SEP] " + text + " [EOS]")["input_ids"] == [tok.sep_token_id, *ids, tok.eos_token_id]


def test_special_tokens_come_first():
    tok = ItemTokenizer.from_raw_ids(["x"])
    assert (tok.pad_token_id, tok.sep_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert len(tok) == 5
    assert tok.encode_items(["[PAD]"], unknown="unk") == [3]  # an unknown raw id spelled like a special token


def test_unknown_ids_error_unk_or_drop():
    tok = ItemTokenizer.from_raw_ids(["a", "b"])
    with pytest.raises(KeyError, match="not in the vocabulary"):
        tok.encode_items(["a", "zzz"])
    assert tok.encode_items(["a", "zzz"], unknown="unk") == [4, tok.unk_token_id]
    assert tok.encode_items(["a", "zzz"], unknown="drop") == [4]
    with pytest.raises(ValueError, match="duplicate item id"):
        ItemTokenizer.from_raw_ids(["a", "a"])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode_items([99])


def test_save_and_auto_tokenizer_round_trip(tmp_path):
    tok = ItemTokenizer.from_raw_ids(RAW)
    tok.save_pretrained(tmp_path)
    assert (tmp_path / "tokenization_items.py").exists()  # for trust_remote_code loads
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(loaded, ItemTokenizer)
    assert loaded.get_vocab() == tok.get_vocab()
    assert loaded.decode_items(loaded.encode_items(RAW)) == RAW
