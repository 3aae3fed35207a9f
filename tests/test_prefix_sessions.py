"""Prefix packing (issue 42 item 2): the decoder trained at many split points of a window from one encoder pass
computes what the one-split-per-encoding path computes, its encoder loss is stage 1's, and its examples never read
past the train view."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from data_scripts.processed import PrefixSessionDataset, SessionCollator
from data_scripts.splits import SequenceStore, split_users

from .test_geniusrec import batch, tiny

SPLITS = torch.tensor([[0, 3, 5], [2, 6, 7], [7, 1, -1]])  # row 0 is padded after position 5; row 2 has two splits


def window_batch():
    hist, ts, _ = batch()
    hist = hist.clone()
    hist[0, 6:] = 0
    g = torch.Generator().manual_seed(5)
    labels = torch.randint(4, 40, (3, 3, 4), generator=g)
    labels[0, 2, 2:] = -100  # a session cut short by the end of the train view: no EOS, padded
    labels[:, :2, 3] = 2  # EOS after three items
    return hist, ts, ts[:, -1] + 60, labels


def test_prefix_packing_equals_one_encoding_per_split():
    """Each packed split's logits equal the seq2seq forward over the prefix alone, with the next event's time as the
    request time (the content experts, their key masks and the time bias included), and the loss is the session loss
    of those logits."""
    model = tiny()
    hist, ts, next_ts, labels = window_batch()
    packed = model(input_ids=hist, attention_mask=hist != 0, timestamps=ts, next_timestamps=next_ts, split_positions=SPLITS,
                   labels=labels)
    reference, gathered = [], []
    for row in range(3):
        for slot in range(3):
            p = int(SPLITS[row, slot])
            if p < 0:
                continue
            request = ts[row, p + 1] if p + 1 < int((hist[row] != 0).sum()) else next_ts[row]
            out = model(input_ids=hist[row : row + 1, : p + 1], timestamps=ts[row : row + 1, : p + 1], next_timestamps=request.view(1),
                        labels=labels[row : row + 1, slot])
            reference.append(out.logits)
            gathered.append(labels[row, slot])
    assert packed.logits.shape == (8, 4, model.config.vocab_size)
    torch.testing.assert_close(packed.logits, torch.cat(reference), atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(packed.loss, model.session_loss(packed.logits, torch.stack(gathered), packed.aux_loss))


def test_prefix_packing_encoder_loss_is_stage_one_loss_by_hand():
    """With encoder_loss_weight, training adds stage 1's loss on the same window: position t predicts
    `encoder_targets[t]` (full softmax here, computed by hand); evaluation leaves it out."""
    model = tiny(text=0, image=0)
    model.config.encoder_config.loss_type = "full_softmax"
    hist, ts, next_ts, labels = window_batch()
    encoder_targets = torch.randint(4, 40, hist.shape, generator=torch.Generator().manual_seed(9)).masked_fill(hist == 0, -100)
    inputs = dict(input_ids=hist, attention_mask=hist != 0, timestamps=ts, next_timestamps=next_ts, split_positions=SPLITS,
                  labels=labels, encoder_targets=encoder_targets)
    model.train()
    plain = model(**inputs).loss
    model.config.encoder_loss_weight = 0.5
    joint = model(**inputs).loss
    states = model.model.encoder(hist, attention_mask=hist != 0, timestamps=ts, next_timestamps=next_ts).last_hidden_state
    items = F.normalize(model.model.encoder.embeddings.item_matrix(), dim=-1)
    scale, special = model.config.encoder_config.logit_scale, model.config.num_special_tokens
    real = encoder_targets != -100
    logits = states[real] @ items[special:].T * scale
    by_hand = F.cross_entropy(logits, encoder_targets[real] - special)
    torch.testing.assert_close(joint, plain + 0.5 * by_hand)
    with pytest.raises(ValueError, match="needs encoder_targets"):
        model(**{**inputs, "encoder_targets": None})
    model.eval()
    torch.testing.assert_close(model(**inputs).loss, plain)


def test_prefix_packing_refuses_splits_outside_the_history_and_mismatched_labels():
    model = tiny(text=0, image=0)
    hist, ts, next_ts, labels = window_batch()
    inputs = dict(input_ids=hist, attention_mask=hist != 0, timestamps=ts, next_timestamps=next_ts)
    with pytest.raises(ValueError, match="at or past its window's last real item"):
        model(**inputs, split_positions=torch.tensor([[0, 3, 6], [2, 6, 7], [7, 1, -1]]), labels=labels)
    with pytest.raises(ValueError, match=r"need labels \(batch_size, P, target_length\)"):
        model(**inputs, split_positions=SPLITS, labels=labels[:, 0])


def store_with_holdouts(users=40, seed=0):
    """Users whose validation and test items (the last two, leave-one-out) carry ids >= 1000: any of them in a
    training example is a leak."""
    rng = np.random.default_rng(seed)
    items, times, offsets = [], [], [0]
    for _ in range(users):
        n = int(rng.integers(3, 30))
        row = rng.integers(4, 500, n)
        row[-2:] = 1000 + rng.integers(0, 100, 2)
        items.append(row)
        times.append(np.arange(n) * 60 + 1000)
        offsets.append(offsets[-1] + n)
    return SequenceStore(list(range(users)), np.asarray(offsets), np.concatenate(items).astype(np.int32), np.concatenate(times))


def test_prefix_examples_never_read_past_the_train_view():
    store = store_with_holdouts()
    data = PrefixSessionDataset(store, max_length=12, target_length=4, eos_token_id=2, prefix_samples=5)
    users, bounds = split_users(store, "train")
    np.random.seed(0)
    for _ in range(5):
        for index in range(len(data)):
            e = data[index]
            items, times = store.row(int(users[index]))
            end = int(bounds[index][0])
            window = items[max(0, end - 13) : end]
            assert np.array_equal(e["input_ids"], window[:-1]) and np.array_equal(e["encoder_targets"], window[1:])
            assert e["next_timestamp"] == times[end - 1]
            assert len(set(e["split_positions"].tolist())) == len(e["split_positions"]) == min(5, len(window) - 1)
            for p, session in zip(e["split_positions"], e["session_labels"]):
                real = session[session != 2] if len(session) == 5 else session
                assert np.array_equal(real, window[p + 1 : p + 5])
                assert (len(session) == 5) == (p + 5 <= len(window) - 1 + 1)  # EOS only when four items followed
            everything = np.concatenate([e["input_ids"], e["encoder_targets"], *e["session_labels"]])
            assert everything.max() < 1000, "a validation or test item reached a training example"
    collated = SessionCollator(0, 2)([data[0], data[1]])
    assert collated["labels"].dim() == 3 and collated["split_positions"].shape == collated["labels"].shape[:2]
    assert collated["encoder_targets"].shape == collated["input_ids"].shape
