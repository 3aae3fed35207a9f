"""Refactors move no number: fixed tiny models' losses, logits and beams, recorded in tests/data/golden_outputs.json
before the house renovation (issue 29) and compared after every change.

Re-record only for a change meant to move numbers: `GENIUSREC_WRITE_GOLDEN=1 pytest tests/test_golden_outputs.py`.
"""

import json
import os

import pytest
import torch

from modeling_geniusrec import HSTUConfig, HSTUForNextItemPrediction

from .test_geniusrec import batch, tiny

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "golden_outputs.json")


def summary(tensor: torch.Tensor) -> list[float]:
    """Sum, absolute sum and three fixed entries: a change anywhere in the tensor moves at least one of them."""
    flat = tensor.detach().double().flatten()
    picks = [flat[0], flat[len(flat) // 2], flat[-1]]
    return [float(flat.sum()), float(flat.abs().sum())] + [float(p) for p in picks]


def outputs() -> dict:
    values = {}
    hist, ts, labels = batch()
    times = {"timestamps": ts, "next_timestamps": ts[:, -1] + 60}
    for name, kwargs in {"text_image": {}, "id_only": {"text": 0, "image": 0},
                         "set_and_encoder_loss": {"session_set_loss_weight": 1.0, "encoder_loss_weight": 0.5}}.items():
        model = tiny(**kwargs)
        out = model(input_ids=hist, attention_mask=torch.ones_like(hist), labels=labels, **times)
        values[f"{name}.loss"] = [float(out.loss)]
        values[f"{name}.logits"] = summary(out.logits)
        rows = torch.cat([hist, torch.ones(3, 1, dtype=torch.long), labels], dim=1)  # history, [SEP], session
        row_times = torch.cat([ts, torch.zeros(3, labels.shape[1] + 1, dtype=torch.long)], dim=1)
        packed = model(input_ids=rows, view="packed", timestamps=row_times, next_timestamps=times["next_timestamps"])
        values[f"{name}.packed_logits"] = summary(packed.logits)
        with torch.no_grad():
            beams = model.generate(input_ids=hist, attention_mask=torch.ones_like(hist), num_beams=4, **times,
                                   max_new_tokens=4, min_new_tokens=4)
        values[f"{name}.beams"] = beams.tolist()
    torch.manual_seed(0)
    hstu = HSTUForNextItemPrediction(HSTUConfig(vocab_size=40, hidden_size=16, qk_head_dim=8, v_head_dim=8,
                                                num_attention_heads=2, max_position_embeddings=12,
                                                hidden_dropout_prob=0.0, loss_type="full_softmax")).eval()
    out = hstu(input_ids=hist, attention_mask=torch.ones_like(hist), labels=hist, **times)
    values["hstu.loss"] = [float(out.loss)]
    with torch.no_grad():
        values["hstu.logits"] = summary(hstu(input_ids=hist, attention_mask=torch.ones_like(hist), return_logits=True, **times).logits)
    return values


def test_outputs_match_the_recorded_ones():
    values = outputs()
    if os.environ.get("GENIUSREC_WRITE_GOLDEN"):
        os.makedirs(os.path.dirname(GOLDEN), exist_ok=True)
        with open(GOLDEN, "w") as f:
            json.dump(values, f, indent=1)
    recorded = json.load(open(GOLDEN))
    assert recorded.keys() == values.keys()
    for key, expected in recorded.items():
        if key.endswith(".beams"):
            assert values[key] == expected, key
        else:
            assert values[key] == pytest.approx(expected, rel=1e-5, abs=1e-6), key
