"""GeniusRec: HSTU encoder over the history + a mixture-of-experts Transformer decoder that generates the next session.

Causality: the decoder state at session position t reads the history (encoder states and the history's item
text/image embeddings) and the session inputs `[SEP, s_1, ..., s_{t-1}]` only; its self-attention and the experts'
attention over session items are causally masked, so the target `s_t` (its ID, text and image rows) never reaches
the state that predicts it.

Item text / image embeddings are frozen, non-trainable buffers. They are saved inside the checkpoint once (a
`V x d` float tensor in `model.safetensors`), so a checkpoint folder alone generates; they are excluded from the
optimizer (no moments) and are not tied to any trainable weight, so nothing else duplicates them.

This file holds the model ([`GeniusRecModel`]: encoding, experts, decoder stack, packed view); the decoder layers
are in `decoder_layers.py`, the generation head ([`GeniusRecForSessionGeneration`]) in
`modeling_session_generation.py`.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache
from transformers.utils import ModelOutput

from .catalog import CatalogMixin
from .configuration_geniusrec import GeniusRecConfig
from .decoder_layers import CountConfidence, GeniusRecDecoderLayer, count_features, masked_mean, zero_linear
from .experts import ExpertContext, build_expert
from .hub import CheckpointFilesMixin
from .modeling_hstu import HSTUModel
from .modeling_sequential import (
    SequentialRecOutput,
    check_time_inputs,
    content_present,
    init_recommender_weights,
    last_positions,
    resolve_output_flags,
)


@dataclass
class GeniusRecEncoderOutput(ModelOutput):
    """
    Args:
        last_hidden_state (`(batch_size, history_length, hidden_size)`): encoder states projected for cross-attention.
        history_mask (`(batch_size, history_length)`): 1 for real history items.
        user_embedding (`(batch_size, hidden_size)`): the HSTU state at the last history item (stage 1's next-item query).
        cross_keys, cross_values (`(batch_size, num_layers, num_heads, history_length, head_dim)`): each decoder layer's
            cross-attention keys/values, projected once per encoding (generation steps reuse them).
        Each expert's own `encode(...)` result is stored under the key `expert_<name>` (e.g. `expert_text`, the content
        expert's projected history keys `(batch_size, num_heads, history_length, head_dim)`), so that `generate()`
        expands it over beams like the fields above.
        hidden_states (`tuple`, *optional*): the HSTU encoder's input embeddings and block outputs.
        attentions (`tuple` of `(batch_size, encoder_heads, history_length, history_length)`, *optional*): the HSTU
            blocks' pointwise attention weights, with `output_attentions=True`.
        history_states (`(batch_size, history_length, hidden_size)`, *optional*): the HSTU encoder's unit-normalised
            states at every history position (`encode(..., return_history_states=True)`; the auxiliary encoder loss).
    """

    last_hidden_state: torch.FloatTensor | None = None
    history_mask: torch.Tensor | None = None
    user_embedding: torch.FloatTensor | None = None
    cross_keys: torch.FloatTensor | None = None
    cross_values: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    history_states: torch.FloatTensor | None = None


@dataclass
class GeniusRecOutput(ModelOutput):
    """
    Args:
        loss (`()`, *optional*): cross-entropy over the session tokens (+ `router_aux_loss_coef` x load balancing).
        logits (`(batch_size, target_length, vocab_size)`): next-token scores, `logit_scale * cos(state, item)`.
        last_hidden_state (`(batch_size, target_length, hidden_size)`): unit-normalised, expert-mixed decoder states.
        gate_weights (`(batch_size, target_length, num_experts)`): softmax gate per position (order: `config.expert_names`).
        aux_loss (`()`): the load-balancing loss.
        cache (`EncoderDecoderCache`, *optional*): key/value cache of the decoder.
        encoder_last_hidden_state (`(batch_size, history_length, hidden_size)`).
        decoder_hidden_states (`tuple` of `(batch_size, target_length, hidden_size)`, *optional*): the decoder input
            embeddings and each decoder layer's output, with `output_hidden_states=True`.
        encoder_hidden_states (`tuple` of `(batch_size, history_length, hidden_size)`, *optional*): the HSTU encoder's
            input embeddings and block outputs, with `output_hidden_states=True`.
        decoder_attentions (`tuple` of `(batch_size, num_heads, target_length, past + target_length)`, *optional*):
            each decoder layer's self-attention weights, with `output_attentions=True`.
        cross_attentions (`tuple` of `(batch_size, num_heads, target_length, history_length)`, *optional*): each
            decoder layer's attention weights over the history, with `output_attentions=True`.
        encoder_attentions (`tuple` of `(batch_size, encoder_heads, history_length, history_length)`, *optional*): the
            HSTU blocks' pointwise weights, with `output_attentions=True`.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    gate_weights: torch.FloatTensor | None = None
    aux_loss: torch.FloatTensor | None = None
    cache: Cache | None = None
    encoder_last_hidden_state: torch.FloatTensor | None = None
    decoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    encoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    decoder_attentions: tuple[torch.FloatTensor, ...] | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None
    encoder_attentions: tuple[torch.FloatTensor, ...] | None = None


class ItemOutputEmbeddings(nn.Module):
    """The output item matrix `normalize(E_id + P_text(text) + P_image(image))`, recomputed from the current weights
    on every access of `.weight`, so that `hidden @ weight.T * logit_scale` (TRL's fused head) equals the model's."""

    def __init__(self, model: "GeniusRecModel"):
        super().__init__()
        object.__setattr__(self, "_model", model)  # a reference, not a submodule: no duplicated parameters

    bias = None  # TRL's fused head reads `lm_head.bias`

    @property
    def weight(self) -> torch.Tensor:
        return self._model.item_output_matrix()


class GeniusRecPreTrainedModel(CheckpointFilesMixin, CatalogMixin, PreTrainedModel):
    config_class = GeniusRecConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["GeniusRecDecoderLayer", "HSTULayer"]
    # forward takes **kwargs but computes its own mean loss: without this, Trainer would scale the loss for
    # num_items_in_batch (wrong under gradient accumulation and DDP)
    accepts_loss_kwargs = False
    _supports_sdpa = True

    # growing the catalog ([`CatalogMixin.add_items`]): the content tables grow with the ID table, and both configs
    # (GeniusRec's and its encoder's) learn the new size
    def _content_tables(self) -> dict:
        return {kind: self.base_model.content_table(kind) for kind in self.base_model.content_kinds}

    def _set_content_table(self, kind: str, table: torch.Tensor) -> None:
        if kind in self.base_model.encoder.embeddings.content_kinds:
            self.base_model.encoder.embeddings.set_content_table(kind, table)
        else:
            setattr(self.base_model, f"{kind}_embeddings", table)

    def _content_in_item_vectors(self) -> bool:
        return bool(self.base_model.encoder.embeddings.content_kinds)

    def _set_vocab_size(self, size: int) -> None:
        counts = getattr(self.base_model, "item_log_counts", None)
        if counts is not None and counts.shape[0] < size:  # new items have no training interactions: full content confidence
            self.base_model.item_log_counts = torch.cat([counts, counts.new_zeros(size - counts.shape[0])])
        self.config.vocab_size = size
        self.config.encoder_config.vocab_size = size
        self.base_model.encoder.config.vocab_size = size

    def _init_weights(self, module):
        init_recommender_weights(module, self.config.initializer_range)
        if isinstance(module, GeniusRecModel):  # its own frozen content tables start empty (loaded with set_item_embeddings)
            for kind in module.own_content_kinds:
                init.zeros_(module.content_table(kind))
            if getattr(module, "item_log_counts", None) is not None:  # filled by set_item_counts
                init.zeros_(module.item_log_counts)
        if isinstance(module, CountConfidence):
            init.constant_(module.bias, CountConfidence.INITIAL_BIAS)
            init.constant_(module.slope, CountConfidence.INITIAL_SLOPE)


class GeniusRecEncoderView:
    """What `generate()` calls as the encoder: runs HSTU once over the history (not an nn.Module, so no weights
    are registered twice)."""

    def __init__(self, model: "GeniusRecModel"):
        self.model = model
        self.main_input_name = "input_ids"

    def forward(self, input_ids, attention_mask=None, timestamps=None, next_timestamps=None, output_hidden_states=None,
                output_attentions=None, **kwargs):
        return self.model.encode(input_ids, attention_mask, timestamps, next_timestamps, output_hidden_states=output_hidden_states,
                                 output_attentions=output_attentions)

    __call__ = forward


class GeniusRecModel(GeniusRecPreTrainedModel):
    """Encoder-decoder with a gated mixture of experts; returns unit-normalised, expert-mixed decoder states.

    The final state is `normalize(u + W_out LN(mixed))`, with `u` the encoder's state at the last history item
    (stage 1's next-item query) and `W_out` zero-initialised; item vectors are `normalize(E_id + W_text text +
    W_image image)` with zero-initialised `W_*`. So a model built from a stage-1 checkpoint starts out ranking the
    next item exactly as stage 1 does, and fine-tuning learns what the session and the content add.
    """

    def __init__(self, config: GeniusRecConfig):
        super().__init__(config)
        d = config.hidden_size
        self.encoder = HSTUModel(config.encoder_config)
        self.memory_projection = nn.Sequential(nn.Linear(d, d), nn.LayerNorm(d, eps=config.layer_norm_eps))
        self.query_projection = nn.Linear(d, d)
        self.decoder_positions = nn.Embedding(config.max_session_length + 1, d)
        self.decoder_layers = nn.ModuleList([GeniusRecDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.decoder_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.content_output = nn.ModuleDict()
        shared = set(self.encoder.embeddings.content_kinds)  # tables the encoder's item representation already holds
        self.own_content_kinds = [kind for kind in config.content_embedding_dims if kind not in shared]
        for kind, dim in config.content_embedding_dims.items():  # frozen tables, saved in the checkpoint as `<kind>_embeddings`
            if kind in shared:  # one table, read by the encoder's item vectors and by this expert; item vectors have it already
                if self.encoder.embeddings.content_table(kind).shape[1] != dim:
                    raise ValueError(f"content_embedding_dims[{kind!r}]={dim} differs from the encoder's table width "
                                     f"{self.encoder.embeddings.content_table(kind).shape[1]}")
                continue
            self.register_buffer(f"{kind}_embeddings", torch.zeros(config.vocab_size, dim))
            if config.content_output:  # LayerNorm first for raw LM states of any scale (content_output_norm)
                norm = nn.LayerNorm(dim, eps=config.layer_norm_eps) if getattr(config, "content_output_norm", True) else nn.Identity()
                self.content_output[kind] = nn.Sequential(norm, zero_linear(dim, d, bias=False))
        output_confidence = getattr(config, "content_output_confidence", False) and len(self.content_output)
        self.content_confidence = nn.ModuleDict({kind: CountConfidence() for kind in self.content_output} if output_confidence else {})
        if output_confidence or getattr(config, "content_gate_confidence", False):
            self.register_buffer("item_log_counts", torch.zeros(config.vocab_size))  # log(1 + training interactions)
        self.experts = nn.ModuleDict({name: build_expert(config, name, kind) for name, kind in config.expert_types.items()})
        self.gate = nn.Linear(d, len(self.experts))
        self.gate_confidence = zero_linear(2, len(self.experts), bias=False) if getattr(config, "content_gate_confidence", False) else None
        self.output_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.output_projection = zero_linear(d, d)
        self.output_embeddings = ItemOutputEmbeddings(self)
        self.post_init()

    # -- embeddings ------------------------------------------------------------------------------------------------
    def get_input_embeddings(self):
        return self.encoder.embeddings.item_embeddings

    def set_input_embeddings(self, value):
        self.encoder.embeddings.item_embeddings = value

    def get_encoder(self):
        return GeniusRecEncoderView(self)

    @property
    def content_kinds(self) -> list[str]:
        """Every content table of the model: the encoder's (in its item vectors) and GeniusRec's own (experts)."""
        return list(dict.fromkeys(self.encoder.embeddings.content_kinds + self.own_content_kinds))

    def content_table(self, kind: str) -> torch.Tensor:
        """The frozen content table `kind` (e.g. "text"): `(vocab_size, width)`; the encoder's when it has one."""
        if kind in self.encoder.embeddings.content_kinds:
            return self.encoder.embeddings.content_table(kind)
        return getattr(self, f"{kind}_embeddings")

    def set_item_embeddings(self, kind: str, table: torch.Tensor) -> None:
        """Loads frozen item embeddings (`kind` = "text", "image", ...) of shape `(vocab_size, dim)`, rows aligned to
        token ids (all-zero rows: no content for that item)."""
        if kind not in self.content_kinds:
            raise ValueError(f"this config has no {kind} table; build the model with "
                             f"content_embedding_dims={{{kind!r}: {table.shape[-1]}}}")
        expected = tuple(self.content_table(kind).shape)
        if tuple(table.shape) != expected:
            raise ValueError(f"{kind} embeddings have shape {tuple(table.shape)}, expected {expected} "
                             "(vocab_size rows aligned to token ids, special tokens included)")
        self.content_table(kind).copy_(table.to(self.content_table(kind).dtype))

    def set_item_counts(self, counts) -> None:
        """Training interactions per token id `(vocab_size,)` (what `content_output_confidence` reads, stored as
        `log(1 + n)` in the `item_log_counts` buffer and saved with the checkpoint)."""
        if getattr(self, "item_log_counts", None) is None:
            raise ValueError("this model has no item counts: build it with content_gate_confidence=True, or content_output_confidence=True "
                             "and a content table in its output vectors (content_output=True)")
        counts = torch.as_tensor(counts, dtype=torch.float32, device=self.item_log_counts.device)
        if counts.shape != self.item_log_counts.shape or bool((counts < 0).any()):
            raise ValueError(f"item counts must be {tuple(self.item_log_counts.shape)} non-negative numbers (one per token id), "
                             f"got shape {tuple(counts.shape)}")
        self.item_log_counts.copy_(torch.log1p(counts).to(self.item_log_counts.dtype))

    def content_weights(self, kind: str, rows: torch.Tensor, start: int = 0, end: int | None = None) -> torch.Tensor:
        """How much of the projected `kind` content each item `[start, end)` of `rows` `(n, width)` adds to its output
        vector: `(n, 1)`; 0 for items without content, else 1, or the count confidence where configured."""
        weights = content_present(rows).to(rows.dtype)
        if kind in self.content_confidence:
            weights = weights * self.content_confidence[kind](self.item_log_counts[start:end]).to(rows.dtype)
        return weights.unsqueeze(-1)

    def item_output_matrix(self, start: int = 0, end: int | None = None) -> torch.Tensor:
        """Unit-normalised item vectors of token ids `[start, end)`: `(end - start, hidden_size)`: the encoder's item
        vectors (ID + its content adapters) plus stage 2's own content projections (weighted by [`content_weights`])."""
        vectors = self.encoder.embeddings.item_matrix(start, end)
        for kind, projection in self.content_output.items():
            rows = getattr(self, f"{kind}_embeddings")[start:end]
            vectors = vectors + projection(rows) * self.content_weights(kind, rows, start, end)
        return F.normalize(vectors, dim=-1)

    # -- encoder ---------------------------------------------------------------------------------------------------
    def encode(self, input_ids, attention_mask=None, timestamps=None, next_timestamps=None, output_hidden_states=None,
               output_attentions=None, return_history_states: bool = False) -> GeniusRecEncoderOutput:
        """History `(B, N)` with its event times `(B, N)` and the request time `(B,)` -> [`GeniusRecEncoderOutput`].

        One time policy for every path (training, evaluation, `generate()`, preference pairs, the packed view that DPO
        trains): an encoder that uses time refuses a call without `timestamps` and `next_timestamps`, rather than
        silently encoding a different function."""
        if attention_mask is None:
            attention_mask = input_ids != self.config.pad_token_id
        check_time_inputs(self.config.encoder_config, timestamps, next_timestamps)
        if not (self.training or output_hidden_states or output_attentions or torch.is_grad_enabled()):
            encoded = self._encode_by_length(input_ids, attention_mask, timestamps, next_timestamps)
        else:
            encoded = self.encoder(input_ids, attention_mask=attention_mask, timestamps=timestamps, next_timestamps=next_timestamps,
                                   output_hidden_states=bool(output_hidden_states), output_attentions=bool(output_attentions), return_dict=True)
        states = encoded.last_hidden_state
        user = states[torch.arange(states.shape[0], device=states.device), last_positions(attention_mask.bool())]
        memory = self.memory_projection(states)
        cross = [layer.cross_attn.project_key_value(memory) for layer in self.decoder_layers]
        output = GeniusRecEncoderOutput(last_hidden_state=memory, history_mask=attention_mask.long(), user_embedding=user,
                                        cross_keys=torch.stack([k for k, _ in cross], dim=1),
                                        cross_values=torch.stack([v for _, v in cross], dim=1), hidden_states=encoded.hidden_states,
                                        attentions=encoded.attentions, history_states=states if return_history_states else None)
        if self.gate_confidence is not None:  # the history's mean log count, a gate feature at every session position
            output["history_log_count"] = masked_mean(self.item_log_counts[input_ids], attention_mask)
        for name, expert in self.experts.items():
            state = expert.encode(self, input_ids)
            if state is not None:
                output[f"expert_{name}"] = state
            key_mask = expert.history_key_mask(self, input_ids, attention_mask) if hasattr(expert, "history_key_mask") else None
            if key_mask is not None:
                output[f"expert_{name}_mask"] = key_mask.long()
        return output

    ENCODE_CHUNK_ROWS = 32  # inference: histories encoded per call, sorted by length (0: one batched pass)

    def _encode_by_length(self, input_ids, attention_mask, timestamps, next_timestamps):
        """Inference-only HSTU pass over `(B, N)` right-padded histories: rows sorted by length and encoded
        `ENCODE_CHUNK_ROWS` at a time, each chunk cut to its longest history, so attention costs about `sum(L_i^2)`
        instead of `B * N^2`. A row's states do not depend on the
        other rows or on padding after it (causal, padding masked, `padded` normalisation divides by the fixed
        `max_position_embeddings`); other layouts (left padding, holes) take the plain batched pass. The states equal
        the batched pass's up to float rounding (about 1e-7: matrix products of another width sum in another order),
        which can flip a near-tie between two beams; `model.model.ENCODE_CHUNK_ROWS = 0` restores the batched pass."""
        mask = attention_mask.bool()
        lengths = mask.sum(1)
        prefix = bool((mask == (torch.arange(mask.shape[1], device=mask.device) < lengths.unsqueeze(1))).all())
        normalisation = getattr(self.config.encoder_config, "attention_normalization", "padded")
        if not prefix or normalisation != "padded" or not self.ENCODE_CHUNK_ROWS or input_ids.shape[0] <= self.ENCODE_CHUNK_ROWS:
            return self.encoder(input_ids, attention_mask=attention_mask, timestamps=timestamps, next_timestamps=next_timestamps, return_dict=True)
        order = torch.argsort(lengths, stable=True)
        states = None
        for lo in range(0, len(order), self.ENCODE_CHUNK_ROWS):
            rows = order[lo : lo + self.ENCODE_CHUNK_ROWS]
            width = max(int(lengths[rows].max()), 1)
            part = self.encoder(input_ids[rows, :width], attention_mask=attention_mask[rows, :width],
                                timestamps=None if timestamps is None else timestamps[rows, :width],
                                next_timestamps=None if next_timestamps is None else next_timestamps[rows], return_dict=True).last_hidden_state
            if states is None:
                states = part.new_zeros(*input_ids.shape, part.shape[-1])
            states[rows, :width] = part
        return SequentialRecOutput(last_hidden_state=states)

    # -- decoder ---------------------------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        timestamps: torch.LongTensor | None = None,
        next_timestamps: torch.LongTensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        encoder_outputs: GeniusRecEncoderOutput | None = None,
        session_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        view: str = "auto",
        **kwargs,
    ) -> GeniusRecOutput:
        r"""
        Args:
            input_ids (`(batch_size, history_length)`): the history (with `attention_mask`, `timestamps`,
                `next_timestamps` as [`HSTUModel`]). Without `decoder_input_ids` and with `[SEP]` in every row, the
                packed causal view: see [`GeniusRecForSessionGeneration.forward`].
            decoder_input_ids (`(batch_size, target_length)`): `[SEP, s_1, ..., s_{T-1}]`.
            encoder_outputs: reuse an encoding (generation).
            session_ids (`(batch_size, t)`): all decoder inputs so far, when `decoder_input_ids` holds only the newest
                (cached generation); defaults to `decoder_input_ids`.
            view (`str`, *optional*, defaults to `"auto"`): `"seq2seq"` (history in, session states out), `"packed"`
                (the causal-LM view of `[history, SEP, session]` rows, [`packed_forward`]), or `"auto"`: packed when
                only `input_ids` are given, which is how TRL's fused head calls `base_model(input_ids, attention_mask)`,
                else seq2seq. Naming a view refuses inputs that belong to the other one.
        Returns:
            [`GeniusRecOutput`] with `last_hidden_state` `(batch_size, target_length, hidden_size)` unit-normalised.
        """
        config = self.config
        if cache is None and kwargs.get("past_key_values") is not None:
            cache = kwargs.pop("past_key_values")  # the older name transformers still accepts
        if resolve_view(view, decoder_input_ids is None and encoder_outputs is None) == "packed":
            return self.packed_forward(input_ids, attention_mask, timestamps, next_timestamps)
        if decoder_input_ids is None:
            raise ValueError("decoder_input_ids is required with encoder_outputs")
        output_hidden_states, return_dict = resolve_output_flags(config, output_hidden_states, kwargs.get("return_dict"))
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        if encoder_outputs is None:
            encoder_outputs = self.encode(input_ids, attention_mask, timestamps, next_timestamps, output_hidden_states=output_hidden_states,
                                          output_attentions=output_attentions)
        bad = (decoder_input_ids < 0) | (decoder_input_ids >= config.vocab_size)
        if bool(bad.any()):
            raise ValueError(f"decoder_input_ids contains ids outside [0, {config.vocab_size}): {decoder_input_ids[bad][:5].tolist()}")
        cache, self_cache, past, session_ids = self._session_so_far(cache, use_cache, decoder_input_ids, session_ids)
        histories = encoder_outputs.last_hidden_state.shape[0]  # one encoding per user; its beams are consecutive rows
        if decoder_input_ids.shape[0] % histories:
            raise ValueError(f"{decoder_input_ids.shape[0]} decoder rows for {histories} encoded histories: each history needs the same "
                             "number of rows")
        group = decoder_input_ids.shape[0] // histories
        user = encoder_outputs.user_embedding  # (B_h, D)
        if group > 1:
            user = user.repeat_interleave(group, dim=0)  # (B, D)
        state, all_hidden, self_weights, cross_weights = self._decode(decoder_input_ids, past, user, encoder_outputs, self_cache,
                                                                      output_hidden_states, output_attentions)
        gate_logits = self.gate(state)
        if self.gate_confidence is not None:
            gate_logits = gate_logits + self.gate_confidence(count_features(self.item_log_counts, encoder_outputs["history_log_count"],
                                                                            decoder_input_ids, group))
        gate_weights = torch.softmax(gate_logits, dim=-1)  # (B, T, E)
        mixed = self._mix_experts(state, gate_weights, encoder_outputs, session_ids, past, group)
        final = F.normalize(user.unsqueeze(1) + self.output_projection(self.output_norm(mixed)), dim=-1)
        output = GeniusRecOutput(
            last_hidden_state=final,
            gate_weights=gate_weights,
            aux_loss=load_balancing_loss(gate_weights),
            cache=cache,
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            decoder_hidden_states=tuple(all_hidden) if output_hidden_states else None,
            encoder_hidden_states=encoder_outputs.get("hidden_states") if output_hidden_states else None,
            decoder_attentions=tuple(self_weights) if output_attentions else None,
            cross_attentions=tuple(cross_weights) if output_attentions else None,
            encoder_attentions=encoder_outputs.get("attentions") if output_attentions else None,
        )
        return output if return_dict else output.to_tuple()

    def _session_so_far(self, cache, use_cache, decoder_input_ids, session_ids):
        """The decoder cache (made when `use_cache` asks for one), its self-attention part, the number of session
        positions it already holds, and all session inputs so far `(B, past + t)`: a manual cached call passes only
        the new tokens, while the experts read the whole session, kept on the cache."""
        if use_cache and cache is None:
            cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        self_cache = cache.self_attention_cache if isinstance(cache, EncoderDecoderCache) else cache
        past = self_cache.get_seq_length() if self_cache is not None else 0
        if past + decoder_input_ids.shape[1] > self.config.max_session_length + 1:
            raise ValueError(f"session longer than max_session_length={self.config.max_session_length}")
        if session_ids is None:
            earlier = getattr(cache, "geniusrec_session_ids", None) if past else None
            session_ids = decoder_input_ids if earlier is None else torch.cat([earlier, decoder_input_ids], dim=1)
        if cache is not None:
            cache.geniusrec_session_ids = session_ids
        return cache, self_cache, past, session_ids

    def _decode(self, decoder_input_ids, past, user, encoder_outputs, self_cache, output_hidden_states, output_attentions):
        """The decoder stack over session positions `past .. past + t - 1`: item rows + positions + the user query
        `(B, D)`, causal self-attention, cross-attention over the encoding. Returns the normed states `(B, t, D)`,
        and the per-layer states / weights lists when asked (else None)."""
        length = decoder_input_ids.shape[1]
        positions = torch.arange(past, past + length, device=decoder_input_ids.device)
        hidden = self.encoder.embeddings.item_rows(decoder_input_ids) * self.config.hidden_size**0.5 + self.decoder_positions(positions)
        hidden = self.dropout(hidden + self.query_projection(user).unsqueeze(1))
        key_positions = torch.arange(past + length, device=hidden.device)
        self_mask = (key_positions.unsqueeze(0) <= positions.unsqueeze(1)).view(1, 1, length, past + length)
        cross_mask = encoder_outputs.history_mask.bool().view(encoder_outputs.history_mask.shape[0], 1, 1, -1)
        all_hidden = [hidden] if output_hidden_states else None
        self_weights, cross_weights = ([], []) if output_attentions else (None, None)
        for index, layer in enumerate(self.decoder_layers):
            hidden = layer(hidden, self_mask, encoder_outputs.cross_keys[:, index], encoder_outputs.cross_values[:, index], cross_mask, self_cache,
                           output_attentions=output_attentions)
            if output_attentions:
                hidden, weights, cross = hidden
                self_weights.append(weights)
                cross_weights.append(cross)
            if output_hidden_states:
                all_hidden.append(hidden)
        return self.decoder_norm(hidden), all_hidden, self_weights, cross_weights

    def _mix_experts(self, state, gate_weights, encoder_outputs, session_ids, past, group):
        """`state + sum_e gate_e * expert_e(state)`: state `(B, t, D)`, gate weights `(B, t, E)` -> `(B, t, D)`."""
        mixed = state
        for index, (name, expert) in enumerate(self.experts.items()):
            key_mask = encoder_outputs.get(f"expert_{name}_mask")
            context = ExpertContext(self, encoder_outputs.get(f"expert_{name}"), encoder_outputs.history_mask if key_mask is None else key_mask,
                                    session_ids, past, group)
            mixed = mixed + gate_weights[..., index : index + 1] * expert(state, context)
        return mixed

    def packed_forward(self, input_ids, attention_mask=None, timestamps=None, next_timestamps=None) -> GeniusRecOutput:
        """Causal-LM view of `[history..., SEP, session..., EOS, pad...]` rows: what TRL's DPOTrainer trains, through
        `base_model(input_ids, attention_mask, timestamps=..., next_timestamps=...).last_hidden_state @
        get_output_embeddings().weight.T * logit_scale`.

        Each row is split at its first `[SEP]`: the left part is encoded with its times, the right part decoded.
        `timestamps` `(batch_size, row_length)` are aligned to the packed row (only the history's entries are read;
        give anything, e.g. 0, at `[SEP]`, session and pad positions) and `next_timestamps` `(batch_size,)` is the
        request time: the same time policy as the seq2seq view, which this view equals exactly.
        `last_hidden_state[:, p]` predicts token `p + 1` of the packed row, as in a causal LM; positions before `[SEP]`
        get zero states. Returns [`GeniusRecOutput`] aligned to the packed row `(batch_size, row_length, ...)`.
        """
        sep = self.config.sep_token_id
        if input_ids is None:
            raise ValueError("input_ids is required")
        if attention_mask is None:
            attention_mask = input_ids != self.config.pad_token_id
        is_sep = (input_ids == sep) & attention_mask.bool()
        if not bool(is_sep.any(1).all()):
            raise ValueError("packed rows need a [SEP] between history and session; pass decoder_input_ids or labels for the seq2seq view")
        sep_at = is_sep.long().argmax(1)  # first SEP per row
        batch, length = input_ids.shape
        cols = torch.arange(length, device=input_ids.device).unsqueeze(0)
        real = attention_mask.bool()
        hist_mask = real & (cols < sep_at.unsqueeze(1))
        # the decoder reads [SEP] + up to max_session_length items; a token after that (the final EOS) is only a
        # label, never an input whose prediction is scored, so it gets a zero state
        dec_mask = real & (cols >= sep_at.unsqueeze(1)) & (cols <= sep_at.unsqueeze(1) + self.config.max_session_length)
        hist_len, dec_len = int(hist_mask.sum(1).max()), int(dec_mask.sum(1).max())
        if not bool(hist_mask.any(1).all()):
            raise ValueError("a packed row has an empty history before [SEP]")
        check_time_inputs(self.config.encoder_config, timestamps, next_timestamps)
        if timestamps is not None and timestamps.shape != input_ids.shape:
            raise ValueError(f"packed-view timestamps must be aligned to the packed rows {tuple(input_ids.shape)}, got {tuple(timestamps.shape)}")
        history = _left_align(input_ids, hist_mask, hist_len, self.config.pad_token_id)
        history_times = None if timestamps is None else _left_align(timestamps, hist_mask, hist_len, 0)
        decoder = _left_align(input_ids, dec_mask, dec_len, self.config.pad_token_id)
        out = self(input_ids=history, attention_mask=history != self.config.pad_token_id, timestamps=history_times,
                   next_timestamps=next_timestamps, decoder_input_ids=decoder, return_dict=True)
        rank = (dec_mask.long().cumsum(1) - 1).clamp(min=0, max=dec_len - 1).unsqueeze(-1)  # packed position -> decoder position
        hidden = out.last_hidden_state.gather(1, rank.expand(-1, -1, out.last_hidden_state.shape[-1])) * dec_mask.unsqueeze(-1)
        gates = out.gate_weights.gather(1, rank.expand(-1, -1, out.gate_weights.shape[-1])) * dec_mask.unsqueeze(-1)
        return GeniusRecOutput(last_hidden_state=hidden, gate_weights=gates, aux_loss=out.aux_loss,
                               encoder_last_hidden_state=out.encoder_last_hidden_state)


def load_balancing_loss(gate_weights: torch.Tensor) -> torch.Tensor:
    """Switch-style balance: `E * sum_e f_e * p_e` with f_e the share of positions whose top expert is e and p_e the
    mean gate weight of e; 1.0 when balanced, E when one expert takes everything."""
    num_experts = gate_weights.shape[-1]
    flat = gate_weights.reshape(-1, num_experts)
    share = F.one_hot(flat.argmax(-1), num_experts).float().mean(0)
    return num_experts * (share * flat.mean(0)).sum()


def resolve_view(view: str, only_input_ids: bool) -> str:
    """`"packed"` or `"seq2seq"` for a forward call: `view="auto"` picks packed exactly when only `input_ids` came (no
    decoder inputs, labels or encoding); a named view that contradicts the inputs is refused."""
    if view not in ("auto", "seq2seq", "packed"):
        raise ValueError(f"view must be 'auto', 'seq2seq' or 'packed', got {view!r}")
    if view == "auto":
        return "packed" if only_input_ids else "seq2seq"
    if view == "packed" and not only_input_ids:
        raise ValueError("view='packed' takes input_ids rows [history, SEP, session] only: drop decoder_input_ids / labels / encoder_outputs")
    if view == "seq2seq" and only_input_ids:
        raise ValueError("view='seq2seq' needs decoder_input_ids, labels or encoder_outputs beside the history")
    return view


def check_decoder_attention_mask(mask: torch.Tensor | None) -> None:
    """Accepts a decoder mask `(batch_size, target_length)` whose rows are ones followed by zeros (right padding: what
    the causal decoder computes anyway); refuses left padding or holes, with the fix."""
    if mask is None:
        return
    mask = mask.bool()
    if mask.dim() != 2:
        raise ValueError(f"decoder_attention_mask must have shape (batch_size, target_length), got {tuple(mask.shape)}")
    if bool((mask[:, 1:] & ~mask[:, :-1]).any()) or (mask.shape[1] and not bool(mask[:, 0].all())):
        raise ValueError("decoder_attention_mask must be ones followed by zeros in each row (right padding; sessions start at [SEP] "
                         "in column 0): left padding and holes are not supported; mark padded labels with -100 instead")


def shift_right(labels: torch.LongTensor, start_token_id: int, pad_token_id: int) -> torch.LongTensor:
    """`[s_1, .., s_T]` -> `[start, s_1, .., s_{T-1}]`, -100 replaced by pad."""
    shifted = labels.new_full(labels.shape, pad_token_id)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = start_token_id
    return shifted.masked_fill(shifted == -100, pad_token_id)


def _left_align(ids, mask, width, pad):
    """Gathers the masked entries of each row to the left of a `(B, width)` tensor, padded with `pad`."""
    rank = mask.long().cumsum(1) - 1
    out = ids.new_full((ids.shape[0], width + 1), pad)
    target = torch.where(mask, rank, torch.full_like(rank, width))
    out.scatter_(1, target, torch.where(mask, ids, torch.full_like(ids, pad)))
    return out[:, :width]


GeniusRecConfig.register_for_auto_class()
GeniusRecModel.register_for_auto_class("AutoModel")

__all__ = [
    "GeniusRecPreTrainedModel",
    "GeniusRecModel",
    "GeniusRecOutput",
    "GeniusRecEncoderOutput",
    "load_balancing_loss",
]
