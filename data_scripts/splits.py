"""The split views of a processed dataset: the one place where train / validation / test are defined.

A processed dataset stores one row per user with the full chronological history; splits are views of it:

=====================  ==========================  ==================================  ===========================
protocol               train                       validation (history -> target)      test (history -> target)
=====================  ==========================  ==================================  ===========================
``leave-one-out``      ``seq[:-2]``                ``seq[:-2] -> seq[-2]``             ``seq[:-1] -> seq[-1]``
``hstu-reference``     ``seq[:-1]``                none (the reference scores test)    ``seq[:-1] -> seq[-1]``
``sessions`` (k)       ``seq[:-2k]``               ``seq[:-2k] -> seq[-2k:-k]``        ``seq[:-k] -> seq[-k:]``
``cold-items``         ``r[:-2]``                  ``r[:-2] -> r[-2]``                 ``r[:-1] -> r[-1]``, cold only
=====================  ==========================  ==================================  ===========================

``cold-items`` (item cold start): a fixed, seeded 10% of the items ([`cold_items`]) never appear in any training or
validation input or label. Each user's row ``r`` is their sequence with every cold item removed, except a cold
*last* item, which stays as the test target ([`cold_items_store`]); leave-one-out then cuts ``r``, and the test view
keeps only the users whose target is cold. So the test history is every warm item before the target, ranked against
the whole catalog; models score cold items as new items (``model.reset_item_ids``), content must carry them.

Edges: a training row needs at least 2 items (one supervised pair); an evaluation row needs at least one history
item. Under ``sessions``, users with fewer than ``2k + 3`` items are training-only (their whole sequence is train
data) so that no item of a target session was ever seen in training.
"""

from dataclasses import dataclass

import numpy as np

from modeling_geniusrec.tokenization_items import NUM_SPECIAL_TOKENS

PROTOCOLS = ("leave-one-out", "hstu-reference", "sessions", "cold-items")
COLD_ITEM_SHARE = 0.1  # the cold-items protocol's share of items held out of training...
COLD_ITEM_SEED = 0  # ...drawn with this seed: fixed, so every model and baseline sees the same cold items
SPLITS = ("train", "validation", "test")


@dataclass
class SequenceStore:
    """All users' histories as flat arrays (memory = kept interactions): row u is `values[offsets[u]:offsets[u+1]]`."""

    user_ids: list
    offsets: np.ndarray  # (num_users + 1,) int64
    item_ids: np.ndarray  # (num_interactions,) int32 token ids
    timestamps: np.ndarray  # (num_interactions,) int64 seconds
    cold_items: np.ndarray | None = None  # token ids held out of training (the cold-items protocol's store only)

    @classmethod
    def from_dataset(cls, dataset) -> "SequenceStore":
        """Reads a `datasets.Dataset` with `user_id`, `item_ids`, `timestamps` columns without Python loops."""
        table = dataset.with_format("arrow")[:]
        items = table.column("item_ids").combine_chunks()
        times = table.column("timestamps").combine_chunks()
        offsets = np.asarray(items.offsets, dtype=np.int64)
        if not np.array_equal(offsets, np.asarray(times.offsets, dtype=np.int64)):
            raise ValueError("item_ids and timestamps differ in length for some user: the dataset is corrupt")
        return cls(
            user_ids=table.column("user_id").to_pylist(),
            offsets=offsets,
            item_ids=np.asarray(items.values, dtype=np.int32),
            timestamps=np.asarray(times.values, dtype=np.int64),
        )

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def row(self, user: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.offsets[user], self.offsets[user + 1]
        return self.item_ids[lo:hi], self.timestamps[lo:hi]


def cold_items(vocab_size: int, num_special_tokens: int = NUM_SPECIAL_TOKENS, share: float = COLD_ITEM_SHARE,
               seed: int = COLD_ITEM_SEED) -> np.ndarray:
    """The cold-items protocol's held-out items: `round(share * num_items)` token ids drawn without replacement with
    `numpy.random.default_rng(seed)`, sorted. The same ids for every model and baseline of a catalog."""
    items = np.arange(num_special_tokens, vocab_size)
    chosen = np.random.default_rng(seed).choice(items, size=int(round(share * len(items))), replace=False)
    return np.sort(chosen).astype(np.int64)


def cold_items_store(store: SequenceStore, cold: np.ndarray) -> SequenceStore:
    """The cold-items protocol's store: each row without its cold items, except a cold last item (the test target)."""
    is_cold = np.isin(store.item_ids, cold)
    last = np.zeros(len(store.item_ids), dtype=bool)
    ends = store.offsets[1:] - 1
    last[ends[store.offsets[1:] > store.offsets[:-1]]] = True
    keep = ~is_cold | last
    counts = np.add.reduceat(keep.astype(np.int64), store.offsets[:-1]) if len(store.item_ids) else np.zeros(len(store), np.int64)
    counts = np.where(np.diff(store.offsets) > 0, counts, 0)  # reduceat reads the next row for an empty one
    return SequenceStore(user_ids=store.user_ids, offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
                         item_ids=store.item_ids[keep], timestamps=store.timestamps[keep], cold_items=np.asarray(cold, dtype=np.int64))


def protocol_store(store: SequenceStore, protocol: str, vocab_size: int, num_special_tokens: int = NUM_SPECIAL_TOKENS) -> SequenceStore:
    """The store a protocol's views cut: [`cold_items_store`] under `cold-items` (with [`cold_items`] of this catalog),
    else `store` itself."""
    if protocol != "cold-items" or store.cold_items is not None:
        return store
    return cold_items_store(store, cold_items(vocab_size, num_special_tokens))


def split_bounds(length: int, split: str, protocol: str = "leave-one-out", holdout_length: int = 10):
    """Where a user's sequence of `length` items is cut for a split.

    Returns:
        `(history_end, target_end)`: the history is `seq[:history_end]` and the target `seq[history_end:target_end]`
        (for `train`, `target_end == history_end` and the history is the training sequence), or `None` when the user
        has no row in this split.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if protocol == "sessions":
        k = holdout_length  # the sessions protocol's k
        if length < 2 * k + 3:  # too short to hold out two sessions: training-only
            return (length, length) if split == "train" and length >= 2 else None
        bounds = {"train": (length - 2 * k, length - 2 * k), "validation": (length - 2 * k, length - k), "test": (length - k, length)}
        return bounds[split]
    if protocol == "hstu-reference":
        if split == "validation":
            return None
        bounds = {"train": (length - 1, length - 1), "test": (length - 1, length)}[split]
    else:
        bounds = {"train": (length - 2, length - 2), "validation": (length - 2, length - 1), "test": (length - 1, length)}[split]
    history_end, target_end = bounds
    needed = 2 if split == "train" else 1
    return bounds if history_end >= needed else None


def split_users(store: SequenceStore, split: str, protocol: str = "leave-one-out", holdout_length: int = 10):
    """Users (row indices) that have a row in `split`, with their `(history_end, target_end)` bounds: `(U,)`, `(U, 2)`."""
    cold_test = None
    if protocol == "cold-items":
        if store.cold_items is None:
            raise ValueError("the cold-items protocol cuts its own store: pass protocol_store(store, 'cold-items', vocab_size) "
                             "(cold items removed from training rows)")
        lengths = store.lengths()
        cold_test = np.zeros(len(store), dtype=bool)
        has = lengths > 0
        cold_test[has] = np.isin(store.item_ids[store.offsets[1:][has] - 1], store.cold_items)
    users, bounds = [], []
    for user, length in enumerate(store.lengths()):
        cut = split_bounds(int(length), split, "leave-one-out" if protocol == "cold-items" else protocol, holdout_length)
        if cold_test is not None and split == "test" and not cold_test[user]:
            cut = None
        if cut is not None:
            users.append(user)
            bounds.append(cut)
    return np.asarray(users, dtype=np.int64), np.asarray(bounds, dtype=np.int64).reshape(-1, 2)


__all__ = ["SequenceStore", "split_bounds", "split_users", "cold_items", "cold_items_store", "protocol_store", "PROTOCOLS", "SPLITS",
           "COLD_ITEM_SHARE", "COLD_ITEM_SEED"]
