"""Generation pieces shared by the models: the logits processor that bans what must not be recommended."""

import torch
from transformers.generation import LogitsProcessor


class BanItemsLogitsProcessor(LogitsProcessor):
    """Bans, per row: special tokens (all but EOS unless `ban_eos`), the user's history (expanded over beams /
    returned sequences), and items already in `input_ids` (the session so far; for a decoder-only model, the history
    and the session)."""

    def __init__(self, config, history_ids: torch.LongTensor | None = None, ban_history: bool = True, ban_repeats: bool = True,
                 ban_eos: bool = False):
        self.config, self.ban_history, self.ban_repeats, self.ban_eos = config, ban_history, ban_repeats, ban_eos
        self.history = history_ids

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.clone()
        specials = [i for i in range(self.config.num_special_tokens) if self.ban_eos or i != self.config.eos_token_id]
        scores[:, specials] = float("-inf")
        if self.ban_history and self.history is not None:
            factor = scores.shape[0] // self.history.shape[0]
            history = self.history.to(scores.device).repeat_interleave(factor, dim=0)
            scores.scatter_(1, history, float("-inf"))  # pad ids land on the (already banned) pad column
        if self.ban_repeats:
            scores.scatter_(1, input_ids, float("-inf"))
        return scores


__all__ = ["BanItemsLogitsProcessor"]
