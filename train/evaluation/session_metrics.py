"""Session metrics: accuracy of a generated session against the real next items, and beyond-accuracy metrics.

Definitions (sessions are lists of item token ids, best first):

- recall@k: |top-k of the session ∩ target| / min(|target|, k)   (with |target| = k this is precision = recall)
- ndcg@k: sum over hits at rank r (0-based) of 1/log2(r + 2), divided by the ideal sum over min(|target|, k) ranks
- ild (intra-list diversity): mean pairwise cosine distance 1 - cos(v_i, v_j) between the items of a session
  (v = item text embeddings, or genre multi-hot vectors), averaged over sessions
- novelty: mean self-information -log2(p(i)) of the recommended items, p(i) = share of training users who had item i
  (items never seen in training count as seen by one user)
- coverage: distinct recommended items / catalog size
- repetition rate: share of recommended items already in the user's history or earlier in the same session
- phr@k (next-basket literature's "personal hit ratio"): share of users with at least one target item in the top k
- repeat / explore split (next-basket literature): the target items the user already had in the history (repeat)
  and the new ones (explore), recall@k over each part alone (users without such items skipped), and the share of
  target items that are repeats. On MovieLens every target is new (a film is rated once), so the repeat part is empty.
- invalid rate: share of generated ids that are not items (special tokens, ids outside the vocabulary); duplicate
  rate: share of generated items already earlier in the same session
"""

import math

import numpy as np
import torch


def session_accuracy(sessions: list[list[int]], targets: list[list[int]], k: int = 10, histories: list[list[int]] | None = None) -> dict:
    """recall@k, ndcg@k and phr@k of each session against its target items; with `histories`, the repeat / explore
    split (see the module docstring)."""
    if len(sessions) != len(targets) or not sessions:
        raise ValueError("sessions and targets must be non-empty lists of the same length")
    recall, ndcg, phr = [], [], []
    for session, target in zip(sessions, targets):
        wanted, top = set(target), session[:k]
        hits = [r for r, item in enumerate(top) if item in wanted]
        ideal = min(len(wanted), k)
        recall.append(len(hits) / ideal)
        ndcg.append(sum(1 / math.log2(r + 2) for r in hits) / sum(1 / math.log2(r + 2) for r in range(ideal)))
        phr.append(float(bool(hits)))
    out = {f"session_recall@{k}": float(np.mean(recall)), f"session_ndcg@{k}": float(np.mean(ndcg)), f"phr@{k}": float(np.mean(phr))}
    if histories is not None:
        parts = {"repeat": [], "explore": []}
        repeats = total = 0
        for session, target, history in zip(sessions, targets, histories):
            seen, top = set(history), set(session[:k])
            for name, part in (("repeat", {t for t in target if t in seen}), ("explore", {t for t in target if t not in seen})):
                if part:
                    parts[name].append(len(top & part) / min(len(part), k))
            repeats += sum(t in seen for t in set(target))
            total += len(set(target))
        for name, values in parts.items():
            out[f"{name}_recall@{k}"] = float(np.mean(values)) if values else None
        out["target_repeat_share"] = repeats / max(total, 1)
    return out


def validity(sessions: list[list[int]], num_special_tokens: int, vocab_size: int) -> dict:
    """`invalid_rate` (ids that are not items) and `duplicate_rate` (items already earlier in the same session)."""
    invalid = duplicate = total = 0
    for session in sessions:
        seen = set()
        for item in session:
            invalid += not (num_special_tokens <= item < vocab_size)
            duplicate += item in seen
            seen.add(item)
            total += 1
    return {"invalid_rate": invalid / max(total, 1), "duplicate_rate": duplicate / max(total, 1)}


def intra_list_diversity(sessions: list[list[int]], item_vectors: torch.Tensor) -> float:
    """Mean pairwise cosine distance inside each session; `item_vectors` `(vocab_size, dim)` indexed by token id."""
    vectors = torch.nn.functional.normalize(item_vectors.float(), dim=-1)
    values = []
    for session in sessions:
        if len(session) < 2:
            continue
        v = vectors[torch.as_tensor(session)]
        sim = v @ v.T
        n = len(session)
        values.append(float((1 - sim)[~torch.eye(n, dtype=torch.bool)].mean()))
    return float(np.mean(values)) if values else 0.0


def novelty(sessions: list[list[int]], item_user_counts: np.ndarray, num_users: int) -> float:
    counts = np.maximum(np.asarray(item_user_counts, dtype=np.float64), 1.0)
    info = -np.log2(counts / num_users)
    values = [info[i] for session in sessions for i in session]
    return float(np.mean(values)) if values else 0.0


def coverage(sessions: list[list[int]], num_items: int) -> float:
    return len({i for session in sessions for i in session}) / num_items


def repetition_rate(sessions: list[list[int]], histories: list[list[int]]) -> float:
    repeated = total = 0
    for session, history in zip(sessions, histories):
        seen = set(history)
        for item in session:
            repeated += item in seen
            seen.add(item)
            total += 1
    return repeated / max(total, 1)


def beyond_accuracy(sessions, histories, item_vectors, item_user_counts, num_users, num_items) -> dict:
    return {
        "ild": intra_list_diversity(sessions, item_vectors),
        "novelty": novelty(sessions, item_user_counts, num_users),
        "coverage": coverage(sessions, num_items),
        "repetition_rate": repetition_rate(sessions, histories),
    }


__all__ = ["session_accuracy", "validity", "intra_list_diversity", "novelty", "coverage", "repetition_rate", "beyond_accuracy"]
