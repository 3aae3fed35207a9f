"""A plain PyTorch HSTU and its losses, written from the paper's equations for speed comparisons only.

Nothing here is imported from `modeling_geniusrec`: it is the straightforward implementation a reader would write
(one module, no configuration objects, no input checks, no output dataclasses) and the yardstick that
`benchmarks/speed_ratios.py` measures the package against. `PlainHSTU.from_project(model)` copies the weights of a
`HSTUModel` / `HSTUForNextItemPrediction` so the two compute the same numbers (`tests/test_speed_ratios.py`).

Math (Zhai et al., ICML 2024), per block, pre-norm and residual::

    n = LayerNorm(x);  U, V, Q, K = split(SiLU(n W))
    A = SiLU(Q K^T + b_pos(j - i) + b_time(bucket(t_{i+1} - t_j))) / N * mask
    x = x + W_o Dropout(U * LayerNorm(A V)) + b_o

with `bucket(d) = clamp(floor(ln(max(|d|, 1)) / 0.301), 0, 128)`, input `Dropout(E[id] sqrt(D) + P[pos])`, output
the unit-normalised state, scores `cos / temperature`.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


class PlainHSTU(nn.Module):
    def __init__(self, vocab_size, hidden_size=50, num_layers=2, heads=1, qk_dim=50, v_dim=50, max_length=200, num_buckets=128,
                 bucket_scale=0.301, dropout=0.2, eps=1e-6, temperature=0.05, pad_token_id=0, num_special_tokens=4):
        super().__init__()
        self.d, self.h, self.dqk, self.dv, self.n_max = hidden_size, heads, qk_dim, v_dim, max_length
        self.num_buckets, self.bucket_scale, self.p, self.eps = num_buckets, bucket_scale, dropout, eps
        self.scale, self.pad, self.special = 1.0 / temperature, pad_token_id, num_special_tokens
        self.item = nn.Parameter(torch.randn(vocab_size, hidden_size) * 0.02)
        self.pos = nn.Parameter(torch.randn(max_length, hidden_size) * 0.02)
        self.uvqk = nn.ParameterList([nn.Parameter(torch.randn(heads * (2 * v_dim + 2 * qk_dim), hidden_size) * 0.02) for _ in range(num_layers)])
        self.w_o = nn.ParameterList([nn.Parameter(torch.randn(hidden_size, heads * v_dim) * 0.02) for _ in range(num_layers)])
        self.b_o = nn.ParameterList([nn.Parameter(torch.zeros(hidden_size)) for _ in range(num_layers)])
        self.pos_bias = nn.ParameterList([nn.Parameter(torch.randn(2 * max_length - 1) * 0.02) for _ in range(num_layers)])
        self.time_bias = nn.ParameterList([nn.Parameter(torch.randn(num_buckets + 1) * 0.02) for _ in range(num_layers)])

    @classmethod
    def from_project(cls, model):
        """The same weights as a project `HSTUModel` or `HSTUForNextItemPrediction` (for equal outputs)."""
        encoder = getattr(model, "model", model)
        c = encoder.config
        plain = cls(c.vocab_size, c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.qk_head_dim, c.v_head_dim,
                    c.max_position_embeddings, c.num_time_buckets, c.time_bucket_scale, c.hidden_dropout_prob, c.layer_norm_eps,
                    1.0 / c.logit_scale, c.pad_token_id, c.num_special_tokens)
        with torch.no_grad():
            plain.item.copy_(encoder.embeddings.item_embeddings.weight)
            plain.pos.copy_(encoder.embeddings.position_embeddings.weight)
            for i, layer in enumerate(encoder.layers):
                plain.uvqk[i].copy_(layer.uvqk.weight)
                plain.w_o[i].copy_(layer.output.weight)
                plain.b_o[i].copy_(layer.output.bias)
                plain.pos_bias[i].copy_(layer.relative_bias.position_bias_weight)
                plain.time_bias[i].copy_(layer.relative_bias.time_bias_weight)
        return plain.train(model.training)

    def forward(self, input_ids, timestamps, next_timestamps):
        """`(B, N)` right-padded ids and times, `(B,)` request times -> `(B, N, D)` unit-normalised states (zero at
        padding)."""
        B, N = input_ids.shape
        mask = input_ids != self.pad
        pos = torch.arange(N)
        x = self.item[input_ids] * math.sqrt(self.d) + self.pos[pos]
        x = F.dropout(x, self.p, self.training) * mask.unsqueeze(-1)
        # time of each query: the next event's time (the last item: the request time)
        has_next = torch.cat([mask[:, 1:], torch.zeros_like(mask[:, :1])], dim=1)
        t_query = torch.where(has_next, torch.cat([timestamps[:, 1:], timestamps[:, -1:]], dim=1), next_timestamps.view(-1, 1))
        delta = (t_query.unsqueeze(2) - timestamps.unsqueeze(1)).abs().clamp(min=1)
        bucket = (torch.log(delta.double()) / self.bucket_scale).floor().clamp(0, self.num_buckets).long()  # (B, N, N)
        rel = pos.unsqueeze(0) - pos.unsqueeze(1) + self.n_max - 1  # (N, N): j - i
        allowed = torch.ones(N, N, dtype=torch.bool).tril() & mask.unsqueeze(1) & mask.unsqueeze(2)
        for i in range(len(self.uvqk)):
            n = F.layer_norm(x, (self.d,), eps=self.eps)
            u, v, q, k = torch.split(F.silu(n @ self.uvqk[i].T), [self.h * self.dv, self.h * self.dv, self.h * self.dqk, self.h * self.dqk], -1)
            q = q.view(B, N, self.h, self.dqk).transpose(1, 2)
            k = k.view(B, N, self.h, self.dqk).transpose(1, 2)
            v = v.view(B, N, self.h, self.dv).transpose(1, 2)
            scores = q @ k.transpose(-1, -2) + (self.pos_bias[i][rel] + self.time_bias[i][bucket]).unsqueeze(1)
            a = F.silu(scores) / self.n_max * allowed.unsqueeze(1)
            out = (a @ v).transpose(1, 2).reshape(B, N, self.h * self.dv)
            gated = u * F.layer_norm(out, (self.h * self.dv,), eps=self.eps)
            x = (x + F.dropout(gated, self.p, self.training) @ self.w_o[i].T + self.b_o[i]) * mask.unsqueeze(-1)
        return F.normalize(x, dim=-1, eps=1e-6) * mask.unsqueeze(-1)


def plain_loss(hidden, table, labels, kind, negatives=None, scale=20.0, num_special=4):
    """Loss of `(B, N, D)` states against `labels` (-100 ignored), scores `scale * cos` with the `(V, D)` table.

    kind: "full" (softmax over every item), "shared" (`negatives` `(K,)` for all positions) or "position"
    (`negatives` `(P, K)`, one row per supervised position); a sampled negative equal to the target is ignored."""
    keep = labels != -100
    h, targets = hidden[keep], labels[keep]
    items = F.normalize(table, dim=-1)
    if kind == "full":
        return F.cross_entropy(h @ items[num_special:].T * scale, targets - num_special)
    positive = (h * items[targets]).sum(-1, keepdim=True) * scale
    if kind == "shared":
        negative = h @ items[negatives].T * scale
        hits = negatives.unsqueeze(0) == targets.unsqueeze(1)
    else:
        negative = torch.einsum("pd,pkd->pk", h, items[negatives]) * scale
        hits = negatives == targets.unsqueeze(1)
    logits = torch.cat([positive, negative.masked_fill(hits, float("-inf"))], dim=1)
    return F.cross_entropy(logits, torch.zeros_like(targets))
