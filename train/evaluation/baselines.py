"""Baselines and popularity: the one home of "how many training users had each item".

- [`item_user_counts`]: per token id, the number of users of the protocol's train view who interacted with it
  (popularity ranking, novelty's self-information, the preference-pair rewards and the cold-item table use it);
- [`popularity_metrics`]: the popularity ranker under the same rank and history-filter rules as the models;
- [`popularity_lists`]: its top-k unseen items per user, read as a session.
"""

import numpy as np
import torch

from data_scripts.processed import NextItemDataset
from data_scripts.splits import SequenceStore
from modeling_geniusrec.tokenization_items import NUM_SPECIAL_TOKENS

from .ranking import DEFAULT_KS, ranking_metrics


def item_user_counts(store, protocol: str, session_length: int, vocab_size: int) -> tuple[np.ndarray, int]:
    """Number of training users who interacted with each token id, and the number of training users."""
    train = NextItemDataset(store, "train", 10**9, protocol, session_length)
    counts = np.zeros(vocab_size, dtype=np.int64)
    for i in range(len(train)):
        ex = train[i]
        counts[np.unique(ex["labels"])] += 1  # the labels are the whole train view (causal-LM convention)
    return counts, len(train)


def popularity_metrics(store: SequenceStore, dataset: NextItemDataset, vocab_size: int, num_special: int = NUM_SPECIAL_TOKENS,
                       filter_history: str = "full", ks=DEFAULT_KS) -> dict:
    """The popularity baseline: items ranked by how many training users had them (same rank and filter convention)."""
    counts, _ = item_user_counts(store, dataset.protocol, dataset.session_length, vocab_size)
    scores = torch.as_tensor(counts, dtype=torch.float32)
    scores[:num_special] = float("-inf")
    targets, seen = dataset.targets(), dataset.filter_items(filter_history)
    ranks = []
    for i in range(len(dataset)):
        s = scores.clone()
        target = int(targets[i])
        if seen is not None:
            hist = seen[i][seen[i] >= num_special]
            s[hist[hist != target]] = float("-inf")
        ranks.append(int((s >= s[target]).sum()) - 1)
    return ranking_metrics(ranks, ks)


def popularity_lists(item_user_counts: np.ndarray, dataset: NextItemDataset, k: int = 10, num_special: int = NUM_SPECIAL_TOKENS,
                     filter_history: str = "full") -> list[list[int]]:
    """The `k` most popular items each user has not seen (same filter rule as the models)."""
    order = [int(i) for i in np.argsort(-item_user_counts, kind="stable") if i >= num_special]
    seen = dataset.filter_items(filter_history)
    lists = []
    for i in range(len(dataset)):
        history = set() if seen is None else set(seen[i].tolist())
        lists.append([item for item in order if item not in history][:k])
    return lists


__all__ = ["item_user_counts", "popularity_metrics", "popularity_lists"]
