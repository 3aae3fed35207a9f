"""The dense multi-item objective (issue 42): at every position t, the items at t+1 .. t+k of the training window,
the further ones through their own heads. Its loss equals a hand computation; its targets never come from beyond
the train view; ranking and evaluation losses are the next-item ones."""

import os

import pytest
import torch
import torch.nn.functional as F

from modeling_geniusrec import HSTUConfig, HSTUForNextItemPrediction
from modeling_geniusrec.modeling_sequential import future_labels

from .test_pretrain import TINY


def tiny_model(k: int, weight: float = 0.5) -> HSTUForNextItemPrediction:
    torch.manual_seed(0)
    config = HSTUConfig(vocab_size=16, hidden_size=8, qk_head_dim=4, v_head_dim=4, max_position_embeddings=6, hidden_dropout_prob=0.0,
                        loss_type="full_softmax", use_time_bias=False, use_next_event_time=False, future_items=k, future_loss_weight=weight)
    model = HSTUForNextItemPrediction(config)
    if k > 1:
        with torch.no_grad():
            model.future_heads.weight.normal_()  # not the identity: each offset its own map
    return model


def test_future_labels_read_only_the_labels_ahead():
    labels = torch.tensor([[5, 6, 7, 8, -100, -100], [9, 10, 11, -100, -100, -100]])  # (B, N + 1), N = 5
    assert future_labels(labels, 5, 1).tolist() == [[6, 7, 8, -100, -100], [10, 11, -100, -100, -100]]
    assert future_labels(labels, 5, 3).tolist() == [[8, -100, -100, -100, -100], [-100, -100, -100, -100, -100]]
    with pytest.raises(ValueError, match="offset must be >= 1"):
        future_labels(labels, 5, 0)


def test_loss_equals_a_hand_computed_value():
    """Next-item cross-entropy at every position plus 0.5 x the mean over offsets 2 and 3 of the same loss through
    each offset's head, computed position by position."""
    model = tiny_model(k=3).train()
    ids = torch.tensor([[4, 5, 6, 7, 8, 0], [9, 10, 11, 12, 0, 0]])
    labels = torch.tensor([[4, 5, 6, 7, 8, 13, -100], [9, 10, 11, 12, 14, -100, -100]])
    loss = model(input_ids=ids, labels=labels).loss
    hidden = model.model(input_ids=ids).last_hidden_state
    items = model.item_vectors()[4:]  # the item rows, unit-normalised
    per_offset = []
    for offset in (1, 2, 3):
        terms = []
        for b in range(2):
            for t in range(ids.shape[1]):
                if t + offset >= labels.shape[1] or labels[b, t + offset] == -100:
                    continue
                state = hidden[b, t] if offset == 1 else F.normalize(model.future_heads.weight[offset - 2] @ hidden[b, t], dim=0)
                logits = 20.0 * items @ state
                terms.append(-torch.log_softmax(logits, 0)[labels[b, t + offset] - 4])
        per_offset.append(torch.stack(terms).mean())
    expected = per_offset[0] + 0.5 * (per_offset[1] + per_offset[2]) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    model.eval()  # evaluation: the next-item loss only (its labels hold the evaluated item alone)
    assert model(input_ids=ids, labels=labels).loss.item() == pytest.approx(per_offset[0].item(), rel=1e-5)
    assert tiny_model(k=1).future_heads is None


def write_held_out_sentinels(folder, users=30, items=20, length=14):
    """Every user walks through common items, then ends with the same two items 98 and 99, the validation and test
    targets of every user: in no train view."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "ratings.dat"), "w") as f:
        for u in range(1, users + 1):
            walk = [(u + step) % items + 1 for step in range(length)] + [98, 99]
            f.writelines(f"{u}::{item}::5::{1000 + 100 * step}\n" for step, item in enumerate(walk))
    with open(os.path.join(folder, "movies.dat"), "w") as f:
        f.writelines(f"{m}::Movie {m} (2000)::Drama\n" for m in [*range(1, items + 1), 98, 99])


def test_no_target_comes_from_beyond_the_train_view(tmp_path, monkeypatch):
    """A real `train.pretrain --future_items 4` run records every target its losses see in training: the held-out
    items (each user's validation and test targets, in no train view) never appear, and the further offsets ran."""
    from data_scripts import movielens
    from data_scripts.processed import load_processed
    from modeling_geniusrec import modeling_sequential
    from train import pretrain

    write_held_out_sentinels(tmp_path / "raw")
    movielens.main(["--raw_dir", str(tmp_path / "raw"), "--out", str(tmp_path / "data")])
    tokenizer = load_processed(str(tmp_path / "data"))[2]
    held_out = set(tokenizer.encode_items(["98", "99"]))
    seen, real = [], modeling_sequential.next_item_loss

    def recording(config, hidden, labels, *args, **kwargs):
        if hidden.requires_grad:  # training steps (evaluation runs under no_grad)
            seen.append(labels[labels != -100].tolist())
        return real(config, hidden, labels, *args, **kwargs)

    monkeypatch.setattr(modeling_sequential, "next_item_loss", recording)
    pretrain.main(["--dataset", str(tmp_path / "data"), "--output_dir", str(tmp_path / "run"), *TINY, "--num_train_epochs", "2",
                   "--future_items", "4", "--evaluate_test", "false"])
    targets = {item for call in seen for item in call}
    assert targets and not targets & held_out, sorted(targets & held_out)
    assert len(seen) >= 4 * 2  # the next item and offsets 2, 3, 4 at every step
    saved = HSTUForNextItemPrediction.from_pretrained(tmp_path / "run")
    assert saved.config.future_items == 4 and saved.future_heads.weight.shape == (3, 16, 16)
    from benchmarks import prefix_cost  # its cost per step against stage 1 (the same model without its future heads)

    before = len(seen)
    cost = prefix_cost.main(["--dataset", str(tmp_path / "data"), "--encoder", str(tmp_path / "run"), "--dense", str(tmp_path / "run"),
                             "--prefix", "", "--steps", "1", "--warmup", "0", "--batch_size", "2"])
    assert [row["variant"] for row in cost["rows"]] == ["stage 1 (per position)", "stage 1 + dense objective, k = 4, weight 1"]
    assert len(seen) - before == 1 + 4  # one training step each: stage 1 scores the next item only, the dense variant 4 offsets
