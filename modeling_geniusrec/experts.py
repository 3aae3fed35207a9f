"""GeniusRec's experts behind one small interface and a registry.

An expert turns the decoder state `(B, Tq, D)` into a proposal `(B, Tq, D)`; a softmax gate mixes the proposals per
position. To add one: write a class with the two methods below, decorate it with `@register_expert("<type>")`, and
name it in the config (`GeniusRecConfig(expert_types={"behaviour": "behaviour", "mine": "<type>"})`). That is all:
the model builds it, runs `encode` once per history, passes the result back at every decoding step, and adds it to
the gate, the outputs and the plots.

Interface:
- `__init__(config, name)`;
- `encode(model, input_ids) -> torch.Tensor | None`: what the expert precomputes from the history `(B_h, N)` once per
  encoding (e.g. projected keys); it is stored in the encoder output, one row per history: during `generate()` the
  decoder has `context.group` consecutive rows (beams) per history row (`context.per_row(x)` expands a history
  tensor to the decoder's rows; [`group_beams`] lets attention read each history once);
- `forward(state, context: ExpertContext) -> (B, Tq, D)`. Causality is the expert's duty: at session position t it
  may read the history and the session inputs `[SEP, s_1, .., s_{t-1}]` (`context.session_ids[:, : t + 1]`) only;
- optionally `history_key_mask(model, input_ids, attention_mask) -> (B, N) bool`: which history items the expert may
  read (e.g. only items that have an image); it replaces `context.history_mask` for this expert.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .generation import group_beams, ungroup_beams
from .modeling_sequential import content_present

EXPERT_REGISTRY: dict[str, type] = {}


def register_expert(type_name: str):
    """Class decorator: makes an expert class buildable from `config.expert_types` under `type_name`."""

    def add(cls):
        EXPERT_REGISTRY[type_name] = cls
        cls.expert_type = type_name
        return cls

    return add


def build_expert(config, name: str, type_name: str) -> nn.Module:
    if type_name not in EXPERT_REGISTRY:
        raise ValueError(f"expert {name!r} has unknown type {type_name!r}; registered types: {sorted(EXPERT_REGISTRY)} "
                         "(decorate the class with @register_expert)")
    return EXPERT_REGISTRY[type_name](config, name)


@dataclass
class ExpertContext:
    """What an expert may read at a decoding step.

    Args:
        model: the [`GeniusRecModel`] (its content tables: `model.content_table(kind)`).
        history_state: this expert's own `encode(...)` result, one row per history `(B_h, ...)`, or None.
        history_mask (`(B_h, N)`): 1 for real history items.
        session_ids (`(B, Ts)`): every decoder input so far, `[SEP, s_1, ...]`.
        query_offset (`int`): session position of the first query row (the cache length when generating).
        group (`int`): decoder rows per history row, `B = B_h * group` (the beams of `generate()`, consecutive; 1 in
            training).
    """

    model: nn.Module
    history_state: torch.Tensor | None
    history_mask: torch.Tensor
    session_ids: torch.LongTensor
    query_offset: int
    group: int = 1

    def per_row(self, x: torch.Tensor | None) -> torch.Tensor | None:
        """A history tensor `(B_h, ...)` repeated to the decoder's rows `(B, ...)` (for experts that do not group)."""
        return x if x is None or self.group == 1 else x.repeat_interleave(self.group, dim=0)


@register_expert("behaviour")
class BehaviourExpert(nn.Module):
    """Works on the ID/behaviour decoder state alone (a feed-forward network)."""

    def __init__(self, config, name: str = "behaviour"):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(config.hidden_size, config.intermediate_size), nn.GELU(),
                                 nn.Dropout(config.hidden_dropout_prob), nn.Linear(config.intermediate_size, config.hidden_size))

    def encode(self, model, input_ids):
        return None

    def forward(self, state, context: ExpertContext):
        return self.net(state)


@register_expert("content")
class ContentExpert(nn.Module):
    """Attends from the decoder state over one frozen content table (the one named like the expert: "text", "image")
    of the history items and of the session inputs so far (`[SEP, s_1, .., s_{t-1}]` for position t, causally masked)."""

    def __init__(self, config, name: str):
        super().__init__()
        if name not in config.content_embedding_dims:
            raise ValueError(f"content expert {name!r} needs content_embedding_dims[{name!r}] (the width of its table)")
        self.name = name
        self.num_heads, self.head_dim = config.num_attention_heads, config.hidden_size // config.num_attention_heads
        self.projection = nn.Sequential(nn.Linear(config.content_embedding_dims[name], config.hidden_size),
                                        nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps))
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = config.attention_dropout_prob

    def _split(self, x):  # (B, T, D) -> (B, H, T, d)
        return x.view(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def encode(self, model, input_ids):
        """Projected history rows, split into heads once: `(B, N)` ids -> `(B, H, N, d)` contiguous."""
        return self._split(self.projection(model.content_table(self.name)[input_ids])).contiguous()

    def history_key_mask(self, model, input_ids, attention_mask):
        """Real history items that have content (an all-zero row, e.g. an item without an image, is never attended)."""
        return attention_mask.bool() & content_present(model.content_table(self.name)[input_ids])

    def forward(self, state, context: ExpertContext):
        """state `(B, Tq, D)` at session positions `query_offset .. query_offset + Tq - 1` -> `(B, Tq, D)`."""
        batch, t_q, _ = state.shape
        q = self._split(self.q_proj(state)) * self.head_dim**-0.5  # (B, H, Tq, d)
        k_hist = context.history_state  # (B, H, N, d); keys double as values
        k_sess = self._split(self.projection(context.model.content_table(self.name)[context.session_ids]))  # (B, H, Ts, d)
        positions = torch.arange(t_q, device=state.device) + context.query_offset
        session_visible = torch.arange(context.session_ids.shape[1], device=state.device).unsqueeze(0) <= positions.unsqueeze(1)  # (Tq, Ts)
        # session items without content are not read; [SEP] (column 0, no content) always is: a learned "nothing" key
        rows = context.model.content_table(self.name)[context.session_ids]  # (B, Ts, width)
        has_content = content_present(rows) | (torch.arange(rows.shape[1], device=state.device) == 0)  # (B, Ts)
        session_visible = session_visible.unsqueeze(0) & has_content.unsqueeze(1)  # (B, Tq, Ts)
        group = context.group  # the beams of one history read its keys once
        s_hist = group_beams(q, group) @ k_hist.transpose(-1, -2)  # (B_h, H, group * Tq, N)
        s_hist = ungroup_beams(s_hist.masked_fill(~context.history_mask.bool().view(k_hist.shape[0], 1, 1, -1), float("-inf")), group)
        s_sess = (q @ k_sess.transpose(-1, -2)).masked_fill(~session_visible.unsqueeze(1), float("-inf"))
        weights = torch.softmax(torch.cat([s_hist, s_sess], dim=-1), dim=-1)  # one softmax over history + session
        weights = F.dropout(weights, self.dropout, self.training)
        n = k_hist.shape[2]
        out = ungroup_beams(group_beams(weights[..., :n], group) @ k_hist, group) + weights[..., n:] @ k_sess
        return self.o_proj(out.transpose(1, 2).reshape(batch, t_q, -1))


__all__ = ["EXPERT_REGISTRY", "register_expert", "build_expert", "ExpertContext", "BehaviourExpert", "ContentExpert"]
