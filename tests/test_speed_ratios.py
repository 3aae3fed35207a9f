"""The speed benchmark compares like with like: the plain implementation in benchmarks/ computes the package's numbers
(encoder states, each loss, their gradients), and the faster loss paths give the numbers of the formula they replace."""

import pytest
import torch
import torch.nn.functional as F

from benchmarks import plain_hstu
from benchmarks import speed_ratios as speed
from modeling_geniusrec import modeling_sequential


def test_plain_encoder_equals_package_encoder_outputs_and_gradients():
    ids, times, next_times, _ = speed.random_batch(8, 40)
    model, plain = speed.build(max_position_embeddings=50)
    model.eval(), plain.eval()
    ours = model.model(ids, timestamps=times, next_timestamps=next_times).last_hidden_state
    theirs = plain(ids, times, next_times)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    weights = torch.randn(ours.shape[-1])
    (ours @ weights).sum().backward()
    (theirs @ weights).sum().backward()
    layer = model.model.layers[0]
    torch.testing.assert_close(layer.uvqk.weight.grad, plain.uvqk[0].grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(layer.relative_bias.time_bias_weight.grad, plain.time_bias[0].grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(model.model.embeddings.item_embeddings.weight.grad, plain.item.grad, atol=1e-5, rtol=1e-4)


def _old_loss(hidden, table, labels, kind, negatives, scale, num_special=4):
    """Yesterday's formula: each gathered negative normalised on its own."""
    keep = labels != -100
    h, targets = hidden[keep], labels[keep]
    if kind == "full":
        return F.cross_entropy(h @ F.normalize(table[num_special:], dim=-1).T * scale, targets - num_special)
    positive = (h * F.normalize(table, dim=-1)[targets]).sum(-1, keepdim=True) * scale
    if kind == "shared":
        negative, hits = h @ F.normalize(table[negatives], dim=-1).T * scale, negatives.unsqueeze(0) == targets.unsqueeze(1)
    else:
        negative = torch.einsum("pd,pkd->pk", h, F.normalize(table[negatives], dim=-1)) * scale
        hits = negatives == targets.unsqueeze(1)
    return F.cross_entropy(torch.cat([positive, negative.masked_fill(hits, float("-inf"))], 1), torch.zeros_like(targets))


@pytest.mark.parametrize("name", sorted(speed.LOSSES))
@pytest.mark.parametrize("dense", [True, False])
def test_losses_equal_plain_and_old_formula(name, dense, monkeypatch):
    """Every loss (both per-position paths: dense scores + gather on small catalogs, gathered vectors on large ones)
    equals the plain implementation's and the old per-negative-normalising formula's, values and gradients."""
    monkeypatch.setattr(modeling_sequential, "DENSE_NEGATIVES_FACTOR", 10**6 if dense else 0)
    loss_type, sharing, k, kind = speed.LOSSES[name]
    _, _, _, labels = speed.random_batch(8, 40)
    hidden = F.normalize(torch.randn(8, 40, 50), dim=-1)
    model, _ = speed.build(loss_type=loss_type, negatives_sharing=sharing, num_negatives=k)
    table = model.get_output_embeddings().weight
    positions = int((labels != -100).sum())
    values, grads = [], []
    for fn in ("package", "plain", "old"):
        h = hidden.clone().requires_grad_()
        torch.manual_seed(3)
        if fn == "package":
            loss = model.next_item_loss(h, labels)
        else:
            negatives = speed.negatives_for(kind, positions, k, model.config.vocab_size)
            loss = (plain_hstu.plain_loss if fn == "plain" else _old_loss)(h, table, labels, kind, negatives, model.config.logit_scale)
        loss.backward()
        values.append(loss.detach())
        grads.append(h.grad)
    for value, grad in zip(values[1:], grads[1:]):
        torch.testing.assert_close(values[0], value, atol=1e-5, rtol=0)
        torch.testing.assert_close(grads[0], grad, atol=1e-5, rtol=1e-4)


def test_speed_ratio_script_runs(tmp_path):
    out = tmp_path / "ratios.json"
    results = speed.main(["--repeats", "1", "--batch_size", "4", "--length", "16", "--output", str(out)])
    assert {"encoder", "sampled_position", "sampled_shared", "full"} <= set(results) and all(results[k] > 0 for k in speed.LOSSES)
