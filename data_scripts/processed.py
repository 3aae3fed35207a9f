"""Torch datasets over the split views and the collator that pads them for the next-item models."""

import json
import os

import numpy as np
import torch

from modeling_geniusrec.tokenization_items import EOS_TOKEN_ID, PAD_TOKEN_ID

from .splits import SequenceStore, split_users

FILTER_MODES = ("full", "window", "none")


def resolve_filter_history(mode: str | None, protocol: str) -> str:
    """Which already-seen items a ranking removes: `full` (everything the user saw before the target: the default),
    `window` (only the model's input window, as the HSTU reference code does: the default under `hstu-reference`)
    or `none`. Booleans of older command lines map to `full` / `none`."""
    if mode is None or mode == "auto":
        return "window" if protocol == "hstu-reference" else "full"
    mode = {"true": "full", "false": "none", True: "full", False: "none"}.get(mode if isinstance(mode, bool) else str(mode).lower(), mode)
    if mode not in FILTER_MODES:
        raise ValueError(f"filter_history must be one of {FILTER_MODES}, got {mode!r}")
    return mode


def pad_item_lists(lists, pad_token_id: int = PAD_TOKEN_ID) -> torch.LongTensor:
    """Right-pads a list of 1-D id arrays into a `(len(lists), max_len)` long tensor (at least one column)."""
    width = max([len(x) for x in lists] + [1])
    out = torch.full((len(lists), width), pad_token_id, dtype=torch.long)
    for row, values in enumerate(lists):
        out[row, : len(values)] = torch.as_tensor(np.asarray(values, dtype=np.int64))
    return out


class NextItemDataset(torch.utils.data.Dataset):
    """One example per user of a split view.

    `train`: the most recent `max_length + 1` items of the train view `w`: `input_ids = w[:-1]`, `labels = w` (the
    causal-LM convention, shifted inside the model: every input position is supervised with the item after it).
    Evaluation splits: `input_ids` = the history (last `max_length` items), `seen_items` = the whole history (what
    full-history filtering removes), `target` = the first target item and `target_session` the whole target.
    `next_timestamp` is the time of the item to predict after the last input (the request time).
    """

    def __init__(self, store: SequenceStore, split: str, max_length: int, protocol: str = "leave-one-out", holdout_length: int = 10):
        self.store, self.split, self.max_length = store, split, max_length
        self.protocol, self.holdout_length = protocol, holdout_length
        self.users, self.bounds = split_users(store, split, protocol, holdout_length)

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, index: int) -> dict:
        user = int(self.users[index])
        history_end, target_end = (int(b) for b in self.bounds[index])
        items, times = self.store.row(user)
        if self.split == "train":
            seq, ts = items[:history_end][-(self.max_length + 1):], times[:history_end][-(self.max_length + 1):]
            return {"input_ids": seq[:-1], "timestamps": ts[:-1], "labels": seq, "next_timestamp": ts[-1]}
        lo = max(0, history_end - self.max_length)
        seen = items[:history_end]
        if self.split == "validation" and self.store.cold_items is not None:
            # cold-items: the held-out items are not in the catalog before the test (they arrive after training)
            seen = np.concatenate([seen, self.store.cold_items.astype(seen.dtype)])
        return {
            "input_ids": items[lo:history_end],
            "seen_items": seen,
            "timestamps": times[lo:history_end],
            "target": items[history_end],
            "next_timestamp": times[history_end],
            "target_session": items[history_end:target_end],
        }


    def targets(self) -> torch.LongTensor:
        """`(M,)` the first target item of every row: the one home of the evaluation target."""
        if self.split == "train":
            raise ValueError("the train view has no single target per row")
        return torch.as_tensor([int(self.store.row(int(u))[0][int(b[0])]) for u, b in zip(self.users, self.bounds)], dtype=torch.long)

    def filter_items(self, mode: str = "full", rows=None) -> torch.LongTensor | None:
        """Items each row's ranking must not recommend, `(M, S)` right-padded with 0 (a special id, ignored), or None
        for `mode="none"`. `full`: the whole history before the target; `window`: the model's input window only."""
        mode = resolve_filter_history(mode, self.protocol)
        return excluded_items([self[i] for i in (range(len(self)) if rows is None else rows)], mode)

    def select(self, rows) -> None:
        """Keeps only the given rows (indices into this view), in that order."""
        self.users, self.bounds = self.users[rows], self.bounds[rows]

    def input_lengths(self) -> np.ndarray:
        """`(M,)` length of each evaluation row's model input (its history, capped at `max_length`)."""
        if self.split == "train":
            raise ValueError("input_lengths is for evaluation views")
        return np.minimum(np.asarray(self.bounds)[:, 0], self.max_length)

    def order_by_length(self) -> "NextItemDataset":
        """Reorders the rows by input length (shortest first, stable), so that consecutive rows batched together pad
        little: full-ranking evaluation of MovieLens-1M runs about 2.5x faster. Aggregate metrics are unchanged (every
        per-row quantity, `targets()` and `filter_items()` included, follows the view's order)."""
        self.select(np.argsort(self.input_lengths(), kind="stable"))
        return self


def excluded_items(examples: list[dict], mode: str = "full") -> torch.LongTensor | None:
    """What each split-view example must not be recommended, `(len(examples), S)` padded with 0: its `seen_items`
    (`full`), its input window (`window`), or None (`none`)."""
    if mode == "none":
        return None
    return pad_item_lists([e["seen_items"] if mode == "full" else e["input_ids"] for e in examples])


class NextItemCollator:
    """Right-pads a list of [`NextItemDataset`] examples into tensors.

    Returns `input_ids`, `attention_mask`, `timestamps` `(B, N)`, `next_timestamps` `(B,)` and `labels` `(B, N + 1)` in
    the causal-LM convention (the model shifts them): for training the window plus its next item, for evaluation
    the target after each row's last item (-100 elsewhere), so that the Trainer's eval loss is the next-item loss of
    the evaluated item.
    """

    def __init__(self, pad_token_id: int = PAD_TOKEN_ID):
        self.pad_token_id = pad_token_id

    def pad_histories(self, examples: list[dict], padding_side: str = "right") -> dict:
        """`input_ids`, `attention_mask`, `timestamps` `(B, N)` padded on `padding_side` ("left" for a decoder-only
        `generate()`, which appends after the last column) and `next_timestamps` `(B,)`."""
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        batch, length = len(examples), max(len(e["input_ids"]) for e in examples)
        input_ids = torch.full((batch, length), self.pad_token_id, dtype=torch.long)
        timestamps = torch.zeros((batch, length), dtype=torch.long)
        for row, example in enumerate(examples):
            n = len(example["input_ids"])
            cols = slice(0, n) if padding_side == "right" else slice(length - n, length)
            input_ids[row, cols] = torch.tensor(example["input_ids"], dtype=torch.long)
            timestamps[row, cols] = torch.tensor(example["timestamps"], dtype=torch.long)
        return {
            "input_ids": input_ids,
            "attention_mask": input_ids != self.pad_token_id,
            "timestamps": timestamps,
            "next_timestamps": torch.as_tensor([int(e["next_timestamp"]) for e in examples], dtype=torch.long),
        }

    def __call__(self, examples: list[dict]) -> dict:
        batch = self.pad_histories(examples)
        batch_size, width = batch["input_ids"].shape
        labels = torch.full((batch_size, width + 1), -100, dtype=torch.long)
        for row, example in enumerate(examples):
            n = len(example["input_ids"])
            if "labels" in example:
                labels[row, : len(example["labels"])] = torch.tensor(example["labels"], dtype=torch.long)
            else:
                labels[row, n] = int(example["target"])
        batch["labels"] = labels
        return batch


class SessionTrainingDataset(torch.utils.data.Dataset):
    """Stage-2 examples drawn from a split's train view only: for each user, a random split point `s` inside the
    training sequence `seq[:end]` (`end` = the train view's end); source = the `max_length` items before `s` (with
    their times; the request time is `s`'s), target = the items `seq[s : min(s + target_length, end)]`.

    A target is never read past `end`, so no validation or test item is ever an input or a label. A target that
    holds `target_length` items is followed by EOS ("the session is complete"); one cut short by the end of the
    train view gets no EOS (what follows is unknown here, not "nothing"), so its loss covers only the real items.
    A new split point is drawn every time the example is read (numpy's global RNG, seeded by Trainer);
    `samples_per_user` examples per user and epoch.
    """

    def __init__(self, store: SequenceStore, max_length: int, target_length: int = 10, protocol: str = "leave-one-out",
                 eos_token_id: int = EOS_TOKEN_ID, holdout_length: int = 10, samples_per_user: int = 1):
        self.store, self.max_length, self.target_length, self.eos_token_id = store, max_length, target_length, eos_token_id
        self.samples_per_user = samples_per_user
        self.users, self.bounds = split_users(store, "train", protocol, holdout_length)
        self.split = "train"

    def __len__(self) -> int:
        return len(self.users) * self.samples_per_user

    def __getitem__(self, index: int) -> dict:
        index = index % len(self.users)
        items, times = self.store.row(int(self.users[index]))
        end = int(self.bounds[index][0])  # the train view is items[:end]
        split = int(np.random.randint(1, end))  # at least one history item and one target item
        lo = max(0, split - self.max_length)
        stop = min(split + self.target_length, end)
        target = items[split:stop]
        labels = np.concatenate([target, [self.eos_token_id]]) if len(target) == self.target_length else np.asarray(target)
        return {
            "input_ids": items[lo:split],
            "timestamps": times[lo:split],
            "next_timestamp": times[split],
            "session_labels": labels,
        }


class PrefixSessionDataset(SessionTrainingDataset):
    """Stage-2 examples for prefix packing (`train.finetune --prefix_samples P`): per user and epoch, the train view's
    last `max_length + 1` items as one window (the per-position stage-1 example) and P distinct split positions drawn
    in it; the decoder trains on all P from one encoder pass (`modeling_geniusrec.prefix_sessions`).

    A split at window position p reads the history `window[: p + 1]` (request time: the next item's) and targets the
    next `target_length` items (+ EOS when that many exist before the train view's end, as in
    [`SessionTrainingDataset`]). `encoder_targets` are the next item after every window position (stage 1's targets).
    Nothing at or after the train view's end is ever an input or a label. Unlike [`SessionTrainingDataset`], a split's
    history is cut at the window's start, not `max_length` items before the split.
    """

    def __init__(self, store: SequenceStore, max_length: int, target_length: int = 10, protocol: str = "leave-one-out",
                 eos_token_id: int = EOS_TOKEN_ID, holdout_length: int = 10, prefix_samples: int = 8):
        super().__init__(store, max_length, target_length, protocol, eos_token_id, holdout_length, samples_per_user=1)
        if prefix_samples < 1:
            raise ValueError(f"prefix_samples must be >= 1, got {prefix_samples}")
        self.prefix_samples = prefix_samples

    def __getitem__(self, index: int) -> dict:
        items, times = self.store.row(int(self.users[index]))
        end = int(self.bounds[index][0])  # the train view is items[:end]
        lo = max(0, end - 1 - self.max_length)
        window = items[lo:end]  # inputs window[:-1], next items window[1:]
        n = len(window) - 1
        chosen = np.sort(np.random.choice(n, size=min(self.prefix_samples, n), replace=False))
        sessions = []
        for p in chosen:
            target = window[p + 1 : p + 1 + self.target_length]
            sessions.append(np.concatenate([target, [self.eos_token_id]]) if len(target) == self.target_length else np.asarray(target))
        return {"input_ids": window[:-1], "timestamps": times[lo : end - 1], "next_timestamp": times[end - 1],
                "encoder_targets": window[1:], "split_positions": chosen, "session_labels": sessions}


class SessionCollator(NextItemCollator):
    """Pads stage-2 examples: the history as [`NextItemCollator`] and `labels` `(B, T)` = the target session + EOS
    (-100 at padding). Evaluation examples ([`NextItemDataset`]) get their target session (+ EOS when
    `append_eos`) as labels, so the first label is the next item."""

    def __init__(self, pad_token_id: int = PAD_TOKEN_ID, eos_token_id: int = EOS_TOKEN_ID, append_eos: bool = True):
        super().__init__(pad_token_id)
        self.eos_token_id, self.append_eos = eos_token_id, append_eos

    def __call__(self, examples: list[dict]) -> dict:
        if "split_positions" in examples[0]:
            return self.prefix_batch(examples)
        batch = self.pad_histories(examples)
        targets = []
        for e in examples:
            if "session_labels" in e:
                targets.append(np.asarray(e["session_labels"]))
            else:
                session = np.asarray(e["target_session"])
                targets.append(np.concatenate([session, [self.eos_token_id]]) if self.append_eos else session)
        labels = torch.full((len(examples), max(len(t) for t in targets)), -100, dtype=torch.long)
        for row, t in enumerate(targets):
            labels[row, : len(t)] = torch.tensor(t, dtype=torch.long)
        batch["labels"] = labels
        return batch

    def prefix_batch(self, examples: list[dict]) -> dict:
        """[`PrefixSessionDataset`] examples: histories as above, `split_positions` `(B, P)` (-1 pads), `labels`
        `(B, P, T)` and `encoder_targets` `(B, N)` (-100 pads)."""
        batch = self.pad_histories(examples)
        splits = max(len(e["split_positions"]) for e in examples)
        width = max(len(s) for e in examples for s in e["session_labels"])
        positions = torch.full((len(examples), splits), -1, dtype=torch.long)
        labels = torch.full((len(examples), splits, width), -100, dtype=torch.long)
        encoder_targets = torch.full(batch["input_ids"].shape, -100, dtype=torch.long)
        for row, e in enumerate(examples):
            positions[row, : len(e["split_positions"])] = torch.as_tensor(e["split_positions"], dtype=torch.long)
            for slot, session in enumerate(e["session_labels"]):
                labels[row, slot, : len(session)] = torch.tensor(session, dtype=torch.long)
            encoder_targets[row, : len(e["encoder_targets"])] = torch.tensor(e["encoder_targets"], dtype=torch.long)
        return {**batch, "split_positions": positions, "labels": labels, "encoder_targets": encoder_targets}


def streaming_train_examples(sequences, max_length: int, protocol: str = "leave-one-out", holdout_length: int = 10,
                             num_shards: int = 8, rank: int | None = None, world_size: int | None = None,
                             shuffle_buffer: int = 1000, seed: int = 42):
    """Training examples (those of [`NextItemDataset`]'s `train` split) streamed from the Arrow shards of the
    `sequences` dataset, as a `datasets.IterableDataset`, for data too large to index in memory.

    With `rank`/`world_size`, the stream is split across processes with `datasets.distributed.split_dataset_by_node`
    (each process reads its own shards: use this in custom loops). Leave them unset under `Trainer`/`accelerate`:
    accelerate then shards the stream across processes itself (splitting twice would drop data).
    """
    from datasets.distributed import split_dataset_by_node

    from .splits import split_bounds

    if protocol == "cold-items":
        raise ValueError("--streaming does not support the cold-items protocol (it removes held-out items from every row, which the "
                         "stream does not): train it without --streaming")

    def to_example(row):
        items, times = np.asarray(row["item_ids"], dtype=np.int64), np.asarray(row["timestamps"], dtype=np.int64)
        cut = split_bounds(len(items), "train", protocol, holdout_length)
        end = 0 if cut is None else cut[0]
        seq, ts = items[:end][-(max_length + 1) :], times[:end][-(max_length + 1) :]
        return {"input_ids": seq[:-1], "timestamps": ts[:-1], "labels": seq, "next_timestamp": int(ts[-1]) if len(ts) else 0}

    stream = sequences.to_iterable_dataset(num_shards=num_shards)
    if world_size is not None and world_size > 1:
        stream = split_dataset_by_node(stream, rank=rank, world_size=world_size)
    if shuffle_buffer:
        stream = stream.shuffle(seed=seed, buffer_size=shuffle_buffer)
    stream = stream.map(to_example, remove_columns=["user_id", "item_ids", "timestamps"])
    return stream.filter(lambda example: len(example["input_ids"]) > 0)


def load_item_embeddings(dataset_dir: str, file_name: str = "text.safetensors"):
    """`embeddings/<file_name>` of a processed dataset: `(tensor (vocab_size, dim), metadata dict)`."""
    from safetensors import safe_open

    path = os.path.join(dataset_dir, "embeddings", file_name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: compute it with `python -m data_scripts.embed --dataset {dataset_dir}`")
    try:
        with safe_open(path, framework="pt") as f:
            table, metadata = f.get_tensor("embeddings"), dict(f.metadata() or {})
    except Exception as error:  # noqa: BLE001 - safetensors raises its own types for a damaged file
        raise ValueError(f"{path}: truncated or not an embeddings file ({error}); compute it again with "
                         f"`python -m data_scripts.embed --dataset {dataset_dir}`") from error
    check_table_catalog(path, table, metadata, dataset_dir)
    return table, metadata


def check_table_catalog(path: str, table, metadata: dict, dataset_dir: str) -> None:
    """Refuses a content table made for another catalog: its rows must be the dataset's token ids (`vocab_size` rows)
    and, where the file records one (`data_scripts.embed` does), its catalog fingerprint must be the dataset's."""
    from modeling_geniusrec.tokenization_items import ItemTokenizer

    tokenizer = ItemTokenizer.from_pretrained(os.path.join(dataset_dir, "tokenizer"))
    expected = metadata.get("catalog_fingerprint")
    if expected is not None and str(expected) != str(tokenizer.catalog_fingerprint()):
        raise ValueError(f"{path} was computed for another item catalog (fingerprint {expected}, this dataset's "
                         f"{tokenizer.catalog_fingerprint()}): compute it for this dataset with "
                         f"`python -m data_scripts.embed --dataset {dataset_dir}`")
    if table.shape[0] != len(tokenizer):
        raise ValueError(f"{path} has {table.shape[0]} rows but {dataset_dir} has {len(tokenizer)} tokens (rows are token ids): it belongs "
                         f"to another dataset; compute it with `python -m data_scripts.embed --dataset {dataset_dir}`")


def dataset_name(stats: dict, dataset_dir: str) -> str:
    """A readable name of a processed dataset for model cards: "MovieLens-1M", "Amazon Reviews 2023 (Books)", or the
    folder's name for one's own data."""
    parameters = stats.get("parameters") or {}
    if parameters.get("reviews"):
        category = os.path.basename(str(parameters["reviews"])).split(".")[0]
        return f"Amazon Reviews 2023 ({category})"
    variant = parameters.get("variant")
    if variant and "events" not in parameters and str(variant).startswith("ml-"):
        return "MovieLens-" + str(variant)[3:].upper()
    return os.path.basename(os.path.abspath(dataset_dir))


def load_processed(dataset_dir: str):
    """Opens a processed-dataset folder: `(sequences Dataset, items Dataset, tokenizer, stats dict)`.

    Raises `FileNotFoundError` naming the missing part and the command that creates the folder.
    """
    import datasets

    from modeling_geniusrec.tokenization_items import ItemTokenizer

    parts = ["sequences", "items", "tokenizer", "stats.json"]
    missing = [p for p in parts if not os.path.exists(os.path.join(dataset_dir, p))]
    if missing:
        raise FileNotFoundError(
            f"{dataset_dir!r} is not a processed GeniusRec dataset (missing {missing}); create it with "
            "`python -m data_scripts.movielens --variant ml-1m --out data/ml-1m` or data_scripts.amazon_reviews"
        )
    sequences = datasets.load_from_disk(os.path.join(dataset_dir, "sequences"))
    items = datasets.load_from_disk(os.path.join(dataset_dir, "items"))
    tokenizer = ItemTokenizer.from_pretrained(os.path.join(dataset_dir, "tokenizer"))
    if not tokenizer.item_titles and "title" in items.column_names:  # folders written before titles lived in the tokenizer
        tokenizer.item_titles = {raw: title for raw, title in zip(items["raw_id"], items["title"]) if title not in (None, "", raw)}
    stats_file = os.path.join(dataset_dir, "stats.json")
    try:
        with open(stats_file) as f:
            stats = json.load(f)
    except ValueError as error:
        raise ValueError(f"{stats_file}: not valid JSON ({error}); the dataset folder is damaged: prepare it again "
                         "(python -m data_scripts.movielens / data_scripts.amazon_reviews)") from error
    return sequences, items, tokenizer, stats


__all__ = ["FILTER_MODES", "resolve_filter_history", "pad_item_lists", "excluded_items", "NextItemDataset", "streaming_train_examples",
           "NextItemCollator", "SessionTrainingDataset", "SessionCollator", "load_item_embeddings", "load_processed", "dataset_name"]
