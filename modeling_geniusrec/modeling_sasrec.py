"""SASRec (Kang & McAuley, ICDM 2018) as in the HSTU reference code's baseline, on GeniusRec's shared inputs,
cosine scoring and losses, so that SASRec and HSTU are compared under one protocol.

Block (the original SASRec layout)::

    q = LayerNorm(x);  x = q + MHA(q, x, x)            # causal softmax attention
    x = LayerNorm(x);  x = x + FFN(x)                  # ReLU, dropout
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin
from transformers.modeling_layers import GradientCheckpointingLayer

from .configuration_sasrec import SASRecConfig
from .modeling_sequential import (
    ItemInputEmbeddings,
    NextItemPredictionMixin,
    NextItemPredictionOutput,
    SequentialRecOutput,
    SequentialRecPreTrainedModel,
    check_inputs,
    future_heads,
    position_ids_from_mask,
    resolve_output_flags,
)


class SASRecLayer(GradientCheckpointingLayer):
    def __init__(self, config: SASRecConfig):
        super().__init__()
        self.config = config
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.attention_output = nn.Linear(config.hidden_size, config.hidden_size)
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn_in = nn.Linear(config.hidden_size, config.intermediate_size)
        self.ffn_out = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, mask: torch.Tensor, output_attentions: bool = False):
        """`(B, N, D)` -> `(B, N, D)`; `mask` `(B, N, N)` bool, True where query i may read key j. With
        `output_attentions`, also the softmax weights `(B, H, N, N)` (computed written out, as SDPA returns none)."""
        batch, length, dim = hidden_states.shape
        heads = self.config.num_attention_heads
        q_in = self.attention_norm(hidden_states)
        q = F.linear(q_in, self.qkv.weight[:dim], self.qkv.bias[:dim])
        k, v = F.linear(hidden_states, self.qkv.weight[dim:], self.qkv.bias[dim:]).chunk(2, dim=-1)
        q, k, v = (t.view(batch, length, heads, dim // heads).transpose(1, 2) for t in (q, k, v))  # (B, H, N, d)
        weights = None
        if output_attentions:
            scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
            weights = torch.softmax(scores.masked_fill(~mask.unsqueeze(1), float("-inf")), dim=-1)  # (B, H, N, N)
            attn = F.dropout(weights, self.config.attention_dropout_prob, self.training) @ v
        else:
            attn = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask.unsqueeze(1),
                dropout_p=self.config.attention_dropout_prob if self.training else 0.0,
            )
        attn = attn.transpose(1, 2).reshape(batch, length, dim)
        hidden_states = q_in + self.dropout(self.attention_output(attn))
        normed = self.ffn_norm(hidden_states)
        out = normed + self.dropout(self.ffn_out(self.dropout(F.relu(self.ffn_in(normed)))))
        return (out, weights) if output_attentions else out


class SASRecPreTrainedModel(SequentialRecPreTrainedModel):
    config_class = SASRecConfig
    _no_split_modules = ["SASRecLayer"]


class SASRecModel(SASRecPreTrainedModel):
    """SASRec encoder: item histories -> unit-normalised user states at every position."""

    def __init__(self, config: SASRecConfig):
        super().__init__(config)
        if config.hidden_size % config.num_attention_heads:
            raise ValueError("hidden_size must be divisible by num_attention_heads")
        self.embeddings = ItemInputEmbeddings(config)
        self.layers = nn.ModuleList([SASRecLayer(config) for _ in range(config.num_hidden_layers)])
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.item_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.item_embeddings = value

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> SequentialRecOutput:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`): item token ids, padded either side.
            attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*): 1 for real items.
            Timestamps are accepted and ignored (SASRec has no time signal).
            output_attentions (`bool`, *optional*): also return each layer's softmax weights `(batch_size,
                num_heads, sequence_length, sequence_length)` (default: `config.output_attentions`).
        Returns:
            [`SequentialRecOutput`] with `last_hidden_state` `(batch_size, sequence_length, hidden_size)`.
        """
        mask = check_inputs(self.config, input_ids, attention_mask, kwargs.get("timestamps"))
        length = input_ids.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=input_ids.device).tril()
        eye = torch.eye(length, dtype=torch.bool, device=input_ids.device)
        # padding queries read themselves only, so no row of the softmax is empty (their outputs are zeroed)
        attn_mask = causal.unsqueeze(0) & (mask.unsqueeze(1) | eye.unsqueeze(0))
        output_hidden_states, return_dict = resolve_output_flags(self.config, output_hidden_states, return_dict)
        hidden = self.embeddings(input_ids, position_ids_from_mask(mask), mask)
        all_hidden = [hidden] if output_hidden_states else None
        keep = mask.unsqueeze(-1)
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        all_attentions = [] if output_attentions else None
        for layer in self.layers:
            if output_attentions:
                hidden, weights = layer(hidden, attn_mask, output_attentions=True)
                all_attentions.append(weights)
            else:
                hidden = layer(hidden, attn_mask)
            hidden = hidden * keep
            if output_hidden_states:
                all_hidden.append(hidden)
        hidden = F.normalize(self.final_norm(hidden), dim=-1, eps=1e-6) * keep
        output = SequentialRecOutput(last_hidden_state=hidden, hidden_states=tuple(all_hidden) if all_hidden else None,
                                     attentions=tuple(all_attentions) if output_attentions else None)
        return output if return_dict else output.to_tuple()


class SASRecForNextItemPrediction(NextItemPredictionMixin, SASRecPreTrainedModel, GenerationMixin):
    """SASRec with the shared next-item head (cosine scores, sampled or full softmax)."""

    def __init__(self, config: SASRecConfig):
        super().__init__(config)
        self.model = SASRecModel(config)
        self.future_heads = future_heads(config)  # the dense multi-item objective (config.future_items > 1), else None
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        return_logits: bool = False,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> NextItemPredictionOutput:
        """As [`HSTUForNextItemPrediction.forward`]; `timestamps`/`next_timestamps` are accepted and ignored."""
        encoder_kwargs = dict(output_hidden_states=output_hidden_states, output_attentions=kwargs.get("output_attentions"))
        return self._next_item_forward(input_ids, attention_mask, labels, return_logits, encoder_kwargs, return_dict,
                                       kwargs.get("logits_to_keep"))


SASRecConfig.register_for_auto_class()
SASRecModel.register_for_auto_class("AutoModel")
SASRecForNextItemPrediction.register_for_auto_class("AutoModelForCausalLM")

__all__ = ["SASRecPreTrainedModel", "SASRecModel", "SASRecForNextItemPrediction", "SASRecLayer"]
