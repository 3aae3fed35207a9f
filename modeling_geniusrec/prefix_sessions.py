"""Stage 2 at many split points per user from one encoder pass ("prefix packing", issue 42 item 2).

A causal encoder's state at history position p depends only on items 0..p and, where the encoder uses time, on the
next event's time t_{p+1}, which is exactly the request time of a split right after p (HSTU's relative positions
are translation-invariant and its `padded` normalisation divides by a constant). So one encoding of a user's whole
training window holds the encoding of every prefix of it: restricting the decoder's memory (and each expert's
history keys) to columns <= p and taking the query from position p gives what encoding `history[: p + 1]` alone,
with `next_timestamps = t_{p + 1}`, gives (`tests/test_prefix_sessions.py` checks this against the seq2seq path).
The decoder then trains at P split points per user for the cost of one encoder pass, and the encoder's own
next-item loss (stage 1's, at every position of the same window) comes from the same pass: a joint stage 2 whose
cost per epoch stays near stage 1's instead of P encoder passes per user.
"""

import torch

from .decoder_layers import masked_mean
from .modeling_geniusrec import GeniusRecEncoderOutput

_NOT_PER_ROW = ("hidden_states", "attentions")  # tuples of per-layer tensors; training never asks for them


def prefix_encoder_outputs(model, encoder_outputs: GeniusRecEncoderOutput, input_ids: torch.LongTensor,
                           split_positions: torch.LongTensor) -> tuple[GeniusRecEncoderOutput, torch.Tensor, torch.Tensor]:
    """One encoding per (user, split position), cut from the encoding of each user's whole window.

    Args:
        model: the [`GeniusRecModel`] that made `encoder_outputs` (its item counts, for the gate's count feature).
        encoder_outputs: `model.encode(input_ids, ..., return_history_states=True)` over right-padded windows `(B, N)`.
        input_ids (`(B, N)`): the windows.
        split_positions (`(B, P)`): history positions p (the split comes right after item p), -1 where a row has fewer
            than P splits.
    Returns:
        The encoder output for the R valid splits (rows ordered user by user), and the `(R,)` user row and split slot
        of each, to gather the matching labels with `labels[rows, slots]`.
    """
    if encoder_outputs.history_states is None:
        raise ValueError("prefix_encoder_outputs needs the encoder's states at every position: encode(..., return_history_states=True)")
    lengths = encoder_outputs.history_mask.sum(1)
    if bool((split_positions >= lengths.unsqueeze(1)).any()):
        raise ValueError("a split position is at or past its window's last real item; splits must fall inside the history")
    rows, slots = (split_positions >= 0).nonzero(as_tuple=True)
    positions = split_positions[rows, slots]
    prefix = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0) <= positions.unsqueeze(1)  # (R, N)
    fields = {key: value[rows] for key, value in encoder_outputs.items() if key not in _NOT_PER_ROW and torch.is_tensor(value)}
    fields["history_mask"] = (fields["history_mask"].bool() & prefix).long()
    for key in [k for k in fields if k.startswith("expert_") and k.endswith("_mask")]:
        fields[key] = (fields[key].bool() & prefix).long()
    fields["user_embedding"] = encoder_outputs.history_states[rows, positions]
    if "history_log_count" in fields:
        fields["history_log_count"] = masked_mean(model.item_log_counts[input_ids[rows]], fields["history_mask"])
    declared = set(GeniusRecEncoderOutput.__dataclass_fields__)
    output = GeniusRecEncoderOutput(**{k: v for k, v in fields.items() if k in declared})
    for key, value in fields.items():
        if key not in declared:
            output[key] = value
    return output, rows, slots
