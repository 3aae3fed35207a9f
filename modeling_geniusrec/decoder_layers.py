"""GeniusRec's decoder layers: multi-head attention (eager or SDPA; self-attention cached, cross-attention over keys and
values projected once per history and read once per beam group), the pre-norm decoder layer, and the count confidence
that weights an item's content in its output vector."""

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from .configuration_geniusrec import GeniusRecConfig
from .generation import group_beams, ungroup_beams


def eager_attention_forward(q, k, v, mask, dropout: float = 0.0, training: bool = False, return_weights: bool = False):
    """Softmax attention written out: q `(B, H, Tq, d)`, k/v `(B, H, Tk, d)`, mask bool broadcastable to
    `(B, H, Tq, Tk)` (True = may attend). Returns `(B, H, Tq, d)`, and the softmax weights `(B, H, Tq, Tk)` (before
    dropout) with `return_weights`."""
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5  # (B, H, Tq, Tk)
    scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    out = F.dropout(probs, dropout, training) @ v
    return (out, probs) if return_weights else out


def sdpa_attention_forward(q, k, v, mask, dropout: float = 0.0, training: bool = False):
    """The same attention through `torch.nn.functional.scaled_dot_product_attention` (fused kernels where available)."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout if training else 0.0)


ATTENTION_FUNCTIONS = {"eager": eager_attention_forward, "sdpa": sdpa_attention_forward}


class GeniusRecAttention(nn.Module):
    """Multi-head attention. Self-attention keeps its keys/values in the decoder cache; cross-attention reads keys/values
    projected once per encoding ([`GeniusRecModel.encode`]), which beam search never needs to reorder. When the
    queries hold `group` rows per history (beams), cross-attention groups them ([`group_beams`]) and reads each
    history's keys once."""

    def __init__(self, config: GeniusRecConfig, layer_idx: int):
        super().__init__()
        self.config, self.layer_idx = config, layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // self.num_heads
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def _heads(self, x):
        return x.view(*x.shape[:2], self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, d)

    def project_key_value(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(B, T, D)` -> keys, values `(B, H, T, d)`."""
        return self._heads(self.k_proj(states)), self._heads(self.v_proj(states))

    def forward(self, hidden_states, mask, key_value=None, cache=None, output_attentions=False):
        """`hidden_states` `(B, Tq, D)`; `key_value` precomputed `(k, v)` for cross-attention, else self-attention
        over `hidden_states` (appended to `cache`, a [`DynamicCache`], when given). With `output_attentions`, also
        returns the `(B, H, Tq, Tk)` weights (computed by the eager path: SDPA does not return them, as in
        transformers)."""
        q = self._heads(self.q_proj(hidden_states))
        group = 1
        if key_value is not None:
            k, v = key_value
            group = q.shape[0] // k.shape[0]  # decoder rows (beams) per history row
            q = group_beams(q, group)
        else:
            k, v = self.project_key_value(hidden_states)
            if cache is not None:
                k, v = cache.update(k, v, self.layer_idx)
        if output_attentions:
            out, weights = eager_attention_forward(q, k, v, mask, self.config.attention_dropout_prob, self.training, return_weights=True)
            out, weights = ungroup_beams(out, group), ungroup_beams(weights, group)
            return self.o_proj(out.transpose(1, 2).reshape(*hidden_states.shape[:2], -1)), weights
        attention = ATTENTION_FUNCTIONS.get(self.config._attn_implementation or "sdpa", sdpa_attention_forward)  # config's attn_implementation
        out = ungroup_beams(attention(q, k, v, mask, self.config.attention_dropout_prob, self.training), group)
        return self.o_proj(out.transpose(1, 2).reshape(*hidden_states.shape[:2], -1))


class GeniusRecDecoderLayer(GradientCheckpointingLayer):
    """Pre-LN decoder layer: causal self-attention, cross-attention to the encoder states, feed-forward."""

    def __init__(self, config: GeniusRecConfig, layer_idx: int):
        super().__init__()
        eps = config.layer_norm_eps
        self.self_attn_norm = nn.LayerNorm(config.hidden_size, eps=eps)
        self.self_attn = GeniusRecAttention(config, layer_idx)
        self.cross_attn_norm = nn.LayerNorm(config.hidden_size, eps=eps)
        self.cross_attn = GeniusRecAttention(config, layer_idx)
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=eps)
        self.ffn = nn.Sequential(nn.Linear(config.hidden_size, config.intermediate_size), nn.GELU(),
                                 nn.Linear(config.intermediate_size, config.hidden_size))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, self_mask, cross_keys, cross_values, cross_mask, cache=None, output_attentions=False):
        """`(B, T, D)` -> `(B, T, D)`; with `output_attentions`, `(states, self-attention weights, cross-attention
        weights)`."""
        if not output_attentions:
            h = hidden_states + self.dropout(self.self_attn(self.self_attn_norm(hidden_states), self_mask, cache=cache))
            h = h + self.dropout(self.cross_attn(self.cross_attn_norm(h), cross_mask, key_value=(cross_keys, cross_values)))
            return h + self.dropout(self.ffn(self.ffn_norm(h)))
        attended, self_weights = self.self_attn(self.self_attn_norm(hidden_states), self_mask, cache=cache, output_attentions=True)
        h = hidden_states + self.dropout(attended)
        attended, cross_weights = self.cross_attn(self.cross_attn_norm(h), cross_mask, key_value=(cross_keys, cross_values), output_attentions=True)
        h = h + self.dropout(attended)
        return h + self.dropout(self.ffn(self.ffn_norm(h))), self_weights, cross_weights



def zero_linear(in_features: int, out_features: int, bias: bool = True) -> nn.Linear:
    layer = nn.Linear(in_features, out_features, bias=bias)
    layer.zero_init = True
    return layer


class CountConfidence(nn.Module):
    """How much an item's output vector trusts its content over its ID: `sigmoid(bias + slope * log(1 + n))` for
    training interaction counts `n` (given as `log(1 + n)` `(..., )` -> `(..., )`), two learned scalars (see
    `GeniusRecConfig.content_output_confidence`)."""

    INITIAL_BIAS, INITIAL_SLOPE = 4.0, -1.0

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor(self.INITIAL_BIAS))
        self.slope = nn.Parameter(torch.tensor(self.INITIAL_SLOPE))

    def forward(self, log_counts: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.bias + self.slope * log_counts)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` `(B, N)` over the positions where `mask` `(B, N)` is set -> `(B,)` (0 for an empty row)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum(1) / mask.sum(1).clamp(min=1)


def count_features(log_counts: torch.Tensor, history_log_count: torch.Tensor, decoder_input_ids: torch.LongTensor, group: int) -> torch.Tensor:
    """The gate's count features `(B, t, 2)` (`GeniusRecConfig.content_gate_confidence`): the history's mean
    `log(1 + n)` `(B_h,)` (repeated over each history's `group` decoder rows) and that of each position's input item,
    both divided by `COUNT_FEATURE_SCALE` (a fixed 10: `log(1 + 22,000)`, so features stay about in [0, 1])."""
    history = history_log_count.repeat_interleave(group).unsqueeze(1).expand(decoder_input_ids.shape)
    return torch.stack([history, log_counts[decoder_input_ids]], dim=-1) / COUNT_FEATURE_SCALE


COUNT_FEATURE_SCALE = 10.0
