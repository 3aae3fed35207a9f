"""Growing the catalog on every model class: new items added, old items' scores unchanged, save and reload."""

import pytest
import torch

from modeling_geniusrec import (
    GeniusRecConfig,
    GeniusRecForSessionGeneration,
    GeniusRecModel,
    HSTUConfig,
    HSTUForNextItemPrediction,
    ItemTokenizer,
    SASRecConfig,
    SASRecForNextItemPrediction,
)

VOCAB = 24


def make(kind):
    torch.manual_seed(0)
    if kind == "hstu":
        return HSTUForNextItemPrediction(HSTUConfig(vocab_size=VOCAB, hidden_size=8, qk_head_dim=4, v_head_dim=4, max_position_embeddings=8))
    if kind == "sasrec":
        return SASRecForNextItemPrediction(SASRecConfig(vocab_size=VOCAB, hidden_size=8, max_position_embeddings=8, intermediate_size=8))
    encoder = HSTUConfig(vocab_size=VOCAB, hidden_size=8, qk_head_dim=4, v_head_dim=4, max_position_embeddings=8)
    config = GeniusRecConfig(encoder_config=encoder, num_attention_heads=2, intermediate_size=8, max_session_length=4,
                             content_embedding_dims={"text": 6})
    model = (GeniusRecModel if kind == "geniusrec-base" else GeniusRecForSessionGeneration)(config)
    base = model if kind == "geniusrec-base" else model.model
    base.set_item_embeddings("text", torch.randn(VOCAB, 6))
    return model


def item_table(model):
    return model.get_input_embeddings().weight


@pytest.mark.parametrize("kind", ["hstu", "sasrec", "geniusrec", "geniusrec-base"])
def test_add_items_keeps_old_items_and_saves(kind, tmp_path):
    model = make(kind).eval()
    before = item_table(model).detach().clone()
    ts = torch.tensor([[10, 20, 30, 40]])
    request = torch.tensor([50])
    scores_before = None
    if hasattr(model, "iter_item_scores"):
        user = torch.nn.functional.normalize(torch.randn(2, 8), dim=-1)
        scores_before = torch.cat([s for _, s in model.iter_item_scores(user)], dim=1)
    model.add_items(3)
    config = model.config
    assert config.vocab_size == VOCAB + 3 and item_table(model).shape[0] == VOCAB + 3
    assert torch.equal(item_table(model)[:VOCAB], before)  # old rows bit for bit
    if kind.startswith("geniusrec"):
        assert config.encoder_config.vocab_size == VOCAB + 3
        base = model if kind == "geniusrec-base" else model.model
        assert base.text_embeddings.shape == (VOCAB + 3, 6)
    if scores_before is not None:
        scores_after = torch.cat([s for _, s in model.iter_item_scores(user)], dim=1)
        torch.testing.assert_close(scores_after[:, : scores_before.shape[1]], scores_before, rtol=0, atol=1e-6)
    new_ids = torch.tensor([[4, VOCAB, VOCAB + 1, VOCAB + 2]])  # the encoder accepts the new ids
    if kind in ("hstu", "sasrec"):
        model(new_ids, timestamps=ts, next_timestamps=request)
    else:
        model(input_ids=new_ids, timestamps=ts, next_timestamps=request, decoder_input_ids=torch.tensor([[1, VOCAB]]))
    model.save_pretrained(tmp_path)
    reloaded = type(model).from_pretrained(tmp_path)
    assert reloaded.config.vocab_size == VOCAB + 3 and torch.equal(item_table(reloaded), item_table(model))
    model.resize_token_embeddings(VOCAB + 5)  # the transformers spelling of the same operation
    assert model.config.vocab_size == VOCAB + 5
    with pytest.raises(ValueError, match="removing items"):
        model.resize_token_embeddings(VOCAB)


def test_new_items_start_from_their_content_neighbours():
    model = make("geniusrec").eval()
    text = model.model.text_embeddings
    # a new item whose text equals item 9's: its ID vector is the mean of its nearest old items by text, 9 first
    model.add_items(1, content={"text": text[9:10].clone()}, neighbours=1)
    assert torch.equal(model.get_input_embeddings().weight[VOCAB], model.get_input_embeddings().weight[9])
    assert torch.equal(model.model.text_embeddings[VOCAB], text[9])
    with pytest.raises(ValueError, match="no content tables"):
        model.add_items(1, content={"image": torch.zeros(1, 3)})


def test_tokenizer_add_items_matches_the_model_ids(tmp_path):
    tokenizer = ItemTokenizer.from_raw_ids([f"Movie {i}" for i in range(VOCAB - 4)])
    ids = tokenizer.add_items(["Brand New (2026)", "Another"])
    assert ids == [VOCAB, VOCAB + 1] and tokenizer.decode_items(ids) == ["Brand New (2026)", "Another"]
    tokenizer.save_pretrained(tmp_path)
    reloaded = ItemTokenizer.from_pretrained(tmp_path)
    assert reloaded.encode_items(["Another", "Movie 0"]) == [VOCAB + 1, 4]
    with pytest.raises(ValueError, match="already in the vocabulary"):
        tokenizer.add_items(["Movie 3"])
