"""The item vocabulary as a Hugging Face tokenizer.

Layout: the special tokens `[PAD]` (0), `[SEP]` (1, also the decoder start), `[EOS]` (2), `[UNK]` (3), then one
token per item in the order given. A raw item id may contain any character (MovieLens-1M's ids are titles with
spaces); its token string is a canonical, whitespace-free escape of it (`%` and whitespace / non-printable
characters become `%XX` UTF-8 escapes, everything else is kept), so that a space-joined string of item tokens
tokenizes back to exactly those ids, which is how TRL's DPOTrainer feeds text to the model.

>>> tok = ItemTokenizer.from_raw_ids(["Toy Story (1995)", "Heat (1995)"])
>>> tok.encode_items(["Heat (1995)"])
[5]
>>> tok.decode_items([4, 5])
['Toy Story (1995)', 'Heat (1995)']
"""

import json
import os
from typing import Iterable, Sequence
from urllib.parse import unquote

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

# The special-token layout of every item vocabulary (the one home of it): ids 0..3, then one token per item.
SPECIAL_TOKENS = {"pad_token": "[PAD]", "sep_token": "[SEP]", "eos_token": "[EOS]", "unk_token": "[UNK]"}
PAD_TOKEN_ID, SEP_TOKEN_ID, EOS_TOKEN_ID, UNK_TOKEN_ID = 0, 1, 2, 3
NUM_SPECIAL_TOKENS = len(SPECIAL_TOKENS)  # items start at this id


def escape_item_id(raw_id: str) -> str:
    """Canonical whitespace-free token string of a raw item id (inverse: [`unescape_item_id`])."""
    raw_id = str(raw_id)
    if raw_id == "":
        raise ValueError("an item id cannot be the empty string")
    out = []
    for char in raw_id:
        if char == "%" or char.isspace() or not char.isprintable():
            out.append("".join(f"%{byte:02X}" for byte in char.encode("utf-8")))
        else:
            out.append(char)
    token = "".join(out)
    if token in SPECIAL_TOKENS.values():  # a raw id spelled like a special token must not collide with it
        token = "%5B" + token[1:]
    return token


def unescape_item_id(token: str) -> str:
    """Inverse of [`escape_item_id`]."""
    return unquote(token, errors="strict")


TITLES_FILE = "item_titles.json"


class ItemTokenizer(PreTrainedTokenizerFast):
    """Word-level tokenizer over item tokens; adds `encode_items` / `decode_items` for raw item ids, and carries the
    items' titles (`item_titles`, raw id -> title, saved as `item_titles.json` beside `tokenizer.json`), so that a
    checkpoint folder alone turns token ids into raw ids and titles (`titles_of`)."""

    model_input_names = ["input_ids", "attention_mask"]
    vocab_files_names = {"tokenizer_file": "tokenizer.json", "titles_file": TITLES_FILE}

    # no __init__ of our own: transformers loads a subclass that defines one through a slower, lossy path

    @property
    def item_titles(self) -> dict:
        """`{raw id: title}`, read on first use from the folder's `item_titles.json` (empty when it has none)."""
        if getattr(self, "_item_titles", None) is None:
            path = self.init_kwargs.get("titles_file")
            titles = {}
            if path and os.path.isfile(path):
                with open(path, encoding="utf-8") as f:
                    titles = dict(json.load(f))
            self._item_titles = titles
        return self._item_titles

    @item_titles.setter
    def item_titles(self, titles: dict) -> None:
        self._item_titles = dict(titles or {})

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedTokenizerFast.save_pretrained`, plus `item_titles.json` when the tokenizer has titles."""
        files = tuple(super().save_pretrained(save_directory, *args, **kwargs))
        if self.item_titles:
            path = os.path.join(str(save_directory), TITLES_FILE)
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(self.item_titles, f, ensure_ascii=False)
            os.replace(tmp, path)
            files += (path,)
        return files

    def titles_of(self, token_ids: Iterable[int]) -> list[str]:
        """Token ids -> titles (the raw id where the tokenizer has no title for an item); special tokens are skipped."""
        return [self.item_titles.get(raw, raw) for raw in self.decode_items(token_ids)]

    @classmethod
    def from_raw_ids(cls, raw_ids: Iterable[str], **kwargs) -> "ItemTokenizer":
        """Builds the vocabulary: special tokens, then one token per raw id, in the given order (duplicates are an error)."""
        vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS.values())}
        for raw_id in raw_ids:
            token = escape_item_id(raw_id)
            if token in vocab:
                raise ValueError(f"duplicate item id {raw_id!r}: every item must appear once in the vocabulary")
            vocab[token] = len(vocab)
        backend = Tokenizer(models.WordLevel(vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
        backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        return cls(tokenizer_object=backend, **SPECIAL_TOKENS, **kwargs)

    @property
    def num_special_tokens(self) -> int:
        return len(SPECIAL_TOKENS)

    def add_items(self, raw_ids: Iterable[str]) -> list[int]:
        """Appends new items to the vocabulary (ids continue after the last one, as `model.add_items(n)` expects) and
        returns their token ids. An id already in the vocabulary is an error."""
        tokens = [escape_item_id(raw_id) for raw_id in raw_ids]
        vocab = self.get_vocab()
        clashes = [raw for raw, token in zip(raw_ids, tokens) if token in vocab]
        if clashes or len(set(tokens)) != len(tokens):
            raise ValueError(f"items already in the vocabulary (or repeated): {clashes[:5] or 'repeated ids'}")
        first = len(self)
        self.add_tokens(tokens)
        ids = self.convert_tokens_to_ids(tokens)
        if ids != list(range(first, first + len(tokens))):
            raise RuntimeError("new item ids are not contiguous after the vocabulary")
        return ids

    def catalog_fingerprint(self) -> str:
        """A short hash of the whole vocabulary in id order: equal for two tokenizers exactly when they map every item
        to the same id. Saved in each trained model's config, so that a checkpoint is never scored on another catalog."""
        import hashlib

        vocab = self.get_vocab()
        tokens = sorted(vocab, key=vocab.get)
        return hashlib.sha256("\n".join(tokens).encode("utf-8")).hexdigest()[:16]

    def encode_items(self, raw_ids: Sequence[str], unknown: str = "error") -> list[int]:
        """Raw item ids -> token ids.

        Args:
            raw_ids: raw item ids (e.g. MovieLens titles or Amazon `parent_asin`s).
            unknown: `"error"` raises `KeyError` naming the unknown ids; `"unk"` maps them to `unk_token_id`;
                `"drop"` leaves them out.
        """
        if unknown not in ("error", "unk", "drop"):
            raise ValueError(f"unknown must be 'error', 'unk' or 'drop', got {unknown!r}")
        vocab = self.get_vocab()
        ids, missing = [], []
        for raw_id in raw_ids:
            token_id = vocab.get(escape_item_id(raw_id))
            if token_id is None or token_id < self.num_special_tokens:
                missing.append(raw_id)
                if unknown == "unk":
                    ids.append(self.unk_token_id)
            else:
                ids.append(token_id)
        if missing and unknown == "error":
            raise KeyError(
                f"{len(missing)} item id(s) not in the vocabulary, e.g. {missing[:3]}; "
                "pass unknown='unk' or unknown='drop' to map or skip them"
            )
        return ids

    def decode_items(self, token_ids: Iterable[int], skip_special_tokens: bool = True) -> list[str]:
        """Token ids -> raw item ids (special tokens are skipped, or kept as their token strings)."""
        tokens = self.convert_ids_to_tokens([int(i) for i in token_ids])
        out = []
        for token_id, token in zip(token_ids, tokens):
            if token is None:
                raise ValueError(f"token id {int(token_id)} is outside the vocabulary of size {len(self)}")
            if int(token_id) < self.num_special_tokens:
                if not skip_special_tokens:
                    out.append(token)
                continue
            out.append(unescape_item_id(token))
        return out


ItemTokenizer.register_for_auto_class("AutoTokenizer")

__all__ = ["ItemTokenizer", "escape_item_id", "unescape_item_id", "SPECIAL_TOKENS"]
