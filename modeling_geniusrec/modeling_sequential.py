"""Pieces shared by the next-item recommenders: input checks, embeddings, cosine scoring, losses, outputs.

Scores are `logit_scale * cos(user_state, item_embedding)` over the item rows of the (input) embedding table, so
the output side is tied to the input side as in the HSTU reference code.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .catalog import CatalogMixin
from .configuration_sequential import SequentialRecConfig
from .hub import CheckpointFilesMixin
from .scoring import ItemScoringMixin, scale_scores


@dataclass
class SequentialRecOutput(ModelOutput):
    """
    Output of a base sequential encoder.

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`):
            Unit-normalised user state at every position (zero at padding).
        hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            The input embeddings and each block's output, each `(batch_size, sequence_length, hidden_size)`.
        attentions (`tuple(torch.FloatTensor)`, *optional*):
            Each block's attention weights `(batch_size, num_heads, sequence_length, sequence_length)` (HSTU: the pointwise
            `SiLU(.) / N` weights), with `output_attentions=True`.
    """

    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class NextItemPredictionOutput(ModelOutput):
    """
    Output of a next-item prediction model.

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            Mean next-item loss over the supervised positions (labels != -100).
        user_embeddings (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
            Unit-normalised state at each row's last real position: the query that ranks the next item.
        logits (`torch.FloatTensor` of shape `(batch_size, sequence_length, vocab_size)`, *optional*):
            Scores of every token at every position; only with `return_logits=True` (small catalogs, tests).
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`):
            Unit-normalised state at every position.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            Per-block states, with `output_hidden_states=True`.
        attentions (`tuple(torch.FloatTensor)`, *optional*):
            Per-block attention weights, with `output_attentions=True` (HSTU).
    """

    loss: torch.FloatTensor | None = None
    user_embeddings: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


def check_inputs(
    config: SequentialRecConfig,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    timestamps: torch.Tensor | None = None,
) -> torch.Tensor:
    """Validates a batch of histories and returns its boolean attention mask `(batch_size, sequence_length)`.

    Raises `ValueError` naming the problem and the fix for: a tensor that is not 2-D, an empty sequence axis, a
    history longer than `max_position_embeddings`, ids outside the vocabulary, rows with no item at all, and
    `attention_mask`/`timestamps` whose shape differs from `input_ids`.
    """
    if input_ids is None or input_ids.dim() != 2:
        shape = None if input_ids is None else tuple(input_ids.shape)
        raise ValueError(f"input_ids must be a (batch_size, sequence_length) tensor of item token ids, got shape {shape}")
    if input_ids.is_floating_point() or input_ids.dtype == torch.bool:
        raise ValueError(f"input_ids must hold integer token ids (torch.long), got {input_ids.dtype}")
    batch_size, length = input_ids.shape
    if length == 0 or batch_size == 0:
        raise ValueError(
            f"input_ids has shape {tuple(input_ids.shape)}: every row needs at least one history item "
            "(users with an empty history cannot be scored; drop them or use a popularity fallback)"
        )
    if length > config.max_position_embeddings:
        raise ValueError(
            f"history length {length} exceeds max_position_embeddings={config.max_position_embeddings}; "
            f"keep the most recent items (seq[-{config.max_position_embeddings}:])"
        )
    bad = (input_ids < 0) | (input_ids >= config.vocab_size)
    if bool(bad.any()):
        examples = sorted(set(input_ids[bad].tolist()))[:5]
        raise ValueError(
            f"input_ids contains ids outside the item vocabulary [0, {config.vocab_size}): {examples}; "
            "map raw item ids with the checkpoint's tokenizer (unknown items -> unk_token_id or drop them)"
        )
    if attention_mask is None:
        attention_mask = input_ids != config.pad_token_id
    elif attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has {tuple(input_ids.shape)}"
        )
    attention_mask = attention_mask.bool()
    empty = (~attention_mask.any(dim=1)).nonzero().flatten()
    if empty.numel():
        raise ValueError(
            f"rows {empty[:5].tolist()} of the batch have an empty history (no item under attention_mask); "
            "remove those users or give them at least one item"
        )
    if timestamps is not None and (timestamps.is_floating_point() or timestamps.is_complex()):
        raise ValueError(f"timestamps must be integer seconds (torch.long), got {timestamps.dtype}: convert with .long() after "
                         "dropping NaN/inf events")
    if timestamps is not None and timestamps.shape != input_ids.shape:
        raise ValueError(
            f"timestamps has shape {tuple(timestamps.shape)} but input_ids has {tuple(input_ids.shape)}: "
            "give one timestamp (seconds) per history item"
        )
    return attention_mask


def check_time_inputs(encoder_config, timestamps, next_timestamps) -> None:
    """The one time policy: raises when an encoder that uses time (`use_time_bias`) is called without the history's times or the request
    time (`next_timestamps`, the time of the event being predicted, when `use_next_event_time`)."""
    if next_timestamps is not None and next_timestamps.is_floating_point():
        raise ValueError(f"next_timestamps must be integer seconds (torch.long), got {next_timestamps.dtype}")
    if not encoder_config.use_time_bias:
        return
    if timestamps is None:
        raise ValueError("this model uses time-bucket biases (use_time_bias=True): pass `timestamps` (batch_size, sequence_length), the history's "
                         "event times in seconds (also to generate() and to GeniusRec's packed view)")
    if next_timestamps is None and encoder_config.use_next_event_time:
        raise ValueError("this model times each query at the next event (use_next_event_time=True): pass `next_timestamps` (batch_size,), "
                         "the request time in seconds (the time of the event being predicted)")


def shift_labels(labels: torch.Tensor, length: int) -> torch.Tensor:
    """The causal-LM label convention: position t predicts `labels[:, t + 1]`, so `labels=input_ids` trains next-item
    prediction (the last position unsupervised). `labels` may be one column longer than `input_ids` (`(B, N + 1)`:
    the window plus the item after it) to supervise the last position too. Returns `(B, N)` targets, -100 where none."""
    if labels.dim() != 2 or labels.shape[1] not in (length, length + 1):
        raise ValueError(f"labels must have shape (batch_size, {length}) like input_ids (causal-LM convention: shifted inside) or "
                         f"(batch_size, {length + 1}) with the next item appended; got {tuple(labels.shape)}")
    return future_labels(labels, length, 1)


def future_labels(labels: torch.Tensor, length: int, offset: int) -> torch.Tensor:
    """Targets `offset` items ahead in the causal-LM convention of [`shift_labels`]: position t predicts
    `labels[:, t + offset]` (`offset=1` is the next item), -100 where the labels end. `labels` is `(B, N)` or
    `(B, N + 1)`; the targets are read from `labels` only, so they never reach past what the batch supervises (the
    training window and its next item). Returns `(B, N)`."""
    if offset < 1:
        raise ValueError(f"offset must be >= 1, got {offset}")
    shifted = labels[:, offset:]
    if shifted.shape[1] < length:
        shifted = F.pad(shifted, (0, length - shifted.shape[1]), value=-100)
    return shifted[:, :length]


class FutureItemHeads(nn.Module):
    """The dense multi-item objective's heads: one `(D, D)` map per offset 2..k (identity at initialisation), applied
    to the unit-normalised state and renormalised, so that offset j is scored like the next item."""

    def __init__(self, config):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(config.future_items - 1, config.hidden_size, config.hidden_size))

    def forward(self, hidden: torch.Tensor, offset: int) -> torch.Tensor:
        """`(B, N, D)` states -> `(B, N, D)` unit-normalised states for predicting the item `offset` (>= 2) ahead."""
        return F.normalize(hidden @ self.weight[offset - 2].T, dim=-1)


def future_heads(config) -> FutureItemHeads | None:
    """The heads a model with `config.future_items > 1` trains with, else None."""
    return FutureItemHeads(config) if config.future_items > 1 else None


def resolve_output_flags(config, output_hidden_states=None, return_dict=None) -> tuple[bool, bool]:
    """The transformers convention: an explicit argument wins, else the config's default."""
    hidden = config.output_hidden_states if output_hidden_states is None else output_hidden_states
    as_dict = getattr(config, "return_dict", True) if return_dict is None else return_dict
    return bool(hidden), bool(as_dict)


def last_positions(mask: torch.Tensor) -> torch.Tensor:
    """`(batch_size, sequence_length)` bool -> `(batch_size,)` index of each row's last real item (either padding side)."""
    return mask.shape[1] - 1 - mask.long().flip(1).argmax(dim=1)


DENSE_NEGATIVES_FACTOR = 32  # per-position negatives are scored densely when vocab_size <= this x num_negatives


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """`(batch_size, sequence_length)` bool -> position of each item within its row's history, left or right padded."""
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)


def content_present(table: torch.Tensor) -> torch.Tensor:
    """`(..., d)` content rows -> `(...)` bool: True where the row holds content (an all-zero row means "none", e.g. an
    item without an image, and must not be read as a real vector)."""
    return table.abs().amax(dim=-1) > 0


def build_content_adapter(kind_width: int, hidden_size: int, adapter: str) -> nn.Module:
    """`(..., kind_width)` content rows -> `(..., hidden_size)`: one bias-free projection, or a small MLP."""
    if adapter == "linear":
        return nn.Linear(kind_width, hidden_size, bias=False)
    return nn.Sequential(nn.Linear(kind_width, 2 * hidden_size), nn.GELU(), nn.Linear(2 * hidden_size, hidden_size))


class ItemInputEmbeddings(nn.Module):
    """Item vectors and the HSTU reference input: `x0 = Dropout(item(id) * sqrt(D) + P[pos])`, zero at padding.

    `item(i) = E_id[i] + sum_kind adapter_kind(content_kind[i])` (the content sum only for items with a non-zero row of
    a frozen table named in `config.content_embedding_dims`; without tables `item(i) = E_id[i]`). The same vectors are
    the tied output side ([`item_matrix`]). With `config.item_id_dropout = p`, training drops each item's ID part with
    probability p, one draw per forward shared by the input and output sides.
    """

    def __init__(self, config: SequentialRecConfig):
        super().__init__()
        self.item_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.scale = config.hidden_size**0.5
        self.id_dropout = getattr(config, "item_id_dropout", 0.0)
        dims = getattr(config, "content_embedding_dims", None) or {}
        self.content_adapters = nn.ModuleDict()
        for kind, width in dims.items():  # frozen tables, saved in the checkpoint as `embeddings.<kind>_embeddings`
            self.register_buffer(f"{kind}_embeddings", torch.zeros(config.vocab_size, width))
            self.content_adapters[kind] = build_content_adapter(width, config.hidden_size, config.content_adapter)
        self._id_keep = None  # (V,) the ID-dropout draw of the current training forward

    @property
    def content_kinds(self) -> list[str]:
        return list(self.content_adapters)

    def content_table(self, kind: str) -> torch.Tensor:
        """The frozen table `kind`: `(vocab_size, content_embedding_dims[kind])`."""
        return getattr(self, f"{kind}_embeddings")

    def set_content_table(self, kind: str, table: torch.Tensor) -> None:
        """Stores `table` `(vocab_size, width)` (rows aligned to token ids) as the frozen table `kind`."""
        if kind not in self.content_adapters:
            raise ValueError(f"this model has no {kind!r} content table (it has {self.content_kinds}); build it with "
                             f"content_embedding_dims={{{kind!r}: {table.shape[-1]}}}")
        current = self.content_table(kind)
        if table.shape[1] != current.shape[1]:
            raise ValueError(f"{kind} content rows have width {table.shape[1]}, expected {current.shape[1]}")
        if table.shape[0] == current.shape[0]:
            current.copy_(table.to(current))
        else:  # the catalog grew (add_items)
            setattr(self, f"{kind}_embeddings", table.to(current).contiguous())

    def content_vectors(self, ids: torch.Tensor | None = None, start: int = 0, end: int | None = None) -> torch.Tensor | None:
        """`sum_kind adapter(content[ids])` `(*ids.shape, D)` (or of the rows `[start, end)`), None without tables."""
        out = None
        for kind, adapter in self.content_adapters.items():
            rows = self.content_table(kind)[start:end] if ids is None else self.content_table(kind)[ids]
            vectors = adapter(rows) * content_present(rows).unsqueeze(-1).to(rows.dtype)
            out = vectors if out is None else out + vectors
        return out

    def _keep(self) -> torch.Tensor | None:
        return self._id_keep if (self.training and self._id_keep is not None) else None

    def item_rows(self, ids: torch.Tensor) -> torch.Tensor:
        """`(...)` token ids -> `(..., D)` item vectors (ID + content)."""
        vectors = self.item_embeddings(ids)
        keep = self._keep()
        if keep is not None:
            vectors = vectors * keep[ids].unsqueeze(-1)
        content = self.content_vectors(ids)
        return vectors if content is None else vectors + content

    def item_matrix(self, start: int = 0, end: int | None = None) -> torch.Tensor:
        """Item vectors of token ids `[start, end)` (not normalised): `(end - start, D)`."""
        vectors = self.item_embeddings.weight[start:end]
        keep = self._keep()
        if keep is not None:
            vectors = vectors * keep[start:end].unsqueeze(-1)
        content = self.content_vectors(start=start, end=end)
        return vectors if content is None else vectors + content

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`(B, N)` ids, positions and bool mask -> `(B, N, D)`."""
        if self.training and self.id_dropout > 0:  # one draw per forward, read again by the output side (item_matrix)
            weight = self.item_embeddings.weight
            self._id_keep = (torch.rand(weight.shape[0], device=weight.device) >= self.id_dropout).to(weight.dtype)
        else:
            self._id_keep = None
        x = self.item_rows(input_ids) * self.scale + self.position_embeddings(position_ids)
        return self.dropout(x) * mask.unsqueeze(-1)


@torch.no_grad()
def init_recommender_weights(module: nn.Module, std: float) -> None:
    """The initialisation shared by every GeniusRec model: normal linears (zero bias; all-zero where `module.zero_init`),
    truncated-normal embeddings, unit LayerNorms, normal relative/time biases. A model's own buffers are its own
    `_init_weights`' business."""
    if getattr(module, "zero_init", False):  # residual branches that start as "no change" to stage 1
        init.zeros_(module.weight)
        if module.bias is not None:
            init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        init.trunc_normal_(module.weight, mean=0.0, std=std, a=-2 * std, b=2 * std)
    elif isinstance(module, nn.LayerNorm) and module.weight is not None:
        init.ones_(module.weight)
        init.zeros_(module.bias)
    if isinstance(module, FutureItemHeads):  # further-ahead heads start as the next-item state
        for offset in range(module.weight.shape[0]):
            init.eye_(module.weight[offset])
    if isinstance(module, ItemInputEmbeddings):  # frozen content tables start empty (filled by set_item_embeddings / loading)
        for kind in module.content_kinds:
            init.zeros_(module.content_table(kind))
    for name, param in module.named_parameters(recurse=False):
        if name.endswith("bias_weight"):  # relative position / time-bucket biases
            init.normal_(param, mean=0.0, std=std)


class SequentialRecPreTrainedModel(CheckpointFilesMixin, PreTrainedModel):
    """Weight initialisation and common plumbing of the next-item recommenders."""

    config_class = SequentialRecConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    # forward takes **kwargs but computes its own mean loss: without this, Trainer would scale the loss for
    # num_items_in_batch (wrong under gradient accumulation and DDP)
    accepts_loss_kwargs = False

    @torch.no_grad()
    def _init_weights(self, module):
        init_recommender_weights(module, self.config.initializer_range)


def next_item_loss(config, hidden: torch.Tensor, labels: torch.Tensor, item_vectors, excluded: torch.Tensor | None = None,
                   training: bool = True) -> torch.Tensor:
    """Stage 1's next-item loss, as `config` sets it (`loss_type`, `num_negatives`, `negatives_sharing`, `logit_scale`):
    one home for HSTU/SASRec and for GeniusRec's auxiliary encoder loss (`GeniusRecConfig.encoder_loss_weight`).

    Args:
        config: a [`SequentialRecConfig`] (the encoder's).
        hidden: `(B, N, D)` unit-normalised states.
        labels: `(B, N)` target item token ids, -100 where nothing is supervised.
        item_vectors: `item_vectors(start=0) -> (V - start, D)`, the unit-normalised item vectors.
        excluded: `(V,)` bool, items that are no training candidate (cold-items protocol), or None.
        training: draw fresh negatives (else the same seeded ones every call: a deterministic eval loss).
    Returns:
        `()` the mean loss over supervised positions.
    """
    supervised = labels != -100
    targets = labels[supervised]  # (P,)
    if targets.numel() == 0:
        return hidden.sum() * 0.0
    if bool(((targets < config.num_special_tokens) | (targets >= config.vocab_size)).any()):
        raise ValueError(
            f"labels must be item token ids in [{config.num_special_tokens}, {config.vocab_size}) or -100"
        )
    h = hidden[supervised]  # (P, D)
    if config.loss_type == "full_softmax":
        logits = scale_scores(h @ item_vectors(config.num_special_tokens).T, config)  # (P, num_items)
        if excluded is not None:
            logits = logits.masked_fill(excluded[config.num_special_tokens :], float("-inf"))
        return F.cross_entropy(logits, targets - config.num_special_tokens)
    items = item_vectors()  # (V, D), normalised once: gathered rows are never normalised again
    pos_logits = scale_scores((h * items[targets]).sum(-1, keepdim=True), config)  # (P, 1)
    # training draws fresh negatives; evaluation draws the same ones every time (a deterministic eval loss)
    generator = None if training else torch.Generator(device=h.device).manual_seed(0)
    if config.negatives_sharing == "batch":
        negatives = torch.randint(config.num_special_tokens, config.vocab_size, (config.num_negatives,), device=h.device,
                                  generator=generator)
        neg_logits = scale_scores(h @ items[negatives].T, config)  # (P, K)
        hits = negatives.unsqueeze(0) == targets.unsqueeze(1)
    else:
        negatives = torch.randint(
            config.num_special_tokens, config.vocab_size, (h.shape[0], config.num_negatives), device=h.device, generator=generator
        )
        if config.vocab_size <= DENSE_NEGATIVES_FACTOR * config.num_negatives:
            # small catalog: one (P, V) matmul and a gather beat gathering (P, K, D) vectors and scatter-adding
            # their gradient (about 2x on CPU for ML-1M's 3,706 items and 128 negatives); same numbers
            neg_logits = scale_scores((h @ items.T).gather(1, negatives), config)  # (P, K)
        else:
            neg_logits = scale_scores(torch.einsum("pd,pkd->pk", h, items[negatives]), config)  # (P, K)
        hits = negatives == targets.unsqueeze(1)
    if excluded is not None:
        hits = hits | excluded[negatives]  # not in the training catalog: never a negative
    neg_logits = neg_logits.masked_fill(hits, float("-inf"))  # accidental hits are not negatives
    logits = torch.cat([pos_logits, neg_logits], dim=1)
    return F.cross_entropy(logits, torch.zeros_like(targets))


class NextItemPredictionMixin(ItemScoringMixin, CatalogMixin):
    """Losses over the tied item embedding table (scoring: [`ItemScoringMixin`]); the host has `self.model` (a base
    encoder)."""

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embeddings.item_embeddings

    def get_output_embeddings(self) -> nn.Embedding:
        return self.model.embeddings.item_embeddings

    # -- generation: next items one at a time, each appended to the history -------------------------------------------
    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, timestamps=None, next_timestamps=None, **kwargs):
        """Generated items happen at the request time; the most recent `max_position_embeddings` items are encoded."""
        if timestamps is not None and input_ids.shape[1] > timestamps.shape[1]:
            extra = input_ids.shape[1] - timestamps.shape[1]
            request = timestamps[:, -1:] if next_timestamps is None else next_timestamps.view(-1, 1)
            timestamps = torch.cat([timestamps, request.expand(-1, extra)], dim=1)
        keep = self.config.max_position_embeddings
        cut = lambda x: None if x is None else x[:, -keep:]  # noqa: E731
        # every other model kwarg (output_attentions, output_hidden_states, ...) reaches forward, as in transformers'
        # own prepare_inputs_for_generation; the cache is not used (each step re-encodes the window)
        passed = {k: v for k, v in kwargs.items() if k not in ("cache", "past_key_values", "use_cache", "cache_position", "position_ids")}
        return {**passed, "input_ids": cut(input_ids), "attention_mask": cut(attention_mask), "timestamps": cut(timestamps),
                "next_timestamps": next_timestamps, "logits_to_keep": 1}

    @torch.no_grad()
    def generate(self, input_ids=None, attention_mask=None, timestamps=None, next_timestamps=None, banned_item_ids=None,
                 ban_history: bool = True, logits_processor=None, **kwargs):
        """The next `max_new_tokens` items, autoregressively (greedy, beam search or sampling), each scored from the
        history plus the items generated so far, with special tokens, the history (`banned_item_ids`, default
        `input_ids`) and repeats banned. Returns `(batch * num_return_sequences, history_length + k)`: the generated
        session is `out[:, history_length:]`."""
        from transformers.generation import LogitsProcessorList

        from .generation import BanItemsLogitsProcessor, check_sessions_fit

        if input_ids is None:
            raise ValueError("generate() needs the history: input_ids (batch_size, history_length) with timestamps and next_timestamps")
        window = self.config.max_position_embeddings
        if input_ids.shape[1] > window:
            raise ValueError(f"the history has {input_ids.shape[1]} items, more than the model reads ({window}): pass the latest "
                             f"{window} (input_ids[:, -{window}:], with their timestamps) and the whole history as banned_item_ids")
        check_inputs(self.config, input_ids, attention_mask, timestamps)  # before beams expand the rows: errors name the caller's rows
        kwargs.setdefault("max_new_tokens", 10)  # exactly this many items: EOS is banned below, so no min-length processor is needed
        if ban_history:
            check_sessions_fit(self.config, input_ids if banned_item_ids is None else banned_item_ids, kwargs["max_new_tokens"])
        processors = LogitsProcessorList(logits_processor or [])
        processors.append(BanItemsLogitsProcessor(self.config, input_ids if banned_item_ids is None else banned_item_ids, ban_history,
                                                  ban_repeats=True, ban_eos=True))
        kwargs.setdefault("use_cache", False)  # no key/value cache: each step re-encodes the history (it is short)
        if attention_mask is None:
            attention_mask = input_ids != self.config.pad_token_id
        return super().generate(input_ids=input_ids, attention_mask=attention_mask, timestamps=timestamps, next_timestamps=next_timestamps,
                                logits_processor=processors, **kwargs)

    def item_vectors(self, start: int = 0, end: int | None = None) -> torch.Tensor:
        """Unit-normalised item vectors (ID + content, see [`ItemInputEmbeddings`]) of token ids `[start, end)`:
        `(end - start, hidden_size)`."""
        return F.normalize(self.model.embeddings.item_matrix(start, end), dim=-1)

    # -- content: the frozen tables of the item representation ([`CatalogMixin`] grows them with the catalog) ---------
    def _content_tables(self) -> dict:
        return {kind: self.model.embeddings.content_table(kind) for kind in self.model.embeddings.content_kinds}

    def _set_content_table(self, kind: str, table: torch.Tensor) -> None:
        self.model.embeddings.set_content_table(kind, table)

    def _content_in_item_vectors(self) -> bool:
        return bool(self.model.embeddings.content_kinds)

    def set_item_embeddings(self, kind: str, table: torch.Tensor) -> None:
        """Loads the frozen content table `kind` ("text", "image", ...) of shape `(vocab_size, width)`, rows aligned to
        token ids (all-zero rows: no content)."""
        if tuple(table.shape[:1]) != (self.config.vocab_size,):
            raise ValueError(f"{kind} embeddings have {table.shape[0]} rows, expected vocab_size={self.config.vocab_size} "
                             "(rows aligned to token ids, special tokens included)")
        self.model.embeddings.set_content_table(kind, table)

    def next_item_loss(self, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss of predicting `labels` from the states `hidden` (see [`next_item_loss`]).

        Args:
            hidden: `(B, N, D)` unit-normalised states.
            labels: `(B, N)` target item token ids, -100 where nothing is supervised.
        """
        return next_item_loss(self.config, hidden, labels, self.item_vectors, self.training_excluded_items(hidden.device), self.training)

    def future_items_loss(self, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The dense multi-item objective's extra term: the mean over offsets 2..k of the next-item loss of
        predicting the item `offset` ahead (targets from [`future_labels`]) from that offset's head.

        Args:
            hidden: `(B, N, D)` unit-normalised states.
            labels: `(B, N)` or `(B, N + 1)` labels in the causal-LM convention (what `forward` takes).
        Returns:
            `()` the mean over offsets (each the mean over its supervised positions).
        """
        length = hidden.shape[1]
        losses = [self.next_item_loss(self.future_heads(hidden, offset), future_labels(labels, length, offset))
                  for offset in range(2, self.config.future_items + 1)]
        return torch.stack(losses).mean()

    def _next_item_forward(
        self, input_ids, attention_mask, labels, return_logits, encoder_kwargs, return_dict=None, logits_to_keep=None
    ) -> NextItemPredictionOutput:
        output_hidden_states, return_dict = resolve_output_flags(self.config, encoder_kwargs.pop("output_hidden_states", None), return_dict)
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=output_hidden_states,
                             return_dict=True, **encoder_kwargs)
        hidden = outputs.last_hidden_state
        mask = (input_ids != self.config.pad_token_id) if attention_mask is None else attention_mask.bool()
        user_embeddings = hidden[torch.arange(hidden.shape[0], device=hidden.device), last_positions(mask)]
        loss = self.next_item_loss(hidden, shift_labels(labels, input_ids.shape[1])) if labels is not None else None
        if loss is not None and self.training and self.future_heads is not None:
            loss = loss + self.config.future_loss_weight * self.future_items_loss(hidden, labels)
        if logits_to_keep == 1:  # generation: only the next item after each row's last real position, (B, 1, V)
            logits = scale_scores(user_embeddings @ self.item_vectors().T, self.config).unsqueeze(1)
        else:
            logits = scale_scores(hidden @ self.item_vectors().T, self.config) if return_logits else None
        output = NextItemPredictionOutput(
            loss=loss,
            user_embeddings=user_embeddings,
            logits=logits,
            last_hidden_state=hidden,
            hidden_states=outputs.hidden_states,
            attentions=outputs.get("attentions"),
        )
        return output if return_dict else output.to_tuple()


__all__ = [
    "SequentialRecOutput",
    "next_item_loss",
    "NextItemPredictionOutput",
    "SequentialRecPreTrainedModel",
    "NextItemPredictionMixin",
    "ItemInputEmbeddings",
    "content_present",
    "check_inputs",
    "check_time_inputs",
    "resolve_output_flags",
    "shift_labels",
    "future_labels",
    "future_heads",
    "FutureItemHeads",
    "init_recommender_weights",
    "position_ids_from_mask",
    "last_positions",
]
