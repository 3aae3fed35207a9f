"""Issue 41 item 1 on the user-facing paths: a user who has seen all but two items of a small catalog gets those two,
never a seen or repeated item, and is told so once: a field of the served response (uvicorn), a note of
`train.recommend` (fewer rows in its file), a `RecommendationWarning` of the `next-items` pipeline."""

import json
import warnings

import pytest
import torch

from modeling_geniusrec import (
    GeniusRecConfig,
    GeniusRecForSessionGeneration,
    HSTUConfig,
    HSTUForNextItemPrediction,
    ItemTokenizer,
    RecommendationWarning,
)

ITEMS = [f"Film {i} (2001)" for i in range(8)]
SEEN, LEFT = ITEMS[:6], set(ITEMS[6:])


@pytest.fixture(scope="module")
def small_catalog(tmp_path_factory):
    """An HSTU and a GeniusRec checkpoint over 8 items with a window of 20: a history can hold all but two of them."""
    root = tmp_path_factory.mktemp("small-catalog")
    tokenizer = ItemTokenizer.from_raw_ids(ITEMS)
    tokenizer.item_titles = {i: i for i in ITEMS}
    torch.manual_seed(0)
    encoder = HSTUConfig(vocab_size=len(tokenizer), hidden_size=16, qk_head_dim=8, v_head_dim=8, num_attention_heads=2, max_position_embeddings=20)
    models = {"hstu": HSTUForNextItemPrediction(encoder),
              "geniusrec": GeniusRecForSessionGeneration(GeniusRecConfig(encoder_config=encoder, intermediate_size=32, max_session_length=10))}
    for name, model in models.items():
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    return root


@pytest.mark.parametrize("name,options,server_options", [("hstu", {}, {}), ("geniusrec", {"session": True}, {}),
                                                        ("geniusrec", {"session": True}, {"candidate_count": 5})])
def test_served_response_carries_the_two_left_and_a_note(small_catalog, name, options, server_options):
    from .test_serve import Server

    server = Server(small_catalog / name, **server_options)  # candidate_count: the two-stage decode
    try:
        status, data = server.request("POST", "/recommend", {"items": SEEN, "k": 5, **options})
    finally:
        server.stop()
    assert status == 200, data
    answer = json.loads(data)
    assert {i["item_id"] for i in answer["items"]} == LEFT and len(answer["items"]) == 2
    assert any("only 2 items" in note for note in answer["notes"]), answer["notes"]


@pytest.mark.parametrize("name", ["hstu", "geniusrec"])
def test_recommend_command_writes_fewer_rows_and_says_so(small_catalog, tmp_path, capsys, name):
    import pyarrow.json as pj

    from train import recommend as recommend_command

    histories = tmp_path / "histories.jsonl"
    histories.write_text(json.dumps({"user_id": "u1", "items": SEEN}) + "\n" + json.dumps({"user_id": "u2", "items": ITEMS[:2]}) + "\n")
    out = tmp_path / "recs.jsonl"
    recommend_command.main(["--model", str(small_catalog / name), "--histories", str(histories), "--k", "5", "--output", str(out)])
    rows = pj.read_json(out).to_pylist()
    first = [row["item_id"] for row in rows if row["user_id"] == "u1"]
    assert set(first) == LEFT and len(first) == 2 and len([r for r in rows if r["user_id"] == "u2"]) == 5
    assert "only 2 items" in capsys.readouterr().err


def test_pipeline_returns_the_two_left_with_a_warning(small_catalog):
    from transformers import pipeline

    for name in ("hstu", "geniusrec"):
        recommender = pipeline("next-items", model=str(small_catalog / name), trust_remote_code=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            items = recommender({"items": SEEN}, k=5)
        assert {i["item_id"] for i in items} == LEFT and len(items) == 2, name
        assert sum(issubclass(w.category, RecommendationWarning) or "RecommendationWarning" in type(w.message).__name__ for w in caught) == 1
