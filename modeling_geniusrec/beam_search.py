"""A lean beam search for GeniusRec's common case: sessions of exactly `max_new_tokens` items (EOS banned).

transformers' `_beam_search` is general (finished hypotheses, length penalties, early stopping, stopping criteria,
outputs for `return_dict_in_generate`), and on the 2 CPU cores of the ML-1M benchmark its bookkeeping took about as
long as the decoder itself: a copy of every step's `(beams, catalog)` logits, the decoder cache concatenated and
re-indexed every step, several gathers over `(batch, 2 * beams, max_length)` per step. When every hypothesis has the
same length none of the general machinery changes the result: the finished set is the last step's best `num_beams`,
in order. [`exact_length_beam_search`] computes exactly that with the same arithmetic (log-softmax, the logits
processors, the running score added, a top-`2 * num_beams` over `beams x catalog` as transformers takes), and

- runs the first step once per user instead of once per beam (at step 1 a user's beams are all `[SEP]`, and only
  beam 0 can be continued: the others start at -1e9), expanding the scores over the beams for the processors;
- keeps the decoder's self-attention keys/values in [`SessionBeamCache`]: buffers of the whole session's length,
  written in place, reordered once per step by one index copy of the filled positions.

`GeniusRecForSessionGeneration._beam_search` takes this path when [`takes_lean_path`] says the call is one it
covers, and transformers' otherwise.
"""

import torch
from transformers import LogitsProcessorList

LEAN_MODEL_KWARGS = {"encoder_outputs", "use_cache", "cache", "encoder_query_weight", "attention_mask", "past_key_values", "cache_position",
                     "timestamps", "next_timestamps", "output_attentions", "output_hidden_states", "return_dict"}


class SessionBeamCache:
    """The decoder's self-attention cache for [`exact_length_beam_search`]: per layer, key and value buffers
    `(rows, heads, max_length, head_dim)` allocated at the layer's first update; `update` writes the new positions in
    place and returns views of the filled ones (what `DynamicCache.update` returns); `reorder(rows)` gathers the filled
    positions of the kept beams. Duck-types the part of transformers' `Cache` the decoder uses."""

    def __init__(self, max_length: int):
        self.max_length = max_length
        self.keys, self.values, self.lengths = {}, {}, {}

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.lengths.get(layer_idx, 0)

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        rows, heads, length, width = key.shape
        if layer_idx not in self.keys:
            self.keys[layer_idx] = key.new_empty(rows, heads, self.max_length, width)
            self.values[layer_idx] = value.new_empty(rows, heads, self.max_length, value.shape[-1])
            self.lengths[layer_idx] = 0
        start = self.lengths[layer_idx]
        if start + length > self.max_length:
            raise ValueError(f"the session cache holds {self.max_length} positions; {start + length} were written")
        self.keys[layer_idx][:, :, start : start + length] = key
        self.values[layer_idx][:, :, start : start + length] = value
        self.lengths[layer_idx] = start + length
        end = start + length
        return self.keys[layer_idx][:, :, :end], self.values[layer_idx][:, :, :end]

    def reorder(self, rows: torch.LongTensor) -> None:
        """Keeps, for every new row `i`, the cached positions of old row `rows[i]` (the number of rows may change:
        after the first step, one row per user becomes `num_beams`)."""
        for layer_idx, length in self.lengths.items():
            for buffers in (self.keys, self.values):
                old = buffers[layer_idx]
                new = old.new_empty(len(rows), *old.shape[1:])
                new[:, :, :length] = old[:, :, :length].index_select(0, rows)
                buffers[layer_idx] = new


def takes_lean_path(generation_config, logits_processor, stopping_criteria, synced_gpus: bool, model_kwargs: dict) -> bool:
    """Whether [`exact_length_beam_search`] returns what transformers' beam search would: beam search without sampling,
    EOS banned by GeniusRec's processor (every session has `max_new_tokens` items, so the general machinery for
    finished hypotheses decides nothing), no per-step outputs, one process, only the stopping criteria transformers
    adds for a fixed length and EOS, and no model input beyond what the lean loop passes on."""
    from transformers.generation.stopping_criteria import EosTokenCriteria, MaxLengthCriteria

    from .generation import BanItemsLogitsProcessor

    config = generation_config
    return (config.num_beams > 1 and not config.do_sample and not config.return_dict_in_generate and not synced_gpus
            and not (config.output_scores or config.output_logits or config.output_attentions or config.output_hidden_states)
            and any(isinstance(p, BanItemsLogitsProcessor) and p.ban_eos for p in logits_processor)
            and all(isinstance(c, (MaxLengthCriteria, EosTokenCriteria)) for c in stopping_criteria)
            and (config.num_return_sequences or 1) <= config.num_beams
            and model_kwargs.get("encoder_outputs") is not None and set(model_kwargs) <= LEAN_MODEL_KWARGS)


@torch.no_grad()
def exact_length_beam_search(model, input_ids: torch.LongTensor, logits_processor: LogitsProcessorList, generation_config,
                             **model_kwargs) -> torch.LongTensor:
    """Beam search over sessions of exactly `max_length - input_ids.shape[1]` new items (see the module docstring).

    Args:
        input_ids `(batch_size * num_beams, start)`: the decoder start (`[SEP]`), a user's beams in consecutive rows.
        logits_processor: applied to every step's log-probabilities `(batch_size * num_beams, vocab_size)`.
        model_kwargs: `encoder_outputs` (one row per user), `use_cache`, `encoder_query_weight`.
    Returns:
        `(batch_size * num_return_sequences, max_length)`: each user's best sequences, best first.
    """
    beams = generation_config.num_beams
    rows, start = input_ids.shape
    users, steps = rows // beams, generation_config.max_length - start
    use_cache = model_kwargs.get("use_cache", True) is not False
    options = {"encoder_outputs": model_kwargs["encoder_outputs"], "use_cache": use_cache, "return_dict": True}
    if model_kwargs.get("encoder_query_weight"):
        options["encoder_query_weight"] = model_kwargs["encoder_query_weight"]
    eos = generation_config._eos_token_tensor
    keep = max(2, 1 + (eos.shape[0] if eos is not None else 0)) * beams  # transformers' beams_to_keep
    cache = SessionBeamCache(steps + start) if use_cache else None
    offsets = torch.arange(users, device=input_ids.device).unsqueeze(1) * beams
    # one encoding per user (GeniusRec's generate): the first step runs once per user; an encoding expanded over
    # the beams (a caller's own expansion) runs it on every row
    once_per_user = options["encoder_outputs"].last_hidden_state.shape[0] == users
    sequences = input_ids
    scores = torch.full((users, beams), -1e9, device=input_ids.device)  # only beam 0 can be continued at first
    scores[:, 0] = 0.0
    for step in range(steps):
        if step == 0 and once_per_user:  # a user's beams are identical: decode one row each, expand the scores
            first = input_ids[::beams]
            logits = model(decoder_input_ids=first, session_ids=first, cache=cache, **options).logits[:, -1]
            log_probs = torch.log_softmax(logits, dim=-1, dtype=torch.float32).repeat_interleave(beams, dim=0)
        else:
            decoder_input = sequences[:, -1:] if use_cache else sequences
            logits = model(decoder_input_ids=decoder_input, session_ids=sequences, cache=cache, **options).logits[:, -1]
            log_probs = torch.log_softmax(logits, dim=-1, dtype=torch.float32)  # float32 scores from any model dtype
        del logits
        log_probs = logits_processor(sequences, log_probs)
        vocab = log_probs.shape[-1]
        total = log_probs.view(users, beams, vocab).add_(scores.unsqueeze(-1)).view(users, beams * vocab)
        top_scores, top = torch.topk(total, min(keep, beams * vocab), dim=1)
        del total, log_probs
        scores, top = top_scores[:, :beams], top[:, :beams]
        parents = (offsets + torch.div(top, vocab, rounding_mode="floor")).view(-1)
        sequences = torch.cat([sequences.index_select(0, parents), (top % vocab).view(-1, 1)], dim=1)
        if cache is not None:
            cache.reorder(parents // beams if step == 0 and once_per_user else parents)  # then one row per user was cached
    count = generation_config.num_return_sequences or 1
    return sequences.view(users, beams, -1)[:, :count].reshape(users * count, -1)


__all__ = ["SessionBeamCache", "exact_length_beam_search", "takes_lean_path"]
