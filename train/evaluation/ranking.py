"""Full-ranking next-item metrics: HR@K, NDCG@K and MRR, computed in chunks over users and over the catalog.

Rank convention (0-based, pessimistic): the number of candidate items whose score is >= the target's score, other
than the target itself, so a constant model ranks every target last among its ties rather than first. Candidates
are all items, minus the user's history when `filter_history` (the target itself is never removed), minus the
special tokens. With one target per user: HR@K = 1[rank < K], NDCG@K = 1[rank < K] / log2(rank + 2),
MRR = 1 / (rank + 1); each averaged over users.
"""

import numpy as np
import torch
from tqdm.auto import tqdm

from data_scripts.processed import NextItemCollator, NextItemDataset
from modeling_geniusrec import scoring
from modeling_geniusrec.recommendation import next_item_queries

DEFAULT_KS = (10, 50, 200)


@torch.no_grad()
def target_ranks(
    model,
    user_embeddings: torch.Tensor,
    targets: torch.Tensor,
    histories: torch.Tensor | None = None,
    user_chunk_size: int | None = None,
    item_chunk_size: int | None = None,
) -> torch.Tensor:
    """Ranks of each target among all items.

    Args:
        model: a next-item model with `iter_item_scores` (e.g. [`HSTUForNextItemPrediction`]).
        user_embeddings: `(M, D)`.
        targets: `(M,)` target token ids.
        histories: `(M, L)` token ids to filter per user (pad / negative values ignored), or None for no filtering.
        user_chunk_size, item_chunk_size: rows and items scored at once (default `modeling_geniusrec.scoring`'s
            `SCORE_CHUNK_ROWS` / `SCORE_CHUNK_ITEMS`).
    Returns:
        `(M,)` long tensor of 0-based ranks.
    """
    num_special = model.config.num_special_tokens
    user_chunk_size = user_chunk_size or scoring.SCORE_CHUNK_ROWS
    item_chunk_size = item_chunk_size or scoring.SCORE_CHUNK_ITEMS
    ranks = []
    for lo in range(0, user_embeddings.shape[0], user_chunk_size):
        users = user_embeddings[lo : lo + user_chunk_size]
        tgt = targets[lo : lo + user_chunk_size].to(users.device)
        hist = None if histories is None else histories[lo : lo + user_chunk_size].to(users.device)
        # two passes over the catalog (scores recomputed, never stored whole): the first reads the target's own
        # score from the same matmul that scores the other items, so ties compare bit-identical numbers
        target_scores = torch.full(tgt.shape, float("nan"), dtype=users.dtype, device=users.device)
        for start, scores in model.iter_item_scores(users, item_chunk_size):
            rows = ((tgt >= start) & (tgt < start + scores.shape[1])).nonzero().flatten()
            target_scores[rows] = scores[rows, tgt[rows] - start]
        if bool(target_scores.isnan().any()):
            raise ValueError("some targets are not item token ids of this model's vocabulary")
        better = torch.zeros(users.shape[0], dtype=torch.long, device=users.device)
        for start, scores in model.iter_item_scores(users, item_chunk_size):
            ge = scores >= target_scores.unsqueeze(1)
            ids = torch.arange(start, start + scores.shape[1], device=scores.device)
            ge &= ids.unsqueeze(0) != tgt.unsqueeze(1)
            if hist is not None:
                local = hist - start
                ok = (local >= 0) & (local < scores.shape[1]) & (hist >= num_special) & (hist != tgt.unsqueeze(1))
                rows = torch.arange(hist.shape[0], device=hist.device).unsqueeze(1).expand_as(hist)
                ge[rows[ok], local[ok]] = False
            better += ge.sum(dim=1)
        ranks.append(better)
    return torch.cat(ranks)


def hit_rate(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per user: 1 when the target is in the top k. `ranks` `(M,)` 0-based -> `(M,)`."""
    return (ranks < k).astype(np.float64)


def ndcg(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per user: `1 / log2(rank + 2)` when the target is in the top k (one relevant item), else 0."""
    return np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)


# name -> per-user metric at cut-off k; `ranking_metrics` reports `<name>@<k>` for each (add one: a function + a line)
RANK_METRICS = {"hr": hit_rate, "ndcg": ndcg}


def ranking_metrics(ranks, ks=DEFAULT_KS) -> dict:
    """`(M,)` 0-based ranks -> `{"<name>@k" for every metric of RANK_METRICS and k in ks, "mrr"}` averaged over
    users (floats)."""
    ranks = np.asarray(ranks.cpu() if isinstance(ranks, torch.Tensor) else ranks, dtype=np.float64)
    if ranks.size == 0:
        raise ValueError("no users to evaluate: the split view is empty")
    out = {}
    for k in ks:
        for name, metric in RANK_METRICS.items():
            out[f"{name}@{k}"] = float(metric(ranks, k).mean())
    out["mrr"] = float((1.0 / (ranks + 1.0)).mean())
    return out


def bucket_metrics(ranks, targets, buckets: np.ndarray, names=("head", "torso", "tail"), ks=(10,)) -> dict:
    """Ranking metrics per target-item bucket, flat: `{"<bucket>_<metric>@k": float (None for an empty bucket),
    "<bucket>_users": n}`.
    `ranks` `(M,)`, `targets` `(M,)` token ids, `buckets` `(vocab_size,)` bucket index per token id (see
    `train.evaluation.buckets`)."""
    ranks = np.asarray(ranks.cpu() if isinstance(ranks, torch.Tensor) else ranks, dtype=np.float64)
    of_user = np.asarray(buckets)[np.asarray(targets.cpu() if isinstance(targets, torch.Tensor) else targets)]
    out = {}
    for index, name in enumerate(names):
        members = of_user == index
        out[f"{name}_users"] = int(members.sum())
        bucket = ranking_metrics(ranks[members], ks) if members.any() else dict.fromkeys(ranking_metrics(np.zeros(1), ks))
        out.update({f"{name}_{key}": value for key, value in bucket.items() if key != "mrr"})  # None: no user in the bucket
    return out


def make_compute_metrics(model_ref, dataset, filter_history: str = "full", ks=None, buckets: np.ndarray | None = None):
    """`compute_metrics` for the Trainer, bound to the evaluated split view `dataset`: ranks each row's target (from
    the dataset, the one home of the evaluation target) among all items, from the gathered `(M, D)` query states
    (stage 1: the encoder's last state; GeniusRec: the decoder's first step), removing what the row's user has seen
    (`filter_history`: full / window / none). Rebind it (`trainer.compute_metrics = ...`) before evaluating another
    split. With `buckets` (bucket index per token id), the metrics per target-popularity bucket come too
    ([`bucket_metrics`])."""
    targets = dataset.targets()

    def compute_metrics(eval_pred):
        model = model_ref()
        device = next(model.parameters()).device
        states = torch.as_tensor(np.asarray(eval_pred.predictions), device=device)
        if states.shape[0] != len(targets):
            raise RuntimeError(f"compute_metrics is bound to a {dataset.split} view of {len(targets)} rows but got {states.shape[0]} "
                               "predictions: rebind it with make_compute_metrics(..., <the evaluated dataset>)")
        # the filter lists are padded per chunk of rows (one padded (rows, longest history) matrix for a whole
        # catalog-scale view would be as wide as its longest history: tens of GB on the Books-scale data)
        chunk = scoring.SCORE_CHUNK_ROWS
        ranks = torch.cat([target_ranks(model, states[lo : lo + chunk], targets[lo : lo + chunk],
                                        dataset.filter_items(filter_history, range(lo, min(lo + chunk, len(targets)))))
                           for lo in range(0, len(targets), chunk)])
        metrics = ranking_metrics(ranks, ks or DEFAULT_KS)
        if buckets is not None:
            metrics.update(bucket_metrics(ranks, targets, buckets))
        return metrics

    return compute_metrics


def query_states(model, batch) -> torch.Tensor:
    """The `(B, D)` states that rank the next item ([`modeling_geniusrec.recommendation.next_item_queries`]: the
    encoder's last state for stage-1 models, the decoder's first step for GeniusRec)."""
    return next_item_queries(model, batch)


def keep_user_embeddings(logits, labels):
    """Trainer hook (`preprocess_logits_for_metrics`) of the stage-1 models: keep only the `(B, D)` user states, never
    `(B, N, V)` scores."""
    return logits[0] if isinstance(logits, (tuple, list)) else logits


@torch.no_grad()
def evaluate_next_item(model, dataset: NextItemDataset, batch_size: int = 256, filter_history: str = "full", ks=DEFAULT_KS, progress=True,
                       rank_with: str = "model", buckets: np.ndarray | None = None) -> dict:
    """Full-ranking metrics of `model` on a split view (one target per user; `filter_history` full / window / none).
    `rank_with="encoder"` ranks a GeniusRec checkpoint with its encoder's next-item query (stage 1's ranking, from the
    encoder as stage 2 left it) instead of the decoder's first step. With `buckets` (bucket index per token id), the
    metrics per target-popularity bucket too ([`bucket_metrics`])."""
    if rank_with not in ("model", "encoder"):
        raise ValueError(f"rank_with must be 'model' or 'encoder', got {rank_with!r}")
    if rank_with == "encoder" and not getattr(model.config, "is_encoder_decoder", False):
        raise ValueError("--rank_with encoder is for GeniusRec checkpoints (a stage-1 model ranks with its encoder already)")
    model.eval()
    device = next(model.parameters()).device
    collator = NextItemCollator(model.config.pad_token_id)
    targets = dataset.targets()
    order = torch.as_tensor(np.argsort(dataset.input_lengths(), kind="stable"))  # batches of similar lengths pad little
    ranks = []
    for lo in tqdm(range(0, len(dataset), batch_size), desc=f"evaluating {dataset.split}", disable=not progress):
        rows = order[lo : lo + batch_size]
        batch = collator.pad_histories([dataset[int(i)] for i in rows])
        batch = {k: v.to(device) for k, v in batch.items()}
        users = model.get_encoder()(**batch).user_embedding if rank_with == "encoder" else query_states(model, batch)
        seen = dataset.filter_items(filter_history, [int(i) for i in rows])  # padded per batch, never for the whole view
        ranks.append(target_ranks(model, users, targets[rows], seen))
    ranks = torch.cat(ranks)
    metrics = ranking_metrics(ranks, ks)
    if buckets is not None:
        metrics.update(bucket_metrics(ranks, targets[order], buckets))
    return metrics


__all__ = ["target_ranks", "ranking_metrics", "bucket_metrics", "RANK_METRICS", "hit_rate", "ndcg", "make_compute_metrics",
           "query_states", "evaluate_next_item", "keep_user_embeddings", "DEFAULT_KS"]
