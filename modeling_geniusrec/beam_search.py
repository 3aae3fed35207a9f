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

[`candidate_beam_search`] is the same loop over a per-user candidate set (`generate(candidate_count=C)`): the first
step's state retrieves each user's `C` best items (the catalog scored in chunks, banned items left out) and every step
scores only those, so no step builds a `(beams, catalog)` tensor. Its softmax counts the candidates plus what the full
decode's softmax counts and then bans (the special tokens, the user's history), so with every eligible item retrieved
it returns the full decode's sessions, and with fewer it leaves out only the mass of the items it did not retrieve. It
reads GeniusRec's own logits processors in candidate space (bans, item bias, shared-item penalty; the first-step mix,
which is column-agnostic, as is) and refuses any other.
"""

import torch
from transformers import LogitsProcessorList

LEAN_MODEL_KWARGS = {"encoder_outputs", "use_cache", "cache", "encoder_query_weight", "candidate_count", "attention_mask", "past_key_values",
                     "cache_position", "timestamps", "next_timestamps", "output_attentions", "output_hidden_states", "return_dict"}


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


def candidate_processors(logits_processor):
    """GeniusRec's processors sorted for the candidate space: returns (the history to leave out of retrieval `(users, L)`
    or None, whether repeats are banned, the summed item bias `(vocab_size,)` or None (retrieval ranks with it), the
    shared-item penalty processors, the column-agnostic processors to call on `(rows, C)` scores). Any other
    processor reads the whole catalog's scores and is refused."""
    from .generation import BanItemsLogitsProcessor, FirstStepMixLogitsProcessor, ItemBiasLogitsProcessor, SharedItemPenaltyLogitsProcessor

    history, ban_repeats, biases, penalties, column_agnostic = None, False, [], [], []
    for processor in logits_processor:
        if isinstance(processor, BanItemsLogitsProcessor):
            history = processor.history if processor.ban_history else None
            ban_repeats = processor.ban_repeats
        elif isinstance(processor, FirstStepMixLogitsProcessor):
            column_agnostic.append(processor)
        elif isinstance(processor, ItemBiasLogitsProcessor):
            biases.append(processor.bias)
        elif isinstance(processor, SharedItemPenaltyLogitsProcessor):
            penalties.append(processor)
        else:
            raise ValueError(f"candidate_count cannot apply {type(processor).__name__} (it reads the whole catalog's scores): drop it "
                             "or candidate_count")
    return history, ban_repeats, torch.stack(biases).sum(0) if biases else None, penalties, column_agnostic


def candidate_terms(candidate_ids: torch.LongTensor, bias: torch.Tensor | None, penalties: list) -> torch.Tensor | None:
    """The item bias and shared-item penalties read at each user's candidates `(users, C)`: an additive `(users, C)`
    float term, or None when there are none."""
    terms = [] if bias is None else [bias.to(candidate_ids.device)[candidate_ids].float()]
    for processor in penalties:
        hit = (candidate_ids.unsqueeze(-1) == processor.items.to(candidate_ids.device).unsqueeze(1)).any(-1)  # in an earlier session
        terms.append(torch.where(hit, -processor.penalty, 0.0).float())
    return torch.stack(terms).sum(0) if terms else None


def normalizer_extras(history: torch.LongTensor | None, candidate_ids: torch.LongTensor, retrieved: torch.Tensor, num_special: int):
    """The items outside the candidates that the full decode's softmax counts and then bans, per user: the special
    tokens and the banned history (deduplicated; without the ones retrieval returned, which happens when a user has
    fewer eligible items than candidates). Returns ids `(users, E)` and a validity mask `(users, E)`."""
    users, device = candidate_ids.shape[0], candidate_ids.device
    specials = torch.arange(num_special, device=device).expand(users, -1)
    if history is None:
        return specials, torch.ones_like(specials, dtype=torch.bool)
    ordered = history.to(device).sort(dim=1).values
    valid = ordered >= num_special
    valid[:, 1:] &= ordered[:, 1:] != ordered[:, :-1]  # each banned item once
    if bool(torch.isinf(retrieved).any()):  # banned items inside the candidates are counted there already
        valid &= ~(ordered.unsqueeze(-1) == candidate_ids.unsqueeze(1)).any(-1)
    ids = torch.cat([specials, ordered.clamp(min=0)], dim=1)
    return ids, torch.cat([torch.ones_like(specials, dtype=torch.bool), valid], dim=1)


class NormaliserExtras:
    """The extra items' share of each step's softmax ([`normalizer_extras`]), computed per group of users of similar
    extra counts: a user's banned history is as long as that user's, and padding every user to the batch's longest
    (on ML-1M, hundreds of items for the heaviest users, far fewer for most) would score mostly padding. Users are sorted by
    their count of extra items and taken `GROUP_USERS` at a time, each group padded to its own longest."""

    GROUP_USERS = 64

    def __init__(self, matrix: torch.Tensor, extra_ids: torch.LongTensor, extra_mask: torch.Tensor, dtype: torch.dtype):
        first_valid = torch.sort((~extra_mask).to(torch.int8), dim=1, stable=True).indices  # each row's valid ids first
        ids, mask = extra_ids.gather(1, first_valid), extra_mask.gather(1, first_valid)
        width = mask.sum(1)
        by_width = torch.argsort(width, stable=True)
        self.users, self.groups = extra_ids.shape[0], []
        for lo in range(0, self.users, self.GROUP_USERS):
            members = by_width[lo : lo + self.GROUP_USERS]
            used = int(width[members].max())
            self.groups.append((members, matrix[ids[members, :used]].to(dtype),
                                torch.where(mask[members, :used], 0.0, float("-inf"))))  # (g, used, D), (g, used)

    def logsumexp(self, states: torch.Tensor, scale: float) -> torch.Tensor:
        """`log sum_e exp(scale * state . item_e)` over each user's extra items: states `(users, rows, D)` ->
        `(users, rows, 1)` float32."""
        out = torch.empty(self.users, states.shape[1], 1, device=states.device)
        for members, vectors, bias in self.groups:
            scores = torch.bmm(states[members], vectors.transpose(1, 2)).float() * scale + bias.unsqueeze(1)
            out[members] = torch.logsumexp(scores, dim=-1, keepdim=True)
        return out


def candidate_log_probs(states: torch.Tensor, vectors: torch.Tensor, extras: NormaliserExtras, scale: float) -> torch.Tensor:
    """Log-probabilities of the candidates `(users * rows_per_user, C)` for states `(users, rows_per_user, D)`: scores
    `scale * state . item` normalised over the candidates `(users, C, D)` and the extra items ([`NormaliserExtras`]),
    in float32."""
    logits = torch.bmm(states, vectors.transpose(1, 2)).float() * scale  # (users, rows, C)
    normaliser = torch.logaddexp(torch.logsumexp(logits, dim=-1, keepdim=True), extras.logsumexp(states, scale))
    return (logits - normaliser).view(-1, logits.shape[-1])


@torch.no_grad()
def candidate_beam_search(model, input_ids: torch.LongTensor, logits_processor: LogitsProcessorList, generation_config,
                          candidate_count: int, **model_kwargs) -> torch.LongTensor:
    """[`exact_length_beam_search`] over each user's `candidate_count` retrieved items (see the module docstring).

    Args and returns as [`exact_length_beam_search`]; `model_kwargs["encoder_outputs"]` must hold one row per user
    (what GeniusRec's `generate()` passes). Step scores `(rows, C)` are the candidates' log-probabilities normalised
    over the candidates, the special tokens and the user's banned history ([`normalizer_extras`]: what the full
    decode's softmax counts besides the items it can pick), then the processors in candidate space: with every
    eligible item a candidate, the full decode's scores. The largest tensor that grows with the catalog is retrieval's
    `(users, chunk)`."""
    beams = generation_config.num_beams
    rows, start = input_ids.shape
    users, steps = rows // beams, generation_config.max_length - start
    encoder_outputs = model_kwargs["encoder_outputs"]
    if encoder_outputs.last_hidden_state.shape[0] != users:
        raise ValueError("candidate_count needs one encoding per user (GeniusRec's generate() makes it): do not expand encoder_outputs "
                         "over the beams")
    weight = model_kwargs.get("encoder_query_weight") or 0.0
    use_cache = model_kwargs.get("use_cache", True) is not False
    cache = SessionBeamCache(steps + start) if use_cache else None
    history, ban_repeats, bias, penalties, column_agnostic = candidate_processors(logits_processor)
    first = input_ids[::beams]
    state = model.session_states(first, encoder_outputs, session_ids=first, cache=cache, encoder_query_weight=weight)[:, -1]  # (users, D)
    retrieved, candidate_ids = model.top_k_items(state, candidate_count, exclude=history, item_bias=bias, pad_exhausted=False)  # (users, C)
    additive = candidate_terms(candidate_ids, bias, penalties)
    matrix = model.item_vectors()
    vectors = matrix[candidate_ids].to(state.dtype)  # (users, C, D)
    # the softmax also counts what the full decode's counts and bans afterwards: the special tokens and the banned
    # history (no candidates), so that with every other item retrieved the scores are the full decode's
    extras = NormaliserExtras(matrix, *normalizer_extras(history, candidate_ids, retrieved, model.config.num_special_tokens), state.dtype)
    scale = model.config.logit_scale
    eos = generation_config._eos_token_tensor
    keep = max(2, 1 + (eos.shape[0] if eos is not None else 0)) * beams  # transformers' beams_to_keep
    offsets = torch.arange(users, device=input_ids.device).unsqueeze(1) * beams
    # -inf at each beam's candidates already in its session, and at banned items retrieval had to return (a user with
    # fewer than C items left: their retrieval scores are -inf)
    used = torch.where(torch.isinf(retrieved), float("-inf"), 0.0).float().repeat_interleave(beams, dim=0)
    sequences = input_ids
    scores = torch.full((users, beams), -1e9, device=input_ids.device)  # only beam 0 can be continued at first
    scores[:, 0] = 0.0
    for step in range(steps):
        if step == 0:  # a user's beams are identical: one state per user, expanded
            log_probs = candidate_log_probs(state.unsqueeze(1), vectors, extras, scale).repeat_interleave(beams, dim=0)
        else:
            decoder_input = sequences[:, -1:] if use_cache else sequences
            state = model.session_states(decoder_input, encoder_outputs, session_ids=sequences, cache=cache, encoder_query_weight=weight)[:, -1]
            log_probs = candidate_log_probs(state.view(users, beams, -1), vectors, extras, scale)
        if ban_repeats:
            log_probs += used
        if additive is not None:
            log_probs = (log_probs.view(users, beams, -1) + additive.unsqueeze(1)).view(rows, candidate_count)
        for processor in column_agnostic:
            log_probs = processor(sequences, log_probs)
        total = log_probs.view(users, beams, candidate_count).add_(scores.unsqueeze(-1)).view(users, beams * candidate_count)
        top_scores, top = torch.topk(total, min(keep, beams * candidate_count), dim=1)
        scores, top = top_scores[:, :beams], top[:, :beams]
        parents = (offsets + torch.div(top, candidate_count, rounding_mode="floor")).view(-1)
        chosen = (top % candidate_count).view(-1, 1)  # (rows, 1) candidate index
        items = candidate_ids.repeat_interleave(beams, dim=0).gather(1, chosen)
        sequences = torch.cat([sequences.index_select(0, parents), items], dim=1)
        used = used.index_select(0, parents).scatter_(1, chosen, float("-inf"))
        if cache is not None:
            cache.reorder(parents // beams if step == 0 else parents)  # the first step cached one row per user
    count = generation_config.num_return_sequences or 1
    return sequences.view(users, beams, -1)[:, :count].reshape(users * count, -1)


__all__ = ["SessionBeamCache", "candidate_beam_search", "exact_length_beam_search", "takes_lean_path"]
