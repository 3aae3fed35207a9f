"""The exported stage-1 encoder (issue 39): torch.export with a dynamic batch and history length, saved in the checkpoint
folder, equal to the eager model at lengths 1..max and several batch sizes, and served by train.serve --exported."""

import json

import torch

from modeling_geniusrec import HSTUConfig, HSTUForNextItemPrediction, ItemTokenizer
from modeling_geniusrec.export import load_exported
from train import export
from train.export import parity

from .test_serve import Server


def tiny_hstu(folder):
    raw = [f"item-{i}" for i in range(40)]
    tokenizer = ItemTokenizer.from_raw_ids(raw)
    torch.manual_seed(0)
    model = HSTUForNextItemPrediction(HSTUConfig(vocab_size=len(tokenizer), hidden_size=16, qk_head_dim=8, v_head_dim=8,
                                                 num_attention_heads=2, max_position_embeddings=12)).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model


def test_exported_encoder_matches_eager_at_every_length_and_batch(tmp_path):
    model = tiny_hstu(tmp_path / "hstu")
    worst = export.main(["--model", str(tmp_path / "hstu")])
    assert worst <= 1e-5 and (tmp_path / "hstu" / "encoder.pt2").exists() and (tmp_path / "hstu" / "item_vectors.safetensors").exists()
    module, vectors, scale = load_exported(str(tmp_path / "hstu"))
    assert parity(model, module, range(1, 13), (1, 2, 5, 16), seed=1) <= 1e-5  # every length 1..max, four batch sizes
    assert torch.allclose(vectors, model.item_vectors(0, model.config.vocab_size)) and scale == model.config.logit_scale


def test_serving_with_the_exported_encoder_answers_alike(tmp_path):
    tiny_hstu(tmp_path / "hstu")
    export.main(["--model", str(tmp_path / "hstu")])
    eager, exported = Server(tmp_path / "hstu"), Server(tmp_path / "hstu", exported=True)
    try:
        for items in (["item-1"], ["item-3", "item-7", "item-9"], [f"item-{i}" for i in range(12)]):
            body = {"items": items, "timestamps": list(range(0, 60 * len(items), 60)), "k": 5}
            a, b = (json.loads(server.request("POST", "/recommend", body)[1]) for server in (eager, exported))
            assert [i["item_id"] for i in a["items"]] == [i["item_id"] for i in b["items"]]
    finally:
        eager.stop()
        exported.stop()
