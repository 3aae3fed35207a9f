"""The item-scoring head shared by HSTU, SASRec and GeniusRec: one scale, the catalog scored in chunks.

A host model defines `item_vectors(start, end)` (unit-normalised item vectors of token ids `[start, end)`) and has
`config.logit_scale` (the inverse temperature); scores are `logit_scale * cos(query, item)`. The catalog is scored
in chunks, so a 1,000,000-item catalog never builds a `(B, N, V)` tensor.

The chunk bound: every inference path that scores against the whole catalog (ranking evaluation, `top_k_items`, the
two-stage decode's retrieval, `add_items`' content neighbours) scores at most `SCORE_CHUNK_ROWS` rows against at most
`SCORE_CHUNK_ITEMS` items at once, so no float tensor larger than about `SCORE_CHUNK_ROWS x SCORE_CHUNK_ITEMS` (256 MB
in float32) spans the catalog (`tests/test_scale.py` watches every operator's output to check it). Read at call
time: set them on this module to trade memory for speed. The full-catalog beam search (`generate()` without
`candidate_count`) is the exception by design: its `(users x beams, catalog)` step scores grow with the batch.
"""

from typing import Iterator

import torch

SCORE_CHUNK_ROWS = 1024  # query rows scored against the catalog at once
SCORE_CHUNK_ITEMS = 65536  # catalog items scored at once


def scale_scores(cosines: torch.Tensor, config, inplace: bool = False) -> torch.Tensor:
    """The one place scores are scaled: `config.logit_scale * cos(query, item)` for cosines of any shape (full
    catalog, sampled negatives, one positive per row). `inplace` scales `cosines` itself (one pass less over a
    `(B, T, V)` tensor)."""
    return cosines.mul_(config.logit_scale) if inplace else cosines * config.logit_scale


def item_scores(queries: torch.Tensor, item_matrix: torch.Tensor, config, inplace: bool = True) -> torch.Tensor:
    """Scores of unit queries `(..., D)` against unit item vectors `(N, D)` -> `(..., N)`: `logit_scale * q . e`."""
    return scale_scores(queries @ item_matrix.T, config, inplace=inplace)


def no_top_k(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The empty start `(M, 0)` scores and ids of a running top-k for queries `rows` `(M, D)`."""
    return rows.new_empty(rows.shape[0], 0), torch.empty(rows.shape[0], 0, dtype=torch.long, device=rows.device)


def merge_top_k(best_scores: torch.Tensor, best_ids: torch.Tensor, scores: torch.Tensor, first_id: int, k: int):
    """One step of a running top-k over chunks: the best `k` of the kept `(M, <= k)` scores / ids and a chunk's scores
    `(M, n)` for ids `first_id .. first_id + n - 1`, best first."""
    ids = torch.arange(first_id, first_id + scores.shape[1], device=scores.device).expand_as(scores)
    all_scores = torch.cat([best_scores, scores], dim=1)
    best_scores, index = all_scores.topk(min(k, all_scores.shape[1]), dim=1)
    return best_scores, torch.cat([best_ids, ids], dim=1).gather(1, index)


def chunked_top_k(queries: torch.Tensor, keys: torch.Tensor, k: int) -> torch.Tensor:
    """Indices `(M, k)` of the `k` keys `(N, D)` with the largest dot product with each query `(M, D)`, best first,
    scored `SCORE_CHUNK_ROWS x SCORE_CHUNK_ITEMS` at a time (a running top-k over key chunks)."""
    out = []
    for lo in range(0, queries.shape[0], SCORE_CHUNK_ROWS):
        rows = queries[lo : lo + SCORE_CHUNK_ROWS]
        best = no_top_k(rows)
        for start in range(0, keys.shape[0], SCORE_CHUNK_ITEMS):
            best = merge_top_k(*best, rows @ keys[start : start + SCORE_CHUNK_ITEMS].T, start, k)
        out.append(best[1])
    return torch.cat(out) if out else torch.empty(0, k, dtype=torch.long, device=queries.device)


def fill_exhausted(scores: torch.Tensor, ids: torch.Tensor, pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The rule for exhausted catalogs in a top-k list: a slot no eligible item could fill (its score is -inf: every
    remaining item is excluded) holds `pad_token_id` with score -inf, never an excluded item; a `UserWarning` says how
    many rows are short."""
    empty = torch.isneginf(scores)
    if bool(empty.any()):
        import warnings

        warnings.warn(f"{int(empty.any(1).sum())} row(s) have fewer eligible items than k: their last slots hold the pad id with score "
                      "-inf (modeling_geniusrec.recommend returns shorter lists instead)", UserWarning, stacklevel=3)
        ids = ids.masked_fill(empty, pad_token_id)
    return scores, ids


class ItemScoringMixin:
    """`iter_item_scores` and `top_k_items` over `self.item_vectors(...)` and `self.config.logit_scale`."""

    def item_vectors(self, start: int = 0, end: int | None = None) -> torch.Tensor:
        raise NotImplementedError

    def iter_item_scores(self, user_embeddings: torch.Tensor, chunk_size: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        """Scores every item in chunks, so a 1,000,000-item catalog never builds a `(B, N, V)` tensor.

        Args:
            user_embeddings: `(M, D)` unit-normalised user states (e.g. `outputs.user_embeddings`).
            chunk_size: items per chunk (default `SCORE_CHUNK_ITEMS`).
        Yields:
            `(first_token_id, scores)` with scores `(M, chunk)` = `logit_scale * cos` for token ids
            `first_token_id .. first_token_id + chunk - 1`; special tokens are skipped.
        """
        start = self.config.num_special_tokens if getattr(self.config, "filter_special_tokens", True) else 0
        chunk_size = chunk_size or SCORE_CHUNK_ITEMS
        for lo in range(start, self.config.vocab_size, chunk_size):
            hi = min(lo + chunk_size, self.config.vocab_size)
            yield lo, scale_scores(user_embeddings @ self.item_vectors(lo, hi).T, self.config)

    @torch.no_grad()
    def top_k_items(
        self, user_embeddings: torch.Tensor, k: int, exclude: torch.Tensor | None = None, chunk_size: int | None = None,
        item_bias: torch.Tensor | None = None, pad_exhausted: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k items per user with a running top-k over catalog chunks (`SCORE_CHUNK_ROWS` users at a time).

        Args:
            user_embeddings: `(M, D)`.
            k: number of items to return.
            exclude: `(M, L)` token ids to leave out per row (e.g. the history); pad ids are ignored.
            item_bias: `(vocab_size,)` added to every row's scores before ranking (e.g. a popularity penalty).
            pad_exhausted: the rule below (default); False leaves the excluded items at score -inf in those slots, for
                callers that mask them themselves (the two-stage decode's retrieval).
        Returns:
            `(scores, token_ids)`, each `(M, k)`, best first. A row with fewer than `k` items left outside `exclude` ends
            with `pad_token_id` at score -inf (and a warning): an excluded item is never returned.
        """
        if user_embeddings.dim() != 2 or user_embeddings.shape[1] != self.config.hidden_size:
            raise ValueError(f"user_embeddings must have shape (num_users, {self.config.hidden_size}), got {tuple(user_embeddings.shape)}")
        if not bool(torch.isfinite(user_embeddings).all()):
            raise ValueError("user_embeddings contains NaN or inf: check the model's inputs (timestamps, ids) before ranking")
        num_items = self.config.vocab_size - self.config.num_special_tokens
        if not isinstance(k, int) or not 1 <= k <= num_items:
            raise ValueError(f"k must be an int in [1, {num_items}] (the catalog's items), got {k!r}")
        if exclude is not None and (exclude.dim() != 2 or exclude.shape[0] != user_embeddings.shape[0]):
            raise ValueError(f"exclude must have shape ({user_embeddings.shape[0]}, L), one row of token ids per user; "
                             f"got {tuple(exclude.shape)}")
        if item_bias is not None and item_bias.shape != (self.config.vocab_size,):
            raise ValueError(f"item_bias must have shape ({self.config.vocab_size},), got {tuple(item_bias.shape)}")
        if user_embeddings.shape[0] > SCORE_CHUNK_ROWS:  # row chunks: at most SCORE_CHUNK_ROWS x chunk scores at once
            rows = range(0, user_embeddings.shape[0], SCORE_CHUNK_ROWS)
            parts = [self.top_k_items(user_embeddings[lo : lo + SCORE_CHUNK_ROWS], k,
                                      None if exclude is None else exclude[lo : lo + SCORE_CHUNK_ROWS], chunk_size, item_bias,
                                      pad_exhausted) for lo in rows]
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        best = no_top_k(user_embeddings)
        for lo, scores in self.iter_item_scores(user_embeddings, chunk_size):
            if item_bias is not None:
                scores = scores + item_bias[lo : lo + scores.shape[1]].to(scores.device, scores.dtype)
            if exclude is not None:
                local = exclude - lo
                ok = (local >= 0) & (local < scores.shape[1]) & (exclude >= self.config.num_special_tokens)
                rows = torch.arange(scores.shape[0], device=scores.device).unsqueeze(1).expand_as(local)
                scores = scores.clone()
                scores[rows[ok], local[ok]] = float("-inf")
            best = merge_top_k(*best, scores, lo, k)
        return fill_exhausted(*best, self.config.pad_token_id) if pad_exhausted else best


__all__ = ["ItemScoringMixin", "chunked_top_k", "item_scores", "scale_scores", "SCORE_CHUNK_ROWS", "SCORE_CHUNK_ITEMS"]
