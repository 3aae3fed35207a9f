"""HSTU encoder, faithful to Zhai et al., "Actions Speak Louder than Words" (ICML 2024) and its reference code.

Block (pre-norm, residual)::

    n = LayerNorm(x)                                   # no affine
    U, V, Q, K = split(SiLU(n W_uvqk))
    A = SiLU(Q K^T + b_pos(j - i) + b_time(bucket(t_query_i - t_j))) / N    # causal + padding mask, no softmax
    x = x + W_o Dropout(U * LayerNorm(A V))

with `bucket(d) = clamp(floor(ln(max(|d|, 1)) / 0.301), 0, num_buckets)`. The attention math lives in one plain
function, `hstu_attention_forward`; the tests compare it with a loop-based computation of the formula.
"""

import functools

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin
from transformers.modeling_layers import GradientCheckpointingLayer

from .configuration_hstu import HSTUConfig
from .modeling_sequential import (
    ItemInputEmbeddings,
    NextItemPredictionMixin,
    NextItemPredictionOutput,
    SequentialRecOutput,
    SequentialRecPreTrainedModel,
    check_inputs,
    check_time_inputs,
    future_heads,
    position_ids_from_mask,
    resolve_output_flags,
)


def _bucket_formula(delta: torch.Tensor, num_buckets: int, scale: float) -> torch.Tensor:
    """The definition: `clamp(floor(ln(delta) / scale), 0, num_buckets)` for int64 `delta >= 1`, in float64."""
    return (torch.log(delta.double()) / scale).floor().clamp(0, num_buckets).long()


@functools.lru_cache(maxsize=16)
def _bucket_thresholds(num_buckets: int, scale: float) -> torch.Tensor:
    """`(num_buckets,)` int64: the smallest `delta` of buckets 1..num_buckets under [`_bucket_formula`].

    The formula is monotone in the integer `delta` (float64 rounding, log, division by a positive constant and floor
    all are), so a bisection over int64 finds each threshold exactly, and `bucketize(delta, thresholds)` reproduces
    the formula bit for bit without a float64 log over every `(B, N, N)` pair."""
    want = torch.arange(1, num_buckets + 1)
    lo = torch.ones(num_buckets, dtype=torch.long)  # formula(lo) < want (bucket 0 at delta 1) ...
    hi = torch.full((num_buckets,), 2**62, dtype=torch.long)  # ... formula(hi) >= want, or the bucket is never reached
    reachable = _bucket_formula(hi, num_buckets, scale) >= want
    while bool((hi - lo > 1).any()):
        mid = lo + (hi - lo) // 2
        up = _bucket_formula(mid, num_buckets, scale) >= want
        hi, lo = torch.where(up, mid, hi), torch.where(up, lo, mid)
    return torch.where(reachable, hi, torch.full_like(hi, 2**63 - 1))


def tracing() -> bool:
    """Whether `torch.compile` or `torch.export` is tracing: data-dependent checks and branches are skipped then."""
    return torch.compiler.is_compiling() or torch.compiler.is_exporting()


def time_buckets(query_times: torch.Tensor, key_times: torch.Tensor, num_buckets: int, scale: float) -> torch.Tensor:
    """`(B, N)` query times, `(B, N)` key times (seconds) -> `(B, N, N)` bucket ids in `[0, num_buckets]`:
    `clamp(floor(ln(max(|t_q - t_k|, 1)) / scale), 0, num_buckets)`, computed by `bucketize` against exact
    integer thresholds (the same numbers as the float64 formula, several times faster)."""
    delta = (query_times.unsqueeze(2) - key_times.unsqueeze(1)).abs_()
    if tracing():  # the thresholds' bisection is data-dependent: compiled / exported code uses the formula itself
        return _bucket_formula(delta.clamp(min=1), num_buckets, scale)
    thresholds = _bucket_thresholds(num_buckets, float(scale)).to(delta.device)
    return torch.bucketize(delta, thresholds, right=True)


def hstu_attention_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None,
    weights_mask: torch.Tensor,
    dropout: float = 0.0,
    training: bool = False,
    return_weights: bool = False,
):
    """Pointwise SiLU attention.

    Args:
        q, k: `(B, H, N, d_qk)`; v: `(B, H, N, d_v)`.
        bias: `(B or 1, N, N)` relative position + time bias, or None.
        weights_mask: float, broadcastable to `(B, H, N, N)`: `1 / N` where query i may read key j (causal, both real
            items), 0 elsewhere, i.e. the mask and the divisor of `SiLU(.) / N` in one tensor (computed once per
            forward for all blocks by [`HSTUModel`]).
    Returns:
        `(B, N, H * d_v)`, and the pointwise attention weights `(B, H, N, N)` when `return_weights`.
    """
    scores = q @ k.transpose(-1, -2)  # (B, H, N, N)
    if bias is not None:
        scores = scores + bias.unsqueeze(1)
    attn = F.silu(scores) * weights_mask
    attn = F.dropout(attn, p=dropout, training=training)
    out = attn @ v  # (B, H, N, d_v)
    batch, heads, length, d_v = out.shape
    out = out.transpose(1, 2).reshape(batch, length, heads * d_v)
    return (out, attn) if return_weights else out


class HSTURelativeBias(nn.Module):
    """Learned relative position bias `b_pos(j - i)` and time-bucket bias, one pair per block (as the reference).

    Uses `index_select` rather than `w[idx]`: the latter's backward sorts a `(B, N, N)` index over few, heavily
    repeated values and made a GPU epoch about 20x slower.
    """

    def __init__(self, config: HSTUConfig):
        super().__init__()
        self.config = config
        self.position_bias_weight = nn.Parameter(torch.zeros(2 * config.max_position_embeddings - 1))
        self.time_bias_weight = nn.Parameter(torch.zeros(config.num_time_buckets + 1))

    def forward(self, relative_positions: torch.Tensor | None, buckets: torch.Tensor | None) -> torch.Tensor | None:
        """`(B or 1, N, N)` index tensors (or None) -> `(B or 1, N, N)` bias (or None)."""
        bias = None
        if relative_positions is not None:
            bias = self.position_bias_weight.index_select(0, relative_positions.reshape(-1)).view(relative_positions.shape)
        if buckets is not None:
            time_bias = self.time_bias_weight.index_select(0, buckets.reshape(-1)).view(buckets.shape)
            bias = time_bias if bias is None else bias + time_bias
        return bias


class HSTULayer(GradientCheckpointingLayer):
    """One HSTU block: fused UVQK projection with SiLU, pointwise attention, U gating, output projection, residual."""

    def __init__(self, config: HSTUConfig):
        super().__init__()
        self.config = config
        heads, d_qk, d_v = config.num_attention_heads, config.qk_head_dim, config.v_head_dim
        self.split_sizes = [heads * d_v, heads * d_v, heads * d_qk, heads * d_qk]
        self.uvqk = nn.Linear(config.hidden_size, sum(self.split_sizes), bias=False)
        self.output = nn.Linear(heads * d_v, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.relative_bias = HSTURelativeBias(config) if (config.use_position_bias or config.use_time_bias) else None

    def forward(self, hidden_states, weights_mask, relative_positions=None, buckets=None, output_attentions=False):
        """`(B, N, D)` -> `(B, N, D)` (and the `(B, H, N, N)` pointwise weights with `output_attentions`);
        `weights_mask` as [`hstu_attention_forward`]; index tensors as [`HSTURelativeBias`]."""
        config = self.config
        batch, length, _ = hidden_states.shape
        normed = F.layer_norm(hidden_states, (config.hidden_size,), eps=config.layer_norm_eps)
        u, v, q, k = torch.split(F.silu(self.uvqk(normed)), self.split_sizes, dim=-1)
        heads = config.num_attention_heads
        q = q.view(batch, length, heads, config.qk_head_dim).transpose(1, 2)  # (B, H, N, d_qk)
        k = k.view(batch, length, heads, config.qk_head_dim).transpose(1, 2)
        v = v.view(batch, length, heads, config.v_head_dim).transpose(1, 2)  # (B, H, N, d_v)
        bias = self.relative_bias(relative_positions, buckets) if self.relative_bias is not None else None
        attn = hstu_attention_forward(
            q, k, v, bias, weights_mask, dropout=config.attention_dropout_prob, training=self.training, return_weights=output_attentions
        )
        weights = None
        if output_attentions:
            attn, weights = attn
        gated = u * F.layer_norm(attn, (heads * config.v_head_dim,), eps=config.layer_norm_eps)
        out = hidden_states + self.output(self.dropout(gated))
        return (out, weights) if output_attentions else out


class HSTUPreTrainedModel(SequentialRecPreTrainedModel):
    config_class = HSTUConfig
    _no_split_modules = ["HSTULayer"]


class HSTUModel(HSTUPreTrainedModel):
    """The HSTU encoder: item histories (with timestamps) -> unit-normalised user states at every position."""

    def __init__(self, config: HSTUConfig):
        super().__init__(config)
        self.embeddings = ItemInputEmbeddings(config)
        self.layers = nn.ModuleList([HSTULayer(config) for _ in range(config.num_hidden_layers)])
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.item_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.item_embeddings = value

    def _query_times(self, timestamps, mask, next_timestamps):
        """Time of each query: the next event's time `t_{i+1}`; at the last item `next_timestamps` if given."""
        if not self.config.use_next_event_time:
            return timestamps
        # roll rather than slice-and-cat: the same values, and no (N - 1)-long slice for torch.export to specialise on
        following = timestamps.roll(-1, dims=1)
        not_last = torch.arange(mask.shape[1], device=mask.device) < mask.shape[1] - 1
        has_next = mask.roll(-1, dims=1) & not_last
        fallback = timestamps if next_timestamps is None else next_timestamps.view(-1, 1).expand_as(timestamps)
        return torch.where(has_next, following, fallback)

    def _attention_inputs(self, mask, position_ids, right_aligned, timestamps, next_timestamps):
        """What every block's attention reads: the normalised causal mask `(B, 1, N, N)` (mask / divisor), the relative
        position indices `(B or 1, N, N)` and the time buckets `(B, N, N)` (None where the config turns them off)."""
        config = self.config
        batch, length = mask.shape
        causal = torch.ones(length, length, dtype=torch.bool, device=mask.device).tril()
        attn_mask = causal.unsqueeze(0) & mask.unsqueeze(1) & mask.unsqueeze(2)  # (B, N, N)

        if config.attention_normalization == "padded":
            divisor = float(config.max_position_embeddings)
        elif config.attention_normalization == "length":
            divisor = mask.sum(dim=1).view(batch, 1, 1, 1).float()
        else:  # "causal": number of keys the query sees
            divisor = (position_ids + 1).view(batch, 1, length, 1).float()
        # one (B, 1, N, N) float tensor = mask / N for every block, instead of a bool conversion and a division per block
        dtype = self.embeddings.item_embeddings.weight.dtype
        attn_weights_mask = attn_mask.unsqueeze(1).to(dtype) * (1.0 / divisor if isinstance(divisor, float) else divisor.reciprocal())

        relative_positions = buckets = None
        if config.use_position_bias:
            pos = position_ids[:1] if right_aligned else position_ids
            relative_positions = (pos.unsqueeze(1) - pos.unsqueeze(2) + config.max_position_embeddings - 1).clamp(
                0, 2 * config.max_position_embeddings - 2
            )  # (B or 1, N, N): index of j - i
        if config.use_time_bias:
            query_times = self._query_times(timestamps, mask, next_timestamps)
            buckets = time_buckets(query_times, timestamps, config.num_time_buckets, config.time_bucket_scale)

        return attn_weights_mask, relative_positions, buckets

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        timestamps: torch.LongTensor | None = None,
        next_timestamps: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> SequentialRecOutput:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
                Item token ids in chronological order, padded on either side with `pad_token_id`.
            attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*):
                1 for real items, 0 for padding; defaults to `input_ids != pad_token_id`.
            timestamps (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                Event times in seconds; required when `config.use_time_bias`.
            next_timestamps (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
                Time of the request (the event to predict after each row's last item).
        Returns:
            [`SequentialRecOutput`] with `last_hidden_state` `(batch_size, sequence_length, hidden_size)`.
        """
        config = self.config
        compiling = tracing()
        if compiling:  # torch.compile(fullgraph=True) / torch.export: the value checks are data-dependent; run them eagerly
            mask = (input_ids != config.pad_token_id) if attention_mask is None else attention_mask.bool()
        else:
            mask = check_inputs(config, input_ids, attention_mask, timestamps)
            check_time_inputs(config, timestamps, next_timestamps)
            if next_timestamps is not None and next_timestamps.shape != (input_ids.shape[0],):
                raise ValueError(f"next_timestamps must have shape ({input_ids.shape[0]},), got {tuple(next_timestamps.shape)}")
        batch, length = input_ids.shape
        # every row a prefix (no left padding, no holes): positions are arange(N) in every row, one shared bias matrix;
        # otherwise each row's positions come from its own mask, so a row never depends on the others in the batch.
        # Compiled, always the per-row path (the same numbers, no data-dependent branch).
        right_aligned = not compiling and bool(mask[:, 0].all()) and bool((mask[:, 1:] <= mask[:, :-1]).all())
        if right_aligned:
            position_ids = torch.arange(length, device=input_ids.device).expand(batch, length)
        else:
            position_ids = position_ids_from_mask(mask)
        attn_weights_mask, relative_positions, buckets = self._attention_inputs(mask, position_ids, right_aligned, timestamps, next_timestamps)

        output_hidden_states, return_dict = resolve_output_flags(self.config, output_hidden_states, return_dict)
        hidden = self.embeddings(input_ids, position_ids, mask)
        all_hidden = [hidden] if output_hidden_states else None
        keep = mask.unsqueeze(-1)
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        all_attentions = [] if output_attentions else None
        for layer in self.layers:
            if output_attentions:
                hidden, weights = layer(hidden, attn_weights_mask, relative_positions, buckets, output_attentions=True)
                all_attentions.append(weights)
            else:
                hidden = layer(hidden, attn_weights_mask, relative_positions, buckets)
            hidden = hidden * keep
            if output_hidden_states:
                all_hidden.append(hidden)
        hidden = F.normalize(hidden, dim=-1, eps=1e-6) * keep
        output = SequentialRecOutput(last_hidden_state=hidden, hidden_states=tuple(all_hidden) if all_hidden else None,
                                     attentions=tuple(all_attentions) if output_attentions else None)
        return output if return_dict else output.to_tuple()


class HSTUForNextItemPrediction(NextItemPredictionMixin, HSTUPreTrainedModel, GenerationMixin):
    """HSTU with the next-item head: tied cosine scores, sampled or full softmax, chunked full-catalog scoring."""

    def __init__(self, config: HSTUConfig):
        super().__init__(config)
        self.model = HSTUModel(config)
        self.future_heads = future_heads(config)  # the dense multi-item objective (config.future_items > 1), else None
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        timestamps: torch.LongTensor | None = None,
        next_timestamps: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        return_logits: bool = False,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> NextItemPredictionOutput:
        r"""
        Args:
            input_ids, attention_mask, timestamps, next_timestamps: as [`HSTUModel.forward`].
            labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                Causal-LM convention: position t predicts `labels[:, t + 1]`, so `labels=input_ids` trains next-item
                prediction; `(batch_size, sequence_length + 1)` (the next item appended) supervises the last position
                too. -100 where unsupervised.
            return_logits (`bool`, *optional*): also return `(B, N, vocab_size)` scores (small catalogs only).
        Returns:
            [`NextItemPredictionOutput`].
        """
        encoder_kwargs = dict(timestamps=timestamps, next_timestamps=next_timestamps, output_hidden_states=output_hidden_states,
                              output_attentions=kwargs.get("output_attentions"))
        return self._next_item_forward(input_ids, attention_mask, labels, return_logits, encoder_kwargs, return_dict,
                                       kwargs.get("logits_to_keep"))


HSTUConfig.register_for_auto_class()
HSTUModel.register_for_auto_class("AutoModel")
HSTUForNextItemPrediction.register_for_auto_class("AutoModelForCausalLM")

__all__ = [
    "HSTUPreTrainedModel",
    "HSTUModel",
    "HSTUForNextItemPrediction",
    "HSTULayer",
    "hstu_attention_forward",
    "time_buckets",
]
