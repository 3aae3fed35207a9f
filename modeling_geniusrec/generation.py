"""Generation pieces shared by the models: the logits processor that bans what must not be recommended, and the
beam grouping that lets every beam of a user read that user's history once."""

import torch
from transformers.generation import LogitsProcessor


def group_beams(x: torch.Tensor, group: int) -> torch.Tensor:
    """`(B * group, H, T, d)` -> `(B, H, group * T, d)`: the rows of one history (consecutive, as `generate()` orders
    beams and returned sequences) become one row of `group * T` queries, so that attention over that history's keys
    `(B, H, N, d)` runs once per history instead of on `group` copies of it."""
    if group == 1:
        return x
    rows, heads, length, width = x.shape
    return x.view(rows // group, group, heads, length, width).transpose(1, 2).reshape(rows // group, heads, group * length, width)


def ungroup_beams(x: torch.Tensor, group: int) -> torch.Tensor:
    """The inverse of [`group_beams`]: `(B, H, group * T, d)` -> `(B * group, H, T, d)`."""
    if group == 1:
        return x
    rows, heads, length, width = x.shape
    return x.view(rows, heads, group, length // group, width).transpose(1, 2).reshape(rows * group, heads, length // group, width)


class BanItemsLogitsProcessor(LogitsProcessor):
    """Bans, per row: special tokens (all but EOS unless `ban_eos`), the user's history (expanded over beams /
    returned sequences), and items already in `input_ids` (the session so far; for a decoder-only model, the history
    and the session).

    The fixed part (special tokens and history) is built once per `generate()` call as a `(batch_size, vocab_size)`
    additive mask (0 or -inf) and broadcast over each user's beams, so a step costs one addition and the scatter of
    the session's items, instead of a copy of the scores, a repeat of the history over the beams and two scatters.
    The banned scores are -inf exactly as before (adding 0 leaves a score unchanged)."""

    def __init__(self, config, history_ids: torch.LongTensor | None = None, ban_history: bool = True, ban_repeats: bool = True,
                 ban_eos: bool = False):
        self.config, self.ban_history, self.ban_repeats, self.ban_eos = config, ban_history, ban_repeats, ban_eos
        self.history = history_ids
        self._fixed = None  # (rows, vocab) additive mask, built at the first call

    def fixed_mask(self, rows: int, vocab_size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """`(rows, vocab_size)`: -inf at the special tokens and each row's history, 0 elsewhere."""
        mask = torch.zeros(rows, vocab_size, dtype=dtype, device=device)
        specials = [i for i in range(self.config.num_special_tokens) if self.ban_eos or i != self.config.eos_token_id]
        mask[:, specials] = float("-inf")
        if self.ban_history and self.history is not None:
            mask.scatter_(1, self.history.to(device), float("-inf"))  # pad ids land on the (already banned) pad column
        return mask

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        rows = scores.shape[0] if self.history is None else self.history.shape[0]
        fixed = self._fixed
        if fixed is None or fixed.shape != (rows, scores.shape[1]) or fixed.dtype != scores.dtype or fixed.device != scores.device:
            fixed = self._fixed = self.fixed_mask(rows, scores.shape[1], scores.dtype, scores.device)
        factor = scores.shape[0] // rows  # beams / returned sequences per user, consecutive rows
        scores.view(rows, factor, -1).add_(fixed.unsqueeze(1))  # in place, as the repeat ban below: no copy of (rows, vocab)
        if self.ban_repeats:
            scores.scatter_(1, input_ids, float("-inf"))
        return scores


def eligible_counts(config, banned: torch.LongTensor) -> torch.LongTensor:
    """`(B,)` how many catalog items each row may still get: the items outside its `banned` ids `(B, S)` (pad and
    special ids ignored, repeats counted once)."""
    num_items = config.vocab_size - config.num_special_tokens
    items = torch.where(banned >= config.num_special_tokens, banned, torch.full_like(banned, -1))
    distinct = torch.sort(items, dim=1).values
    first = torch.ones_like(distinct, dtype=torch.bool)
    first[:, 1:] = distinct[:, 1:] != distinct[:, :-1]
    return num_items - ((distinct >= 0) & first).sum(1)


def check_sessions_fit(config, banned: torch.LongTensor | None, length: int, sessions: int = 1) -> None:
    """The rule for exhausted catalogs in `generate()`: a session never holds a banned (seen) or repeated item, so a row
    whose unseen items are fewer than the `length` items asked (times `sessions` alternatives that share no item) is
    refused in one line naming the row and how many remain. (`modeling_geniusrec.recommend` returns shorter sessions
    instead.)"""
    if banned is None or length <= 0:
        return
    left = eligible_counts(config, banned)
    short = torch.nonzero(left < length * sessions).flatten()
    if len(short):
        row = int(short[0])
        raise ValueError(f"row {row} has only {int(left[row])} items outside its history, fewer than the {length * sessions} asked "
                         f"({sessions} session(s) of {length}): a session never repeats or returns a seen item; ask for at most "
                         f"{int(left[row]) // sessions} items (max_new_tokens / min_new_tokens), or use modeling_geniusrec.recommend, "
                         "which returns shorter sessions")


class SharedItemPenaltyLogitsProcessor(LogitsProcessor):
    """Lowers, per user, the scores of the items of that user's earlier returned sessions by `penalty`
    (`float("inf")`: bans them), so that the next session is an alternative rather than a reordering.

    Args:
        earlier_items: `(batch_size, S)` item token ids per user (ids below `num_special_tokens` are ignored), expanded
            over each user's consecutive beams like [`BanItemsLogitsProcessor`]'s history.
        penalty: subtracted from the logit of each such item (> 0).
        num_special_tokens: ids below it (pad, SEP, EOS, UNK) are never penalised.
    """

    def __init__(self, earlier_items: torch.LongTensor, penalty: float, num_special_tokens: int):
        if not penalty > 0:
            raise ValueError(f"shared_item_penalty must be > 0 (float('inf') bans shared items), got {penalty}")
        self.items, self.penalty, self.num_special_tokens = earlier_items, float(penalty), num_special_tokens
        self._mask = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        rows = self.items.shape[0]
        if self._mask is None or self._mask.shape != (rows, scores.shape[1]) or self._mask.device != scores.device:
            mask = torch.zeros(rows, scores.shape[1], dtype=scores.dtype, device=scores.device)
            items = self.items.to(scores.device)
            value = torch.where(items >= self.num_special_tokens, -self.penalty, 0.0).to(scores.dtype)
            self._mask = mask.scatter_(1, items, value)  # special ids get 0: never penalised
        factor = scores.shape[0] // rows
        return (scores.view(rows, factor, -1) + self._mask.unsqueeze(1)).view(scores.shape)


class ItemBiasLogitsProcessor(LogitsProcessor):
    """Adds a fixed per-item bias `(vocab_size,)` to every step's scores, e.g. `-alpha * log(1 + training count)`,
    a popularity penalty that trades a little accuracy for coverage and novelty (chosen on validation)."""

    def __init__(self, bias: torch.Tensor):
        if bias.dim() != 1:
            raise ValueError(f"the item bias must be one value per token id (vocab_size,), got shape {tuple(bias.shape)}")
        self.bias = bias

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape[-1] != self.bias.shape[0]:
            raise ValueError(f"item bias has {self.bias.shape[0]} entries, the scores {scores.shape[-1]} columns")
        return scores + self.bias.to(scores.device, scores.dtype)


class FirstStepMixLogitsProcessor(LogitsProcessor):
    """Mixes the session's first-step ranking into every later step: `scores_t + weight * scores_1` per user.

    The first call's scores (the next-item distribution, identical over a user's `rows_per_history` consecutive
    beams) are kept per user; each later step adds `weight` times them to every beam of that user (and the first step
    counts `1 + weight` times itself), so a session's score is `sum_t log p_t(s_t) + weight * sum_t log p_1(s_t)`. `weight=0` is plain
    beam search; a large weight ranks by the first step alone (the next-item list), so the weight moves a session
    between the decoder's sequence and the first step's list. One instance per `generate()` call (it remembers the
    first step); for encoder-decoder models, whose `input_ids` are the session alone."""

    def __init__(self, weight: float, rows_per_history: int):
        self.weight, self.group, self.first = weight, rows_per_history, None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.first is None:
            self.first = scores[:: self.group].clone()  # (users, vocab): every beam of a user sees the same first step
            return scores * (1 + self.weight)  # the first step mixed with itself: every position carries the same weight
        users = self.first.shape[0]
        return (scores.view(users, self.group, -1) + self.weight * self.first.unsqueeze(1)).view(scores.shape)


__all__ = ["eligible_counts", "check_sessions_fit", "BanItemsLogitsProcessor", "SharedItemPenaltyLogitsProcessor", "ItemBiasLogitsProcessor",
           "FirstStepMixLogitsProcessor", "group_beams", "ungroup_beams"]
