"""Target-item popularity buckets: where in the catalog's popularity a model's accuracy comes from.

Items are ranked by their training interactions (the train view of the protocol; on MovieLens one interaction per user
and item): **head** = the top 20% of items, **tail** = items with at most 20 training interactions (and not head),
**torso** = the rest. Each evaluated user falls in the bucket of its target item.
"""

import numpy as np

from .baselines import item_user_counts

BUCKETS = ("head", "torso", "tail")
HEAD_SHARE = 0.2
TAIL_MAX_INTERACTIONS = 20


def popularity_buckets(counts: np.ndarray, num_special: int, head_share: float = HEAD_SHARE,
                       tail_max: int = TAIL_MAX_INTERACTIONS) -> tuple[np.ndarray, dict]:
    """Training interaction `counts` `(vocab_size,)` -> (bucket index per token id `(vocab_size,)`: 0 head, 1 torso,
    2 tail, -1 special tokens; a description: the cut points and the items per bucket). Head is the `head_share` most
    interacted items (ties broken by token id, so exactly `round(head_share * items)` items)."""
    items = np.arange(num_special, len(counts))
    order = items[np.lexsort((items, -counts[items]))]  # most interacted first, then by id
    head = order[: int(round(head_share * len(items)))]
    bucket = np.full(len(counts), -1, dtype=np.int64)
    bucket[items] = np.where(counts[items] <= tail_max, 2, 1)
    bucket[head] = 0
    description = {
        "rule": f"head = top {head_share:.0%} of items by training interactions; tail = items with <= {tail_max} training "
                "interactions (not head); torso = the rest",
        "head_min_interactions": int(counts[head].min()) if len(head) else None,
        "tail_max_interactions": tail_max,
        "items": {name: int((bucket == index).sum()) for index, name in enumerate(BUCKETS)},
    }
    return bucket, description


def store_buckets(store, protocol: str, holdout_length: int, vocab_size: int, num_special: int) -> tuple[np.ndarray, dict]:
    """[`popularity_buckets`] from the training view of `store` under `protocol`."""
    counts, _ = item_user_counts(store, protocol, holdout_length, vocab_size)
    return popularity_buckets(counts, num_special)


__all__ = ["BUCKETS", "popularity_buckets", "store_buckets"]
