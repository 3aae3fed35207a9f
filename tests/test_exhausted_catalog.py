"""The rule for exhausted catalogs on the model API (issue 41): never a banned, seen or repeated item. `top_k_items`
fills the slots no eligible item can fill with the pad id at -inf (and warns); `generate()` refuses, in one line naming
the caller's row and how many items remain, a session that could only be filled with seen or repeated items
(`modeling_geniusrec.recommend` returns shorter lists instead: tests/test_recommendation.py)."""

import pytest
import torch

from modeling_geniusrec import GeniusRecConfig, GeniusRecForSessionGeneration, HSTUConfig, HSTUForNextItemPrediction

VOCAB = 4 + 20  # 20 items: ids 4..23


def models():
    torch.manual_seed(0)
    encoder = HSTUConfig(vocab_size=VOCAB, hidden_size=16, qk_head_dim=8, v_head_dim=8, num_attention_heads=2, max_position_embeddings=20)
    geniusrec = GeniusRecForSessionGeneration(GeniusRecConfig(encoder_config=encoder, intermediate_size=32, max_session_length=10)).eval()
    return HSTUForNextItemPrediction(encoder).eval(), geniusrec


def seen_all_but(count: int):
    """A history holding every item but the last `count` (the encoder reads the latest 15; all of them are banned)."""
    seen = torch.arange(4, VOCAB - count).unsqueeze(0)
    window = seen[:, -15:]
    times = torch.arange(window.shape[1]).unsqueeze(0) * 60
    return seen, {"input_ids": window, "attention_mask": window != 0, "timestamps": times, "next_timestamps": times[:, -1] + 60}


def test_top_k_never_returns_an_excluded_item():
    hstu, _ = models()
    seen, batch = seen_all_but(3)
    users = hstu(**batch).user_embeddings
    with pytest.warns(UserWarning, match="fewer eligible items than k"):
        scores, ids = hstu.top_k_items(users, k=10, exclude=seen)
    assert set(ids[0, :3].tolist()) == {21, 22, 23} and ids[0, 3:].tolist() == [0] * 7
    assert torch.isneginf(scores[0, 3:]).all() and torch.isfinite(scores[0, :3]).all()


@pytest.mark.parametrize("path", ["hstu", "full", "two-stage", "alternatives"])
def test_generate_refuses_sessions_longer_than_the_unseen_items(path):
    hstu, geniusrec = models()
    seen, batch = seen_all_but(5)
    twice = {k: torch.cat([v, v]) for k, v in batch.items()}  # row 0 is fine below, row 1 too short
    if path == "hstu":
        with pytest.raises(ValueError, match="row 0 has only 5 items outside its history"):
            hstu.generate(**batch, banned_item_ids=seen, num_beams=2, max_new_tokens=10)
        assert hstu.generate(**batch, banned_item_ids=seen, num_beams=2, max_new_tokens=5).shape[1] == 15 + 5
        return
    options = {"num_beams": 3, "max_new_tokens": 10, "min_new_tokens": 10}
    if path == "two-stage":
        options["candidate_count"] = 13
    if path == "alternatives":
        options.update(max_new_tokens=3, min_new_tokens=3, num_return_sequences=2, shared_item_penalty=float("inf"))
    banned = seen.repeat(2, 1)  # row 0 bans 5 items below (15 unseen), row 1 all 15 seen (5 unseen)
    banned[0, 5:] = 0
    if path == "alternatives":
        banned[0] = seen[0]  # 5 unseen: 2 sessions of 3 that share no item cannot be filled
    with pytest.raises(ValueError, match="row 1 has only 5 items" if path != "alternatives" else "row 0 has only 5 items"):
        geniusrec.generate(**twice, banned_item_ids=banned, **options)
    fits = {**options, "max_new_tokens": 5, "min_new_tokens": 5} if path != "alternatives" else {**options, "max_new_tokens": 2, "min_new_tokens": 2}
    if path == "two-stage":
        fits["candidate_count"] = 8
    out = geniusrec.generate(**batch, banned_item_ids=seen, **fits)
    assert not set(out[:, 1:].flatten().tolist()) & set(seen[0].tolist())


def test_generate_names_the_caller_s_row_and_refuses_a_too_long_history():
    hstu, geniusrec = models()
    _, batch = seen_all_but(3)
    empty = {k: torch.cat([v, v]) for k, v in batch.items()}
    empty["attention_mask"] = empty["attention_mask"].clone()
    empty["attention_mask"][1] = False
    for model in (hstu, geniusrec):
        with pytest.raises(ValueError, match=r"rows \[1\] of the batch have an empty history"):
            model.generate(**empty, num_beams=4, max_new_tokens=2, min_new_tokens=2)
    long = {"input_ids": torch.arange(4, 24).repeat(1, 2)[:, :22], "timestamps": torch.arange(22).unsqueeze(0), "next_timestamps": torch.tensor([30])}
    with pytest.raises(ValueError, match="more than the model reads"):
        hstu.generate(**long, max_new_tokens=2)
