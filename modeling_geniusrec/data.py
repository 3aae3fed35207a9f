"""Torch datasets over the split views and the collator that pads them for the next-item models."""

import json
import os

import numpy as np
import torch

from .splits import SequenceStore, split_users


class NextItemDataset(torch.utils.data.Dataset):
    """One example per user of a split view.

    `train`: `input_ids = seq[:-1]`, `labels = seq[1:]` (every position supervised), the most recent
    `max_length` of them. Evaluation splits: `input_ids` = the history (last `max_length` items) and `target` = the
    first target item. `next_timestamp` is the time of the item to predict after the last input.
    """

    def __init__(self, store: SequenceStore, split: str, max_length: int, protocol: str = "leave-one-out", session_length: int = 10):
        self.store, self.split, self.max_length = store, split, max_length
        self.protocol, self.session_length = protocol, session_length
        self.users, self.bounds = split_users(store, split, protocol, session_length)

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, index: int) -> dict:
        user = int(self.users[index])
        history_end, target_end = (int(b) for b in self.bounds[index])
        items, times = self.store.row(user)
        if self.split == "train":
            seq, ts = items[:history_end][-(self.max_length + 1):], times[:history_end][-(self.max_length + 1):]
            return {"input_ids": seq[:-1], "timestamps": ts[:-1], "labels": seq[1:], "next_timestamp": ts[-1]}
        lo = max(0, history_end - self.max_length)
        return {
            "input_ids": items[lo:history_end],
            "timestamps": times[lo:history_end],
            "target": items[history_end],
            "next_timestamp": times[history_end],
            "target_session": items[history_end:target_end],
        }


class NextItemCollator:
    """Right-pads a list of [`NextItemDataset`] examples into tensors.

    Returns `input_ids`, `attention_mask`, `timestamps` `(B, N)`, `next_timestamps` `(B,)` and `labels` `(B, N)`:
    the shifted sequence for training, and for evaluation the target at each row's last position (-100 elsewhere),
    so that the Trainer's eval loss is the next-item loss of the evaluated item.
    """

    def __init__(self, pad_token_id: int = 0):
        self.pad_token_id = pad_token_id

    def __call__(self, examples: list[dict]) -> dict:
        batch, length = len(examples), max(len(e["input_ids"]) for e in examples)
        input_ids = torch.full((batch, length), self.pad_token_id, dtype=torch.long)
        timestamps = torch.zeros((batch, length), dtype=torch.long)
        labels = torch.full((batch, length), -100, dtype=torch.long)
        for row, example in enumerate(examples):
            n = len(example["input_ids"])
            input_ids[row, :n] = torch.tensor(example["input_ids"], dtype=torch.long)
            timestamps[row, :n] = torch.tensor(example["timestamps"], dtype=torch.long)
            if "labels" in example:
                labels[row, :n] = torch.tensor(example["labels"], dtype=torch.long)
            else:
                labels[row, n - 1] = int(example["target"])
        return {
            "input_ids": input_ids,
            "attention_mask": input_ids != self.pad_token_id,
            "timestamps": timestamps,
            "next_timestamps": torch.as_tensor([int(e["next_timestamp"]) for e in examples], dtype=torch.long),
            "labels": labels,
        }


def load_processed(dataset_dir: str):
    """Opens a processed-dataset folder: `(sequences Dataset, items Dataset, tokenizer, stats dict)`.

    Raises `FileNotFoundError` naming the missing part and the command that creates the folder.
    """
    import datasets

    from .tokenization_items import ItemTokenizer

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
    with open(os.path.join(dataset_dir, "stats.json")) as f:
        stats = json.load(f)
    return sequences, items, tokenizer, stats


__all__ = ["NextItemDataset", "NextItemCollator", "load_processed"]
