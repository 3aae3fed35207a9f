"""Item content in both stages: item = ID + adapter(content), saved and reloaded; ID dropout; new-item rows; the
cold-items protocol (no cold item ever trained on); the content kNN baseline; preprocessing; image rows that are
missing are never read as real vectors; content carrying new items end to end."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from data_scripts import movielens
from data_scripts.embedders import prepare_content_table
from data_scripts.processed import NextItemDataset, load_processed
from data_scripts.splits import SequenceStore, cold_items, cold_items_store, protocol_store
from modeling_geniusrec import GeniusRecForSessionGeneration, HSTUConfig, HSTUForNextItemPrediction
from train import evaluate, finetune, pretrain
from train.evaluation.baselines import content_knn_metrics

from .fixtures import write_learnable_ml
from .test_embedding import tiny_clip  # noqa: F401 (a fixture)
from .test_pretrain import TINY

VOCAB = 30


def content_hstu(width=6, **overrides):
    config = HSTUConfig(vocab_size=VOCAB, hidden_size=8, qk_head_dim=4, v_head_dim=4, max_position_embeddings=10, hidden_dropout_prob=0.0,
                        content_embedding_dims={"text": width}, **overrides)
    torch.manual_seed(0)
    model = HSTUForNextItemPrediction(config).eval()
    table = torch.randn(VOCAB, width)
    table[:4] = 0  # special tokens have no content
    table[7] = 0  # nor has item 7
    model.set_item_embeddings("text", table)
    return model, table


def inputs():
    ids = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 0, 0]])
    ts = torch.arange(5).repeat(2, 1) * 100 + 1000
    return dict(input_ids=ids, timestamps=ts, next_timestamps=ts[:, -1] + 50)


def test_item_vectors_are_id_plus_adapted_content_and_a_missing_row_adds_nothing():
    model, table = content_hstu()
    emb = model.model.embeddings
    adapter = emb.content_adapters["text"]
    expected = torch.nn.functional.normalize(emb.item_embeddings.weight + adapter(table) * (table.abs().amax(-1, keepdim=True) > 0), dim=-1)
    torch.testing.assert_close(model.item_vectors(), expected)
    torch.testing.assert_close(model.item_vectors(7, 8), torch.nn.functional.normalize(emb.item_embeddings.weight[7:8], dim=-1))
    # the content changes what the model computes: another table, other states
    before = model(**inputs()).user_embeddings
    model.set_item_embeddings("text", torch.randn(VOCAB, 6))
    assert not torch.allclose(model(**inputs()).user_embeddings, before)


def test_content_model_saves_and_loads_identically(tmp_path):
    model, table = content_hstu(content_adapter="mlp")
    model.save_pretrained(tmp_path)
    loaded = HSTUForNextItemPrediction.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(loaded.model.embeddings.content_table("text"), table)
    assert loaded.config.content_embedding_dims == {"text": 6} and loaded.config.content_adapter == "mlp"
    torch.testing.assert_close(loaded(**inputs()).user_embeddings, model(**inputs()).user_embeddings, rtol=0, atol=0)
    torch.testing.assert_close(loaded.item_vectors(), model.item_vectors(), rtol=0, atol=0)


def test_id_dropout_is_one_draw_shared_by_input_and_output_and_off_in_eval():
    model, table = content_hstu(item_id_dropout=0.5)
    model.train()
    torch.manual_seed(3)
    labels = inputs()["input_ids"].masked_fill(inputs()["input_ids"] == 0, -100)
    model(**inputs(), labels=labels)
    keep = model.model.embeddings._id_keep
    assert keep is not None and 0 < int(keep.sum()) < VOCAB
    emb = model.model.embeddings
    dropped = int((keep == 0).nonzero()[0])
    content = emb.content_vectors(torch.tensor([dropped]))[0]
    torch.testing.assert_close(model.item_vectors(dropped, dropped + 1)[0], torch.nn.functional.normalize(content, dim=-1))
    model.eval()
    first, second = model(**inputs()).user_embeddings, model(**inputs()).user_embeddings
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    torch.testing.assert_close(model.item_vectors(), torch.nn.functional.normalize(emb.item_matrix(), dim=-1))


def test_reset_item_ids_gives_new_item_rows():
    model, _ = content_hstu()
    model.reset_item_ids([12, 13])
    assert torch.count_nonzero(model.get_input_embeddings().weight[[12, 13]]) == 0  # content models: the item is its content
    plain = HSTUForNextItemPrediction(HSTUConfig(vocab_size=VOCAB, hidden_size=8, qk_head_dim=4, v_head_dim=4, max_position_embeddings=10))
    weight = plain.get_input_embeddings().weight
    others = [i for i in range(4, VOCAB) if i not in (12, 13)]
    mean = weight[others].mean(0).detach().clone()
    plain.reset_item_ids(torch.tensor([12, 13]))
    torch.testing.assert_close(weight[12], mean)
    torch.testing.assert_close(weight[13], mean)


def test_geniusrec_shares_the_encoder_table_and_keeps_causality(tmp_path):
    stage1, table = content_hstu(width=6)
    stage1.model.embeddings.content_adapters["text"].weight.data.normal_(0, 0.5)
    model = GeniusRecForSessionGeneration.from_encoder_pretrained(stage1, content_embedding_dims={"text": 6}, num_attention_heads=2,
                                                                  intermediate_size=16, max_session_length=5, hidden_dropout_prob=0.0).eval()
    assert model.model.content_table("text").data_ptr() == model.model.encoder.embeddings.content_table("text").data_ptr()
    assert "text" not in model.model.content_output and model.model.own_content_kinds == []
    torch.testing.assert_close(model.model.item_output_matrix(), stage1.item_vectors())  # stage 2 starts as stage 1 scores
    with torch.no_grad():
        for module in model.modules():
            if getattr(module, "zero_init", False):
                module.weight.normal_(0, 0.3)
    labels = torch.tensor([[20, 21, 22, 2], [23, 24, 25, 2]])
    base = model(**inputs(), labels=labels)
    with torch.no_grad():  # the target's own content row (read by the decoder inputs and the text expert) must not reach its state
        model.model.content_table("text")[22] += 3.0
    out = model(**inputs(), labels=labels)
    torch.testing.assert_close(out.last_hidden_state[:, :3], base.last_hidden_state[:, :3], rtol=0, atol=1e-6)
    assert not torch.allclose(out.last_hidden_state[:, 3], base.last_hidden_state[:, 3])
    model.save_pretrained(tmp_path)
    loaded = GeniusRecForSessionGeneration.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(loaded(**inputs(), labels=labels).logits, out.logits, rtol=0, atol=1e-5)


def test_missing_image_rows_are_never_read_as_vectors():
    from .test_geniusrec import VOCAB as GV
    from .test_geniusrec import batch, tiny

    model = tiny()
    hist, ts, labels = batch()
    spare = next(i for i in range(4, 24) if i not in hist.tolist()[0] + hist.tolist()[1] + hist.tolist()[2])  # in no history or session
    with torch.no_grad():
        for module in model.model.content_output.modules():  # a trained LayerNorm has a bias: LN(0) would be a real vector
            if isinstance(module, torch.nn.LayerNorm):
                module.bias.normal_(0, 1.0)
        model.model.image_embeddings[hist[0, 2]] = 0.0  # this history item has no image
        model.model.image_embeddings[spare] = 0.0  # nor has this item
    encoded = model.model.encode(hist, timestamps=ts, next_timestamps=ts[:, -1] + 60)
    assert encoded["expert_image_mask"][0, 2] == 0 and encoded["expert_image_mask"][0, 1] == 1
    assert bool((encoded["expert_text_mask"] == 1).all())
    text_part = model.model.content_output["text"](model.model.text_embeddings[spare : spare + 1])
    ids_only = model.model.encoder.embeddings.item_matrix(spare, spare + 1) + text_part
    torch.testing.assert_close(model.model.item_output_matrix(spare, spare + 1), torch.nn.functional.normalize(ids_only, dim=-1))
    # the image-less history item's image row is not read: any other absent-looking row gives the same output
    base = model(input_ids=hist, timestamps=ts, next_timestamps=ts[:, -1] + 60, labels=labels).logits
    other = hist.clone()
    other[0, 2] = spare  # another item without an image, with the same text and ID rows copied in
    with torch.no_grad():
        model.model.text_embeddings[spare] = model.model.text_embeddings[hist[0, 2]]
        model.model.encoder.embeddings.item_embeddings.weight[spare] = model.model.encoder.embeddings.item_embeddings.weight[hist[0, 2]]
    again = model(input_ids=other, timestamps=ts, next_timestamps=ts[:, -1] + 60, labels=labels).logits
    keep = torch.ones(GV, dtype=torch.bool)
    keep[[spare, int(hist[0, 2])]] = False
    torch.testing.assert_close(again[..., keep], base[..., keep], rtol=0, atol=1e-5)


def test_prepare_content_table():
    g = torch.Generator().manual_seed(0)
    table = torch.randn(50, 5, generator=g) @ torch.randn(5, 5, generator=g) + 4.0  # correlated, off-centre
    table[:4] = 0
    white = prepare_content_table(table, "whiten")
    rows = white[4:].double()
    cov = (rows - rows.mean(0)).T @ (rows - rows.mean(0)) / (rows.shape[0] - 1)
    torch.testing.assert_close(cov / cov.diagonal().mean(), torch.eye(5, dtype=torch.float64), atol=1e-4, rtol=0)  # isotropic
    assert torch.count_nonzero(white[:4]) == 0 and float(white[4:].norm(dim=-1).mean()) == pytest.approx(1.0, abs=1e-5)
    centred = prepare_content_table(table, "center")
    assert float(centred[4:].mean(0).abs().max()) < 1e-5
    shrunk = prepare_content_table(table, "shrink", shrink=1.0)
    spread = lambda x: torch.linalg.eigvalsh(torch.cov(x[4:].T.double()))  # noqa: E731
    ratio = lambda x: float(spread(x).max() / spread(x).min())  # noqa: E731
    assert ratio(white) < ratio(shrunk) < ratio(centred)  # shrinking sits between whitening and centring
    with pytest.raises(ValueError, match="preprocessing"):
        prepare_content_table(table, "pca")


def test_content_knn_equals_hand_computed(tmp_path):
    write_learnable_ml(tmp_path / "raw", users=12, items=10, length=6)
    movielens.main(["--raw_dir", str(tmp_path / "raw"), "--out", str(tmp_path / "data")])
    sequences, _, tokenizer, _ = load_processed(str(tmp_path / "data"))
    view = NextItemDataset(SequenceStore.from_dataset(sequences), "test", 10)
    table = torch.randn(len(tokenizer), 3)
    table[:4] = 0
    metrics = content_knn_metrics(table, view, last=2)
    items = torch.nn.functional.normalize(table, dim=-1)
    ranks = []
    for i in range(len(view)):
        ex = view[i]
        query = torch.nn.functional.normalize(table[torch.as_tensor(ex["input_ids"][-2:], dtype=torch.long)].mean(0), dim=0)
        scores = (items @ query).tolist()
        target, seen = int(ex["target"]), set(int(x) for x in ex["seen_items"])
        ranks.append(sum(1 for j in range(4, len(tokenizer)) if j != target and j not in seen and scores[j] >= scores[target]))
    ranks = np.asarray(ranks)
    assert metrics["hr@10"] == pytest.approx(float((ranks < 10).mean()))
    assert metrics["mrr"] == pytest.approx(float((1 / (ranks + 1)).mean()))


def test_cold_items_protocol_never_trains_on_a_cold_item():
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 30, size=200)
    items = np.concatenate([rng.choice(np.arange(4, 104), size=n, replace=False) for n in lengths]).astype(np.int32)
    store = SequenceStore(user_ids=[str(u) for u in range(200)], offsets=np.concatenate([[0], np.cumsum(lengths)]),
                          item_ids=items, timestamps=np.arange(len(items), dtype=np.int64))
    cold = cold_items(104)
    assert len(cold) == 10 and np.array_equal(cold, cold_items(104)) and cold.min() >= 4  # fixed, seeded, 10% of the items
    derived = protocol_store(store, "cold-items", 104)
    assert np.array_equal(derived.cold_items, cold)
    for split in ("train", "validation"):
        view = NextItemDataset(derived, split, 50, "cold-items")
        for i in range(len(view)):
            ex = view[i]
            seen = np.concatenate([ex["input_ids"], ex["labels"] if split == "train" else [ex["target"]]])
            assert not np.isin(seen, cold).any(), (split, i)
    test = NextItemDataset(derived, "test", 50, "cold-items")
    expected = [u for u in range(200) if store.row(u)[0][-1] in cold and (~np.isin(store.row(u)[0][:-1], cold)).sum() >= 1]
    assert list(test.users) == expected and len(expected) > 0
    for i in range(len(test)):
        ex = test[i]
        user_items = store.row(int(test.users[i]))[0]
        assert ex["target"] == user_items[-1] and list(ex["seen_items"]) == [x for x in user_items[:-1] if x not in cold]
    with pytest.raises(ValueError, match="protocol_store"):
        NextItemDataset(store, "test", 50, "cold-items")
    # stage 2's examples and the preference pairs' prompts and references: no cold item either
    from data_scripts.processed import SessionTrainingDataset
    from train.build_preference_pairs import pair_users, reference_examples

    np.random.seed(0)
    sessions = SessionTrainingDataset(derived, 50, 5, "cold-items", 2, samples_per_user=20)
    for i in range(len(sessions)):
        ex = sessions[i]
        assert not np.isin(np.concatenate([ex["input_ids"], ex["session_labels"]]), cold).any()
    for ex in reference_examples(derived, pair_users(derived, "cold-items", 10, 5, num_users=100, seed=0), 5, 50):
        assert not np.isin(np.concatenate([ex["input_ids"], ex["reference"]]), cold).any()
    with pytest.raises(ValueError, match="streaming"):
        from data_scripts.processed import streaming_train_examples

        streaming_train_examples(None, 50, "cold-items")
    assert cold_items_store(store, cold).item_ids.size < store.item_ids.size


@pytest.fixture(scope="module")
def content_data(tmp_path_factory):
    """The learnable walk (item i -> i + 1) with a text table in which item i's vector encodes i smoothly, so that content
    predicts the next item even for items never trained on."""
    root = tmp_path_factory.mktemp("content")
    write_learnable_ml(root / "raw", users=300, items=200, length=20)
    movielens.main(["--raw_dir", str(root / "raw"), "--out", str(root / "data")])
    _, items, tokenizer, _ = load_processed(str(root / "data"))
    table = torch.zeros(len(tokenizer), 8)
    for token, raw in zip(items["id"], items["raw_id"]):
        angle = 2 * np.pi * (int(raw) - 1) / 200
        table[token] = torch.tensor([np.cos(k * angle) for k in (1, 2, 3, 4)] + [np.sin(k * angle) for k in (1, 2, 3, 4)])
    (root / "data" / "embeddings").mkdir()
    save_file({"embeddings": table}, str(root / "data" / "embeddings" / "text-walk.safetensors"), metadata={"model": "fixture"})
    return root


def test_content_carries_cold_items_end_to_end(content_data):
    data = str(content_data / "data")
    common = ["--dataset", data, "--protocol", "cold-items", "--num_train_epochs", "8", *TINY]
    ids = pretrain.main([*common, "--output_dir", str(content_data / "ids")])["metrics"]["test"]
    text = pretrain.main([*common, "--output_dir", str(content_data / "text"), "--text_embeddings", "text-walk.safetensors",
                          "--item_id_dropout", "0.2"])["metrics"]["test"]
    knn = evaluate.main(["--baseline", "content_knn", "--dataset", data, "--protocol", "cold-items", "--content_embeddings",
                         "text-walk.safetensors"])
    assert ids["hr@10"] <= 0.05  # ID-only: every cold item gets the same new-item vector, so it can only guess
    assert text["hr@10"] > max(0.3, ids["hr@10"] + 0.25)  # content carries the new items
    again = evaluate.main(["--model", str(content_data / "text"), "--dataset", data, "--protocol", "cold-items"])
    assert again["hr@10"] == pytest.approx(text["hr@10"], abs=1e-9)  # the folder alone scores the same
    assert knn["hr@10"] >= 0.0
    # stage 2 on the content encoder: the encoder's table is shared, and the folder alone loads and generates
    out = content_data / "geniusrec"
    results = finetune.main(["--dataset", data, "--encoder_path", str(content_data / "text"), "--output_dir", str(out), "--protocol",
                             "cold-items", "--use_text_embeddings", "true", "--text_embeddings", "text-walk.safetensors",
                             "--num_train_epochs", "1", "--num_hidden_layers", "1", "--intermediate_size", "16", "--max_length", "20",
                             "--per_device_train_batch_size", "32", "--disable_tqdm", "true"])
    assert results["metrics"]["test"]["hr@10"] > ids["hr@10"]
    model = GeniusRecForSessionGeneration.from_pretrained(out).eval()
    assert model.model.own_content_kinds == [] and model.config.expert_names == ["behaviour", "text"]


def test_image_embeddings_end_to_end_with_a_tiny_clip(tmp_path, tiny_clip):  # noqa: F811 (the imported fixture)
    """data_scripts.embed --image_model on generated images (a third of the items without one), then stage 2 with
    --use_image_embeddings: the missing images are zero rows, never attended, and the folder alone generates."""
    import datasets
    from PIL import Image

    from data_scripts import embed
    from data_scripts.processed import load_item_embeddings

    write_learnable_ml(tmp_path / "raw", users=40, items=30, length=10)
    data = tmp_path / "data"
    movielens.main(["--raw_dir", str(tmp_path / "raw"), "--out", str(data)])
    items = datasets.load_from_disk(str(data / "items"))
    paths = []
    for row, token in enumerate(items["id"]):
        if row % 3 == 2:
            paths.append(None)
            continue
        path = tmp_path / f"poster-{token}.png"
        Image.new("RGB", (40, 40), color=(row * 8 % 256, 255 - row * 8 % 256, 90)).save(path)
        paths.append(str(path))
    items.add_column("image", paths).save_to_disk(str(tmp_path / "items-with-images"))
    import shutil

    shutil.rmtree(data / "items")
    shutil.move(str(tmp_path / "items-with-images"), str(data / "items"))
    embed.main(["--dataset", str(data), "--image_model", tiny_clip, "--batch_size", "8", "--quiet", "true"])
    table, meta = load_item_embeddings(str(data), "image.safetensors")
    present = table.abs().amax(-1) > 0
    assert int(present.sum()) == sum(p is not None for p in paths) and meta["model"] == tiny_clip
    out = tmp_path / "geniusrec"
    finetune.main(["--dataset", str(data), "--output_dir", str(out), "--use_image_embeddings", "true", "--num_train_epochs", "1",
                   "--num_hidden_layers", "1", "--intermediate_size", "16", "--max_length", "10", "--holdout_length", "3",
                   "--target_length", "3", "--per_device_train_batch_size", "16", "--disable_tqdm", "true"])
    model = GeniusRecForSessionGeneration.from_pretrained(out).eval()
    assert model.config.expert_names == ["behaviour", "image"]
    torch.testing.assert_close(model.model.content_table("image"), prepare_content_table(table, "whiten"))  # stage 2's default
    sequences, _, _, _ = load_processed(str(data))
    view = NextItemDataset(SequenceStore.from_dataset(sequences), "test", 10)
    ex = view[0]
    ids = torch.as_tensor(np.asarray(ex["input_ids"], dtype=np.int64)).unsqueeze(0)
    ts = torch.as_tensor(np.asarray(ex["timestamps"], dtype=np.int64)).unsqueeze(0)
    encoded = model.model.encode(ids, timestamps=ts, next_timestamps=torch.tensor([int(ex["next_timestamp"])]))
    assert encoded["expert_image_mask"][0].tolist() == present[ids[0]].long().tolist()  # image-less items are not attended
    session = model.generate(input_ids=ids, timestamps=ts, next_timestamps=torch.tensor([int(ex["next_timestamp"])]), num_beams=2,
                             max_new_tokens=3, min_new_tokens=3)
    assert session.shape == (1, 4)
    # the image expert's gate weight is used: its share of the mix is positive and its output moves the session states
    request = torch.tensor([int(ex["next_timestamp"])])
    labels = torch.as_tensor(np.asarray(ex["target_session"], dtype=np.int64)).unsqueeze(0)
    with torch.no_grad():
        base = model(input_ids=ids, timestamps=ts, next_timestamps=request, labels=labels)
        assert base.gate_weights.shape[-1] == 2 and float(base.gate_weights[..., 1].min()) > 0
        expert = model.model.experts["image"]
        for p in expert.parameters():
            p.add_(0.5)
        moved = model(input_ids=ids, timestamps=ts, next_timestamps=request, labels=labels)
        for p in expert.parameters():
            p.sub_(0.5)
        assert not torch.allclose(moved.last_hidden_state, base.last_hidden_state)
        # an item without an image (a zero row: mask 0) gets no image contribution in its output vector; one with an
        # image does (the image projection is trained away from zero by now)
        first_item = model.config.num_special_tokens
        id_only = torch.nn.functional.normalize(model.model.encoder.embeddings.item_matrix(), dim=-1)
        with_image = model.model.item_output_matrix()
        rows_without = (~present).nonzero().flatten()
        rows_without = rows_without[rows_without >= first_item]
        rows_with = present.nonzero().flatten()
        assert len(rows_without) and len(rows_with)
        torch.testing.assert_close(with_image[rows_without], id_only[rows_without])
        assert not torch.allclose(with_image[rows_with], id_only[rows_with], atol=1e-4)


def test_aggregate_seeds_means_and_spread(tmp_path):
    import json

    from benchmarks import aggregate_seeds as aggregate
    files = []
    for seed, ndcg in ((42, 0.10), (43, 0.14), (44, 0.12)):
        path = tmp_path / f"seed{seed}.json"
        path.write_text(json.dumps({"seed": seed, "commit": "abc", "command": "x", "protocol": "leave-one-out",
                                    "metrics": {"validation": {"ndcg@10": ndcg + 0.01}, "test": {"ndcg@10": ndcg, "hr@10": 2 * ndcg}}}))
        files.append(str(path))
    out = aggregate.main(["--output", str(tmp_path / "all.json"), *files])
    assert out["metrics"]["test"]["ndcg@10"] == pytest.approx(0.12) and out["metrics_std"]["test"]["ndcg@10"] == pytest.approx(0.02)
    assert [row["seed"] for row in out["seeds"]] == [42, 43, 44] and out["protocol"] == "leave-one-out"
    with pytest.raises(SystemExit, match="duplicate"):
        aggregate.main(["--output", str(tmp_path / "bad.json"), files[0], files[0]])


@pytest.mark.parametrize("loss", ["full_softmax", "sampled_softmax"])
def test_items_excluded_from_training_are_no_candidates(loss):
    """cold-items: held-out items must not be trained as negatives (a new item never is); the loss does not read them."""
    model, _ = content_hstu(loss_type=loss, num_negatives=20, negatives_sharing="position")
    model.train()
    labels = inputs()["input_ids"].masked_fill(inputs()["input_ids"] == 0, -100)
    cold = [20, 21, 22]

    def loss_value():
        torch.manual_seed(5)
        return float(model(**inputs(), labels=labels).loss)

    model.exclude_items_from_training(cold)
    before = loss_value()
    with torch.no_grad():
        model.get_input_embeddings().weight[cold] += 5.0
    assert loss_value() == pytest.approx(before, abs=1e-6)
    model.exclude_items_from_training(None)
    assert loss_value() != pytest.approx(before, abs=1e-6)  # without the exclusion they are candidates


def test_geniusrec_training_excludes_items_and_cold_validation_filters_them():
    from .test_geniusrec import batch, tiny

    model = tiny()
    hist, ts, labels = batch()
    labels = labels.clamp(max=35)  # items 36 and 37: in no history and no target
    model.exclude_items_from_training([36, 37])
    base = float(model(input_ids=hist, timestamps=ts, next_timestamps=ts[:, -1] + 60, labels=labels).loss)
    with torch.no_grad():
        model.model.get_input_embeddings().weight[[36, 37]] += 5.0
    again = float(model(input_ids=hist, timestamps=ts, next_timestamps=ts[:, -1] + 60, labels=labels).loss)
    assert np.isfinite(base) and again == pytest.approx(base, abs=1e-5)
    model.exclude_items_from_training(None)
    assert float(model(input_ids=hist, timestamps=ts, next_timestamps=ts[:, -1] + 60, labels=labels).loss) != pytest.approx(base, abs=1e-5)
    rng = np.random.default_rng(1)
    lengths = rng.integers(3, 20, size=50)
    items = np.concatenate([rng.choice(np.arange(4, 104), size=n, replace=False) for n in lengths]).astype(np.int32)
    store = protocol_store(SequenceStore(user_ids=[str(u) for u in range(50)], offsets=np.concatenate([[0], np.cumsum(lengths)]),
                                         item_ids=items, timestamps=np.arange(len(items), dtype=np.int64)), "cold-items", 104)
    validation = NextItemDataset(store, "validation", 50, "cold-items")
    filtered = validation.filter_items("full")
    assert all(set(store.cold_items.tolist()) <= set(row.tolist()) for row in filtered)  # not in the catalog before the test


def test_count_confidence_weights_content_by_training_interactions(tmp_path):
    """`content_output_confidence`: item vectors are `normalize(E + sigmoid(a + b log(1 + n)) * P(text))`, so a head item's
    content barely moves it and a tail or new item leans on its content; counts and weights travel with the checkpoint."""
    from modeling_geniusrec.modeling_geniusrec import CountConfidence

    from .test_geniusrec import VOCAB as GV
    from .test_geniusrec import tiny

    model = tiny(image=0, content_output_confidence=True)
    inner = model.model
    counts = torch.zeros(GV)
    counts[4:] = torch.linspace(0, 3000, GV - 4)
    inner.set_item_counts(counts)
    with torch.no_grad():
        inner.content_output["text"][1].weight.normal_(0, 0.01)  # the content projection (ID rows have norm ~0.1), zero-initialised in a fresh model
    text, ids = inner.text_embeddings, inner.encoder.embeddings.item_matrix()
    confidence = torch.sigmoid(CountConfidence.INITIAL_BIAS + CountConfidence.INITIAL_SLOPE * torch.log1p(counts))
    expected = F.normalize(ids + inner.content_output["text"](text) * confidence.unsqueeze(-1), dim=-1)
    torch.testing.assert_close(inner.item_output_matrix(), expected)
    torch.testing.assert_close(inner.item_output_matrix(10, 20), expected[10:20])
    plain = tiny(image=0)  # the same weights without the confidence: content moves every item fully
    plain.load_state_dict(model.state_dict(), strict=False)
    moved = lambda m: (m.model.item_output_matrix() - F.normalize(ids, dim=-1)).norm(dim=-1)  # noqa: E731
    assert moved(model)[-1] < 0.1 * moved(plain)[-1]  # the most interacted item keeps (nearly) its ID vector
    assert moved(model)[4] > 0.9 * moved(plain)[4]  # an item without interactions takes (nearly) all its content
    model.save_pretrained(tmp_path)
    loaded = GeniusRecForSessionGeneration.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(loaded.model.item_log_counts, torch.log1p(counts), rtol=0, atol=0)
    torch.testing.assert_close(loaded.model.item_output_matrix(), inner.item_output_matrix(), rtol=0, atol=0)
    model.add_items(2, content={"text": torch.randn(2, 12)})  # new items: no interactions, full confidence in content
    assert inner.item_log_counts.shape == (GV + 2,) and bool((inner.item_log_counts[GV:] == 0).all())
    with pytest.raises(ValueError, match="non-negative numbers"):
        inner.set_item_counts(torch.zeros(3))
    with pytest.raises(ValueError, match="content_output_confidence=True"):
        plain.model.set_item_counts(counts)


def test_finetune_fills_the_item_counts_from_the_training_split(content_data, capsys):
    from train.evaluation.baselines import item_user_counts

    data = str(content_data / "data")
    out = content_data / "confidence"
    finetune.main(["--dataset", data, "--output_dir", str(out), "--use_text_embeddings", "true", "--text_embeddings", "text-walk.safetensors",
                   "--content_output_confidence", "true", "--content_gate_confidence", "true",
                   "--num_train_epochs", "1", "--num_hidden_layers", "1", "--intermediate_size", "16",
                   "--max_length", "20", "--per_device_train_batch_size", "64", "--evaluate_test", "false", "--disable_tqdm", "true"])
    model = GeniusRecForSessionGeneration.from_pretrained(out)
    sequences, _, tokenizer, _ = load_processed(data)
    store = protocol_store(SequenceStore.from_dataset(sequences), "leave-one-out", len(tokenizer))
    counts, _ = item_user_counts(store, "leave-one-out", 10, model.config.vocab_size)
    assert counts.max() > 10 and model.model.gate_confidence is not None and model.config.content_gate_confidence
    torch.testing.assert_close(model.model.item_log_counts, torch.log1p(torch.as_tensor(counts, dtype=torch.float32)))
    with pytest.raises(SystemExit):
        finetune.main(["--dataset", data, "--output_dir", str(out / "x"), "--content_output_confidence", "true"])
    assert "--content_output_confidence weights content" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        finetune.main(["--dataset", data, "--output_dir", str(out / "y"), "--content_gate_confidence", "true"])
    assert "--content_gate_confidence weighs content experts" in capsys.readouterr().err


def test_gate_count_features_start_as_nothing_read_inputs_only_and_survive_saving(tmp_path):
    """`content_gate_confidence`: the gate adds a zero-initialised map of two count features (the history's mean
    log count, the position's input item's); at zero it is the plain model; the features are computed by hand; a
    session item's count reaches the gate only at the positions after it; cached == uncached; save/load keeps it."""
    from modeling_geniusrec.decoder_layers import count_features

    from .test_geniusrec import VOCAB as GV
    from .test_geniusrec import batch, tiny

    hist, ts, labels = batch()
    inputs = dict(input_ids=hist, timestamps=ts, next_timestamps=ts[:, -1] + 60, labels=labels)
    plain, model = tiny(image=0), tiny(image=0, content_gate_confidence=True)
    model.load_state_dict(plain.state_dict(), strict=False)
    counts = torch.arange(GV, dtype=torch.float32) * 10
    model.model.set_item_counts(counts)
    with torch.no_grad():
        model.model.gate_confidence.weight.zero_()
    torch.testing.assert_close(model(**inputs).logits, plain(**inputs).logits, rtol=0, atol=0)  # zero map: the plain model
    with torch.no_grad():
        model.model.gate_confidence.weight.normal_(0, 3.0)
    out = model(**inputs)
    log_counts = torch.log1p(counts)
    decoder = torch.cat([torch.full((3, 1), model.config.decoder_start_token_id), labels[:, :-1]], dim=1)
    expected = torch.stack([log_counts[hist].mean(1, keepdim=True).expand(decoder.shape), log_counts[decoder]], -1) / 10.0
    encoded = model.model.encode(hist, timestamps=ts, next_timestamps=ts[:, -1] + 60)
    torch.testing.assert_close(count_features(model.model.item_log_counts, encoded["history_log_count"], decoder, 1), expected)
    with torch.no_grad():  # the second session item's count: read from position 2 on (its input), never before
        model.model.item_log_counts[labels[0, 1]] += 5.0
    moved = model(**inputs).gate_weights
    torch.testing.assert_close(moved[0, :2], out.gate_weights[0, :2], rtol=0, atol=0)
    assert not torch.allclose(moved[0, 2], out.gate_weights[0, 2])
    gen = dict(input_ids=hist, timestamps=ts, next_timestamps=ts[:, -1] + 60, num_beams=3, max_new_tokens=4, min_new_tokens=4)
    assert torch.equal(model.generate(**gen), model.generate(**gen, use_cache=False))
    model.save_pretrained(tmp_path)
    loaded = GeniusRecForSessionGeneration.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(loaded(**inputs).gate_weights, moved, rtol=0, atol=0)


def test_item_id_anchor_keeps_text_initialised_rows_near_their_text(content_data, capsys):
    """`--item_id_anchor`: weights 1 / (1 + training count) over items with text (special tokens 0), summing to 1; a
    strong anchor keeps the trained ID rows near their text rows, where an unanchored run moves them away; refused
    without `--item_id_init`."""
    from data_scripts.embedders import pca_rows
    from train.pretrain import anchor_weights

    rows = torch.ones(6, 2)
    rows[4] = 0  # no text
    weights = anchor_weights([0, 0, 0, 0, 9, 1, 3][:6], rows, 4)
    torch.testing.assert_close(weights, torch.tensor([0, 0, 0, 0, 0, 1.0]))  # item 4 has no text: only item 5 is anchored
    weights = anchor_weights([5, 5, 5, 5, 0, 3], torch.ones(6, 2), 4)
    torch.testing.assert_close(weights, torch.tensor([0, 0, 0, 0, 1.0, 0.25]) / 1.25)
    from safetensors.torch import load_file

    data = str(content_data / "data")
    common = ["--dataset", data, "--num_train_epochs", "2", *TINY, "--hidden_size", "8", "--qk_head_dim", "4", "--v_head_dim", "4",
              "--item_id_init", "text-walk.safetensors", "--evaluate_test", "false"]
    text = load_file(str(content_data / "data" / "embeddings" / "text-walk.safetensors"))["embeddings"]
    moved = {}
    for name, extra in (("free", []), ("anchored", ["--item_id_anchor", "100000"])):
        pretrain.main([*common, "--output_dir", str(content_data / f"anchor-{name}"), *extra])
        model = HSTUForNextItemPrediction.from_pretrained(content_data / f"anchor-{name}")
        init = pca_rows(text, 8, model.config.initializer_range)
        moved[name] = (model.get_input_embeddings().weight[4:] - init[4:]).norm(dim=-1).mean().item()
    assert moved["anchored"] < 0.2 * moved["free"], moved
    with pytest.raises(SystemExit):
        pretrain.main(["--dataset", data, "--output_dir", str(content_data / "x"), "--item_id_anchor", "1"])
    assert "--item_id_anchor pulls ID rows" in capsys.readouterr().err
