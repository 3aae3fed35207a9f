"""Validate a processed-dataset folder against the data contract (README "Data contract"), e.g. one built by hand.

    python -m data_scripts.check data/mine

Prints `ok: ...` and exits 0, or names the first violation in one line (which part, which user or row, what is
wrong) and exits 2. Checks, in order: the parts exist; `stats.json` is a JSON object with `users`, `items`,
`interactions`, `vocab_size` matching the folder; `tokenizer/` loads, its first tokens are the special tokens;
`sequences/` columns and dtypes (`user_id` string, `item_ids` list<int32>, `timestamps` list<int64>), unique
non-empty user ids, every row non-empty, as many times as items, item ids are item tokens (>= 4, < vocab size), times
in seconds (>= 0) and non-decreasing; `items/` has one row per item token in token order with `raw_id` equal to the
tokenizer's; every `embeddings/*.safetensors` has `vocab_size` rows.
"""

import json
import os
import sys
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from modeling_geniusrec.tokenization_items import NUM_SPECIAL_TOKENS, SPECIAL_TOKENS

from .arguments import make_parser, parse_args, run_cli

PARTS = ("sequences", "items", "tokenizer", "stats.json")
SEQUENCE_TYPES = {"user_id": (pa.string(), pa.large_string()), "item_ids": (pa.list_(pa.int32()), pa.large_list(pa.int32())),
                  "timestamps": (pa.list_(pa.int64()), pa.large_list(pa.int64()))}


class Violation(ValueError):
    pass


def fail(folder: str, message: str):
    raise Violation(f"{folder}: {message}")


def check_folder(folder: str) -> dict:
    """Validates `folder`; returns a summary dict or raises `ValueError` naming the first violation."""
    import datasets

    from modeling_geniusrec.tokenization_items import ItemTokenizer

    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder!r} is not a folder")
    missing = [p for p in PARTS if not os.path.exists(os.path.join(folder, p))]
    if missing:
        fail(folder, f"missing {missing} (a processed folder holds {list(PARTS)}; data_scripts.interactions writes one)")
    try:
        stats = json.load(open(os.path.join(folder, "stats.json")))
    except ValueError as error:
        fail(folder, f"stats.json is not valid JSON ({error})")
    if not isinstance(stats, dict):
        fail(folder, "stats.json must hold a JSON object")
    absent = [k for k in ("users", "items", "interactions", "vocab_size") if k not in stats]
    if absent:
        fail(folder, f"stats.json lacks {absent}")
    try:
        tokenizer = ItemTokenizer.from_pretrained(os.path.join(folder, "tokenizer"))
    except Exception as error:  # noqa: BLE001 - any failure to load is the violation
        fail(folder, f"tokenizer/ does not load as an item tokenizer ({error.__class__.__name__}: {error})")
    vocab = check_tokenizer(folder, tokenizer, stats)
    table = datasets.load_from_disk(os.path.join(folder, "sequences")).with_format("arrow")[:]
    users, interactions = check_sequences(folder, table, stats, vocab)
    check_items(folder, datasets.load_from_disk(os.path.join(folder, "items")), tokenizer, vocab)
    check_embeddings(folder, vocab)
    return {"users": len(users), "items": vocab - NUM_SPECIAL_TOKENS, "interactions": interactions}


def check_tokenizer(folder: str, tokenizer, stats: dict) -> int:
    """The special tokens come first and the sizes agree with stats.json; returns the vocabulary size."""
    specials = tokenizer.convert_ids_to_tokens(list(range(NUM_SPECIAL_TOKENS)))
    if specials != list(SPECIAL_TOKENS.values()):
        fail(folder, f"tokenizer/: the first tokens must be {list(SPECIAL_TOKENS.values())}, got {specials}")
    vocab = len(tokenizer)
    if stats["vocab_size"] != vocab or stats["items"] != vocab - NUM_SPECIAL_TOKENS:
        fail(folder, f"stats.json says vocab_size {stats['vocab_size']} / items {stats['items']}, the tokenizer has {vocab} tokens "
                     f"({vocab - NUM_SPECIAL_TOKENS} items)")
    return vocab


def first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def check_sequences(folder: str, table, stats: dict, vocab: int) -> tuple[list, int]:
    """Columns, dtypes, one row per user, lengths, item tokens, times; returns `(user ids, interactions)`."""
    for column, types in SEQUENCE_TYPES.items():
        if column not in table.column_names:
            fail(folder, f"sequences/ has no column {column!r} (columns: {table.column_names})")
        if table.schema.field(column).type not in types:
            fail(folder, f"sequences/ column {column!r} is {table.schema.field(column).type}, expected {types[0]}")
    users = table.column("user_id").to_pylist()
    if len(users) != stats["users"]:
        fail(folder, f"sequences/ has {len(users)} rows, stats.json says {stats['users']} users")
    seen = set()
    for row, user in enumerate(users):
        if not user:
            fail(folder, f"sequences/ row {row}: empty user_id")
        if user in seen:
            fail(folder, f"sequences/ row {row}: user {user!r} appears twice (one row per user)")
        seen.add(user)
    items, times = table.column("item_ids").combine_chunks(), table.column("timestamps").combine_chunks()
    item_offsets, time_offsets = np.asarray(items.offsets), np.asarray(times.offsets)
    item_lengths, time_lengths = np.diff(item_offsets), np.diff(time_offsets)
    if (item_lengths != time_lengths).any():
        r = first_bad(item_lengths != time_lengths)
        fail(folder, f"sequences/ user {users[r]!r}: {item_lengths[r]} items but {time_lengths[r]} timestamps (lengths differ)")
    if (item_lengths == 0).any():
        fail(folder, f"sequences/ user {users[first_bad(item_lengths == 0)]!r}: empty history (drop the user)")
    values = np.asarray(items.values)
    stamps = np.asarray(times.values)
    owner = np.repeat(np.arange(len(users)), item_lengths)
    bad = (values < NUM_SPECIAL_TOKENS) | (values >= vocab)
    if bad.any():
        i = first_bad(bad)
        fail(folder, f"sequences/ user {users[owner[i]]!r}: item id {values[i]} is not an item token (items are "
                     f"{NUM_SPECIAL_TOKENS}..{vocab - 1}; 0-3 are special tokens)")
    if (stamps < 0).any():
        i = first_bad(stamps < 0)
        fail(folder, f"sequences/ user {users[owner[i]]!r}: negative timestamp {stamps[i]} (times are int64 seconds since 1970)")
    step_back = np.diff(stamps) < 0
    step_back &= owner[1:] == owner[:-1]  # only within a user
    if step_back.any():
        i = first_bad(step_back)
        fail(folder, f"sequences/ user {users[owner[i]]!r}: timestamps out of order ({stamps[i]} then {stamps[i + 1]}; rows are "
                     "chronological)")
    if int(item_offsets[-1]) != stats["interactions"]:
        fail(folder, f"sequences/ holds {int(item_offsets[-1])} interactions, stats.json says {stats['interactions']}")
    return users, int(item_offsets[-1])


def check_items(folder: str, item_table, tokenizer, vocab: int) -> None:
    """One row per item token, in token order, with the tokenizer's raw ids."""
    for column in ("id", "raw_id", "title", "text"):
        if column not in item_table.column_names:
            fail(folder, f"items/ has no column {column!r} (columns: {item_table.column_names})")
    if len(item_table) != vocab - NUM_SPECIAL_TOKENS:
        fail(folder, f"items/ has {len(item_table)} rows, the tokenizer {vocab - NUM_SPECIAL_TOKENS} items (one row per item)")
    ids = np.asarray(item_table["id"])
    if not np.array_equal(ids, np.arange(NUM_SPECIAL_TOKENS, vocab)):
        r = first_bad(ids != np.arange(NUM_SPECIAL_TOKENS, vocab))
        fail(folder, f"items/ row {r}: id {ids[r]}, expected {r + NUM_SPECIAL_TOKENS} (rows follow token order)")
    raw = tokenizer.decode_items(list(range(NUM_SPECIAL_TOKENS, vocab)))
    for r, (expected, found) in enumerate(zip(raw, item_table["raw_id"])):
        if expected != found:
            fail(folder, f"items/ row {r}: raw_id {found!r}, but the tokenizer's token {r + NUM_SPECIAL_TOKENS} is {expected!r}")


def check_embeddings(folder: str, vocab: int) -> None:
    """Every `embeddings/*.safetensors` has one row per token id."""
    embeddings = os.path.join(folder, "embeddings")
    for name in sorted(os.listdir(embeddings)) if os.path.isdir(embeddings) else []:
        if name.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(os.path.join(embeddings, name), framework="np") as f:
                shape = f.get_slice("embeddings").get_shape()
            if shape[0] != vocab:
                fail(folder, f"embeddings/{name} has {shape[0]} rows, expected {vocab} (one per token id)")


@dataclass
class CheckArguments:
    folder: str = field(metadata={"help": "processed dataset folder to validate"})


def main(argv=None):
    parser = make_parser(CheckArguments, description=__doc__)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-"):  # the folder as a positional argument, as documented
        argv = ["--folder", argv[0], *argv[1:]]
    (args,) = parse_args(parser, argv)
    summary = check_folder(args.folder)
    print(f"ok: {args.folder}: {summary['users']:,} users, {summary['items']:,} items, {summary['interactions']:,} interactions "
          "match the data contract")
    return summary


if __name__ == "__main__":
    sys.exit(run_cli(main))
