"""Baselines and popularity: the one home of "how many training users had each item".

- [`item_user_counts`]: per token id, the number of users of the protocol's train view who interacted with it
  (popularity ranking, novelty's self-information, the preference-pair rewards and the cold-item table use it);
- [`popularity_metrics`]: the popularity ranker under the same rank and history-filter rules as the models;
- [`popularity_lists`]: its top-k unseen items per user, read as a session;
- [`content_knn_metrics`]: the content-only nearest-neighbour ranker (cosine between the mean content vector of the
  history's last items and every item), the baseline of the item cold-start table.
"""

import numpy as np
import torch

from data_scripts.processed import NextItemDataset
from data_scripts.splits import SequenceStore
from modeling_geniusrec.tokenization_items import NUM_SPECIAL_TOKENS

from .ranking import DEFAULT_KS, ranking_metrics


def item_user_counts(store, protocol: str, holdout_length: int, vocab_size: int) -> tuple[np.ndarray, int]:
    """Number of training users who interacted with each token id, and the number of training users."""
    train = NextItemDataset(store, "train", 10**9, protocol, holdout_length)
    counts = np.zeros(vocab_size, dtype=np.int64)
    for i in range(len(train)):
        ex = train[i]
        counts[np.unique(ex["labels"])] += 1  # the labels are the whole train view (causal-LM convention)
    return counts, len(train)


def popularity_metrics(store: SequenceStore, dataset: NextItemDataset, vocab_size: int, num_special: int = NUM_SPECIAL_TOKENS,
                       filter_history: str = "full", ks=DEFAULT_KS) -> dict:
    """The popularity baseline: items ranked by how many training users had them (same rank and filter convention)."""
    counts, _ = item_user_counts(store, dataset.protocol, dataset.holdout_length, vocab_size)
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


def score_ranks(scores: torch.Tensor, targets: torch.Tensor, seen: torch.Tensor | None, num_special: int = NUM_SPECIAL_TOKENS) -> torch.Tensor:
    """0-based pessimistic ranks (the [`ranking`] convention) of `targets` `(M,)` under dense `scores` `(M, V)`, special
    tokens and the `seen` items `(M, S)` (0-padded; the target itself never) removed."""
    scores = scores.clone()
    scores[:, :num_special] = float("-inf")
    rows = torch.arange(scores.shape[0])
    target_scores = scores[rows, targets]
    if seen is not None:
        hist = seen.clone()
        hist[(hist < num_special) | (hist == targets.unsqueeze(1))] = 0  # column 0 is a special token: already -inf
        scores.scatter_(1, hist, float("-inf"))
    ge = scores >= target_scores.unsqueeze(1)
    ge[rows, targets] = False
    return ge.sum(dim=1)


@torch.no_grad()
def content_knn_metrics(table: torch.Tensor, dataset: NextItemDataset, filter_history: str = "full", last: int = 10,
                        num_special: int = NUM_SPECIAL_TOKENS, ks=DEFAULT_KS, batch_size: int = 1024) -> dict:
    """The content-only kNN ranker: each user's query is the mean of the content rows `table` `(V, width)` (already
    preprocessed, e.g. whitened) of the `last` most recent history items; items are scored by cosine with it. Items
    without content (all-zero rows) score 0. Same rank and history-filter rules as the models."""
    items = torch.nn.functional.normalize(table.float(), dim=-1)
    targets, seen = dataset.targets(), dataset.filter_items(filter_history)
    ranks = []
    for lo in range(0, len(dataset), batch_size):
        rows = range(lo, min(lo + batch_size, len(dataset)))
        queries = torch.stack([table[torch.as_tensor(np.asarray(dataset[i]["input_ids"][-last:], dtype=np.int64))].float().mean(0) for i in rows])
        scores = torch.nn.functional.normalize(queries, dim=-1) @ items.T
        ranks.append(score_ranks(scores, targets[lo : lo + len(rows)], None if seen is None else seen[lo : lo + len(rows)], num_special))
    return ranking_metrics(torch.cat(ranks), ks)


__all__ = ["item_user_counts", "popularity_metrics", "popularity_lists", "content_knn_metrics", "score_ranks"]
