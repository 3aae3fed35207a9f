"""Stage 2 end to end on the learnable fixture: the decoder ranks the next item, sessions are generated and scored
with the baselines beside them, --freeze_encoder keeps the encoder fixed."""

import json

import pytest
import torch

from data_scripts import movielens
from modeling_geniusrec import GeniusRecForSessionGeneration, HSTUForNextItemPrediction
from train import evaluate, finetune, pretrain

from .fixtures import write_learnable_ml
from .test_pretrain import TINY

DECODER = ["--num_hidden_layers", "1", "--num_attention_heads", "2", "--intermediate_size", "32", "--dropout", "0.0",
           "--max_length", "20", "--learning_rate", "0.005", "--per_device_train_batch_size", "32", "--disable_tqdm", "true",
           "--holdout_length", "5", "--target_length", "5", "--num_beams", "4", "--samples_per_user", "4"]


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    root = tmp_path_factory.mktemp("sessions")
    write_learnable_ml(root / "raw")
    movielens.main(["--raw_dir", str(root / "raw"), "--out", str(root / "data")])
    pretrain.main(["--dataset", str(root / "data"), "--output_dir", str(root / "hstu"), "--num_train_epochs", "4",
                   "--protocol", "sessions", "--holdout_length", "5", *TINY])
    return root


def test_finetune_sessions_end_to_end(stage1):
    out = stage1 / "geniusrec"
    results = finetune.main(["--dataset", str(stage1 / "data"), "--encoder_path", str(stage1 / "hstu"), "--output_dir", str(out),
                             "--protocol", "sessions", "--stage1_baseline", str(stage1 / "hstu"), "--num_train_epochs", "6", *DECODER])
    test = results["metrics"]["test"]
    for key in ("ndcg@10", "hr@10", "session_recall@5", "session_ndcg@5", "ild", "novelty", "coverage", "repetition_rate",
                "perplexity", "eos_nll", "popularity_session_recall@5", "hstu_session_recall@5"):
        assert key in test, key
    assert test["ndcg@10"] > 0.3  # the decoder's first step, on a task where each item predicts the next
    assert test["session_recall@5"] > test["popularity_session_recall@5"]
    assert test["repetition_rate"] == 0.0  # bans: no history item, no repeat
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["protocol"] == "sessions" and on_disk["model"] == "geniusrec"
    again = evaluate.main(["--model", str(out), "--dataset", str(stage1 / "data"), "--protocol", "sessions", "--holdout_length", "5",
                           "--task", "all", "--num_beams", "4", "--batch_size", "33", "--stage1_baseline", str(stage1 / "hstu")])
    assert again["hstu_session_recall@5"] == pytest.approx(test["hstu_session_recall@5"], abs=1e-9)
    for key in ("ndcg@10", "hr@50", "mrr", "session_recall@5", "session_ndcg@5", "novelty", "perplexity"):
        assert again[key] == pytest.approx(test[key], abs=1e-5), key  # evaluate.py reproduces what training reported
    alternatives = evaluate.main(["--model", str(out), "--dataset", str(stage1 / "data"), "--protocol", "sessions", "--holdout_length", "5",
                                  "--task", "sessions", "--num_beams", "4", "--alternatives", "3"])
    assert alternatives["alternatives_shared_item_share"] == 0.0 < alternatives["beams_shared_item_share"]  # the beams' 3 best share items
    assert alternatives["alternatives_first_session_recall@5"] == pytest.approx(test["session_recall@5"], abs=1e-9)  # session 1 = the session
    assert alternatives["alternatives_best_of_3_recall@5"] >= alternatives["alternatives_first_session_recall@5"]
    model = GeniusRecForSessionGeneration.from_pretrained(out)
    assert model.config.is_encoder_decoder
    assert (out / "plots" / "gate_weights.png").stat().st_size > 5000
    assert f"{test['ndcg@10']:.4f}" in (out / "README.md").read_text()


def test_freeze_encoder(stage1, tmp_path):
    results = finetune.main(["--dataset", str(stage1 / "data"), "--encoder_path", str(stage1 / "hstu"), "--output_dir", str(tmp_path),
                             "--freeze_encoder", "true", "--num_train_epochs", "1", "--session_set_loss_weight", "0.5",
                             "--evaluate_test", "false", *DECODER])
    assert "test" not in results["metrics"] and "ndcg@10" in results["metrics"]["validation"]  # variants are chosen on validation
    assert GeniusRecForSessionGeneration.from_pretrained(tmp_path).config.session_set_loss_weight == 0.5
    before = HSTUForNextItemPrediction.from_pretrained(stage1 / "hstu").model.state_dict()
    after = GeniusRecForSessionGeneration.from_pretrained(tmp_path).model.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    decoder_before = GeniusRecForSessionGeneration.from_encoder_pretrained(str(stage1 / "hstu"), num_hidden_layers=1)
    assert decoder_before is not None


def test_the_list_baseline_can_be_the_encoder_inside_a_geniusrec_checkpoint(stage1, tmp_path):
    """`--stage1_baseline <GeniusRec checkpoint>` scores the list of the encoder inside it (the same encoder that
    generates the sessions, after joint training moved it): with the encoder frozen, exactly the stage-1 list."""
    out = tmp_path / "frozen"
    finetune.main(["--dataset", str(stage1 / "data"), "--encoder_path", str(stage1 / "hstu"), "--output_dir", str(out), "--protocol", "sessions",
                   "--freeze_encoder", "true", "--num_train_epochs", "1", "--evaluate_test", "false", *DECODER])
    common = ["--model", str(out), "--dataset", str(stage1 / "data"), "--protocol", "sessions", "--holdout_length", "5", "--task", "sessions",
              "--num_beams", "2"]
    inside = evaluate.main([*common, "--stage1_baseline", str(out)])
    stage1_list = evaluate.main([*common, "--stage1_baseline", str(stage1 / "hstu")])
    for key in ("hstu_session_recall@5", "hstu_session_ndcg@5", "hstu_coverage"):
        assert inside[key] == pytest.approx(stage1_list[key], abs=1e-12), key
    assert inside["hstu_session_recall@5"] > inside["popularity_session_recall@5"]


def test_finetune_picks_up_text_embeddings(stage1, tmp_path):
    from data_scripts.embed import write_embeddings

    vocab = HSTUForNextItemPrediction.from_pretrained(stage1 / "hstu").config.vocab_size
    write_embeddings(str(stage1 / "data" / "embeddings" / "text-test.safetensors"), {"embeddings": torch.randn(vocab, 12)}, {"model": "random"})
    finetune.main(["--dataset", str(stage1 / "data"), "--encoder_path", str(stage1 / "hstu"), "--output_dir", str(tmp_path),
                   "--use_text_embeddings", "true", "--text_embeddings", "text-test.safetensors", "--num_train_epochs", "1", *DECODER])
    model = GeniusRecForSessionGeneration.from_pretrained(tmp_path)
    assert model.config.expert_names == ["behaviour", "text"] and model.config.text_embedding_source == "random"
    assert model.model.text_embeddings.shape == (vocab, 12) and model.model.text_embeddings.abs().sum() > 0


def test_pipeline_fast_mode_end_to_end(tmp_path, capsys):
    from train import pipeline

    write_learnable_ml(tmp_path / "raw", users=60, items=50)
    results = pipeline.main(["--work_dir", str(tmp_path / "work"), "--raw_dir", str(tmp_path / "raw"), "--text_model", "none",
                             "--fast", "--pretrain_epochs", "2", "--finetune_epochs", "1", "--items_per_session", "4", "--num_users", "2"])
    assert set(results) == {"encoder", "geniusrec"}
    assert results["geniusrec"]["hstu_session_recall@10"] >= 0
    out = capsys.readouterr().out
    for words in ("ranking with the encoder (HSTU)", "GeniusRec decoder's first step", "encoder's top-10 list", "GeniusRec generated session",
                  "encoder top-4", "GeniusRec session", "alternative 3", "Movie", "session_ndcg@10"):
        assert words in out, words
    lines = out[out.index("encoder top-4"):].splitlines()[1:5]  # the side-by-side columns: 4 rows, titles in each
    assert len(lines) == 4 and all(line.count("Movie") >= 4 for line in lines), lines


def test_stage1_beam_search_sessions_in_the_session_table(stage1):
    """`train.evaluate --task sessions` on a stage-1 checkpoint: its beam-search session (HSTU `generate()`) is the row,
    its top-k list beside it; generate_sessions returns the view's order though it batches rows by length."""
    from data_scripts.processed import NextItemCollator, NextItemDataset, load_processed
    from data_scripts.splits import SequenceStore
    from train.evaluation.sessions import generate_sessions

    metrics = evaluate.main(["--model", str(stage1 / "hstu"), "--dataset", str(stage1 / "data"), "--protocol", "sessions",
                             "--holdout_length", "5", "--task", "sessions", "--num_beams", "3"])
    for key in ("session_recall@5", "session_ndcg@5", "hstu_session_recall@5", "popularity_session_recall@5", "ild", "coverage"):
        assert key in metrics, key
    assert metrics["repetition_rate"] == 0.0 and "perplexity" not in metrics
    model = HSTUForNextItemPrediction.from_pretrained(stage1 / "hstu").eval()
    sequences, _, _, _ = load_processed(str(stage1 / "data"))
    view = NextItemDataset(SequenceStore.from_dataset(sequences), "test", 20, "sessions", 5)
    view.select(list(range(12)))
    sessions = generate_sessions(model, view, k=3, num_beams=2, batch_size=5, progress=False)
    for row in (0, 7, 11):  # each row alone gives the same session
        batch = NextItemCollator().pad_histories([view[row]], "left")
        alone = model.generate(**batch, banned_item_ids=view.filter_items("full", [row]), num_beams=2, max_new_tokens=3)
        assert sessions[row] == alone[0, batch["input_ids"].shape[1]:].tolist()


def test_session_decodings(stage1):
    """Every decoding gives k distinct, never-seen items per user; `first_step` is the first step's top-k ranking;
    `beam_vote` with one beam is the beam; the vote is a Borda count."""
    from data_scripts.processed import NextItemDataset, load_processed
    from data_scripts.splits import SequenceStore
    from train.evaluation.ranking import query_states
    from train.evaluation.sessions import generate_sessions, vote

    assert vote([[1, 2, 3], [2, 4, 1]], 3) == [2, 1, 4]  # points: 2 -> 2+3, 1 -> 3+1, 4 -> 2, 3 -> 1
    model = GeniusRecForSessionGeneration.from_encoder_pretrained(str(stage1 / "hstu"), num_hidden_layers=1).eval()
    sequences, _, _, _ = load_processed(str(stage1 / "data"))
    view = NextItemDataset(SequenceStore.from_dataset(sequences), "test", 20, "sessions", 5)
    view.select(list(range(9)))
    results = {d: generate_sessions(model, view, k=4, num_beams=3, batch_size=4, decoding=d, num_samples=5, progress=False)
               for d in ("beam", "first_step", "beam_vote", "sample_vote")}
    for decoding, sessions in results.items():
        for row, session in enumerate(sessions):
            assert len(set(session)) == 4 and not set(session) & set(view[row]["seen_items"].tolist()), decoding
            assert all(item >= 4 for item in session), decoding
    from data_scripts.processed import NextItemCollator

    states = query_states(model, NextItemCollator().pad_histories([view[i] for i in range(9)]))
    assert results["first_step"] == model.top_k_items(states, 4, exclude=view.filter_items("full"))[1].tolist()
    one = generate_sessions(model, view, k=4, num_beams=1, batch_size=4, decoding="beam_vote", progress=False)
    assert one == generate_sessions(model, view, k=4, num_beams=1, batch_size=4, decoding="beam", progress=False)
    with pytest.raises(ValueError, match="decoding must be one of"):
        generate_sessions(model, view, decoding="nucleus")
    # first_step with the encoder query: the ranking of state + beta * u, by hand
    from train.evaluation.sessions import popularity_bias

    batch = NextItemCollator().pad_histories([view[i] for i in range(9)])
    user = model.model.encode(**batch).user_embedding
    bias = popularity_bias(torch.arange(model.config.vocab_size).float(), 0.3)  # any per-item bias
    leaned = generate_sessions(model, view, k=4, batch_size=4, decoding="first_step", encoder_query_weight=2.0, item_bias=bias, progress=False)
    assert leaned == model.top_k_items(states + 2.0 * user, 4, exclude=view.filter_items("full"), item_bias=bias)[1].tolist()
    mixed = generate_sessions(model, view, k=4, num_beams=3, batch_size=4, decoding="beam", first_step_weight=1.0, encoder_query_weight=1.0,
                              progress=False)
    assert all(len(set(s)) == 4 and not set(s) & set(view[row]["seen_items"].tolist()) for row, s in enumerate(mixed))
    # the two-stage decode reaches generate(): sessions from each user's candidates only, valid as every decoding
    seen = []
    original = model.generate
    model.generate = lambda **kw: seen.append(kw.get("candidate_count")) or original(**kw)
    few = generate_sessions(model, view, k=4, num_beams=3, batch_size=4, candidate_count=7, progress=False)
    model.generate = original
    assert seen and set(seen) == {7}
    assert all(len(set(s)) == 4 and not set(s) & set(view[row]["seen_items"].tolist()) for row, s in enumerate(few))
    with pytest.raises(ValueError, match="candidate_count is a GeniusRec beam decoding"):
        generate_sessions(model, view, k=4, decoding="first_step", candidate_count=7)


def test_mmr_trades_relevance_for_diversity(stage1):
    """MMR by hand: trade-off 1 is the Borda vote; at 0.5 an item identical to one already picked gives way to a
    less-voted different one; the `mmr` decoding re-ranks the beams' items, raises ILD over beam_vote on the same
    beams, and refuses a run without vectors or with a trade-off outside [0, 1]."""
    from data_scripts.processed import NextItemDataset, load_processed
    from data_scripts.splits import SequenceStore
    from train.evaluation.session_metrics import intra_list_diversity
    from train.evaluation.sessions import generate_sessions, mmr, vote

    vectors = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # items 1 and 2 are the same
    lists = [[1, 2, 3], [2, 1, 4]]  # points: 1 -> 5, 2 -> 5, 3 -> 1, 4 -> 1
    assert mmr(lists, 3, vectors, 1.0) == vote(lists, 3) == [1, 2, 3]
    # at 0.5: after 1, item 2 scores 0.5 * 1 - 0.5 * 1 = 0, item 3 scores 0.5 * 0.2 - 0 = 0.1
    assert mmr(lists, 2, vectors, 0.5) == [1, 3]
    with pytest.raises(ValueError, match="trade-off must be in"):
        mmr(lists, 2, vectors, 1.5)
    model = GeniusRecForSessionGeneration.from_encoder_pretrained(str(stage1 / "hstu"), num_hidden_layers=1).eval()
    sequences, _, _, _ = load_processed(str(stage1 / "data"))
    view = NextItemDataset(SequenceStore.from_dataset(sequences), "test", 20, "sessions", 5)
    view.select(list(range(9)))
    table = torch.randn(model.config.vocab_size, 8, generator=torch.Generator().manual_seed(0))
    common = dict(k=2, num_beams=6, batch_size=4, progress=False, item_vectors=table)  # 2 items: the second is the most distant
    voted = generate_sessions(model, view, decoding="beam_vote", **common)
    assert generate_sessions(model, view, decoding="mmr", mmr_trade_off=1.0, **common) == voted
    diverse = generate_sessions(model, view, decoding="mmr", mmr_trade_off=0.0, **common)
    assert [s[0] for s in diverse] == [s[0] for s in voted]  # the most-voted item first either way
    assert diverse != voted and intra_list_diversity(diverse, table) > intra_list_diversity(voted, table)
    for row, session in enumerate(diverse):
        assert len(set(session)) == 2 and not set(session) & set(view[row]["seen_items"].tolist())
    with pytest.raises(ValueError, match="needs item_vectors"):
        generate_sessions(model, view, decoding="mmr", k=4, num_beams=2, progress=False)


def test_joint_finetuning_trains_the_encoder_at_its_own_rate(stage1, tmp_path):
    """--encoder_learning_rate puts the encoder in its own optimizer group: at 0 the encoder stays as stage 1 left it
    while the decoder trains; with a rate and --encoder_loss_weight it moves. Both need an unfrozen encoder."""
    from safetensors.torch import load_file

    common = ["--dataset", str(stage1 / "data"), "--encoder_path", str(stage1 / "hstu"), "--num_train_epochs", "1",
              "--evaluate_test", "false", *DECODER]
    before = load_file(stage1 / "hstu" / "model.safetensors")

    def encoder_moved(out):
        after = load_file(out / "model.safetensors")
        return max(float((after["model.encoder." + k[len("model."):]] - v).abs().max()) for k, v in before.items() if k.startswith("model."))

    still = finetune.main([*common, "--output_dir", str(tmp_path / "still"), "--encoder_learning_rate", "0", "--encoder_loss_weight", "1",
                           "--max_length", "500"])
    assert encoder_moved(tmp_path / "still") == 0.0
    assert still["config"]["max_length"] == 20  # longer than the encoder's 20 positions: the length really used is recorded
    finetune.main([*common, "--output_dir", str(tmp_path / "joint"), "--encoder_learning_rate", "0.001", "--encoder_loss_weight", "1"])
    assert encoder_moved(tmp_path / "joint") > 1e-4
    # the encoder inside a GeniusRec checkpoint ranks like the stage-1 model it was built from while it is unchanged
    inside = evaluate.main(["--model", str(tmp_path / "still"), "--dataset", str(stage1 / "data"), "--rank_with", "encoder"])
    stage1_alone = evaluate.main(["--model", str(stage1 / "hstu"), "--dataset", str(stage1 / "data")])
    assert inside["ndcg@10"] == pytest.approx(stage1_alone["ndcg@10"], abs=1e-6)
    assert GeniusRecForSessionGeneration.from_pretrained(tmp_path / "joint").config.encoder_loss_weight == 1.0
    with pytest.raises(SystemExit):
        finetune.main([*common, "--output_dir", str(tmp_path / "frozen"), "--freeze_encoder", "true", "--encoder_loss_weight", "1"])


def test_content_tables_and_expert_types_come_from_flags_or_a_config_file(stage1, tmp_path):
    """`--content NAME=FILE` / `--expert_types NAME=TYPE` (or the same as JSON objects in `--config`): a table with any
    name becomes an expert of the registered type, with no code change in the CLI."""
    from data_scripts.embed import write_embeddings
    from data_scripts.processed import load_processed
    from modeling_geniusrec.experts import EXPERT_REGISTRY, register_expert

    data = stage1 / "data"
    tokenizer = load_processed(str(data))[2]
    write_embeddings(str(data / "embeddings" / "taste.safetensors"), {"embeddings": torch.randn(len(tokenizer), 6)},
                     {"model": "random", "catalog_fingerprint": tokenizer.catalog_fingerprint()})
    common = ["--dataset", str(data), "--encoder_path", str(stage1 / "hstu"), "--protocol", "sessions", "--num_train_epochs", "1",
              "--evaluate_test", "false", *DECODER]
    results = finetune.main([*common, "--output_dir", str(tmp_path / "flags"), "--content", "taste=taste.safetensors"])
    config = results["config"]["model_config"]
    assert config["expert_types"] == {"behaviour": "behaviour", "taste": "content"}
    assert config["content_embedding_dims"] == {"taste": 6}
    model = GeniusRecForSessionGeneration.from_pretrained(tmp_path / "flags")
    assert model.model.content_kinds == ["taste"] and model.config.expert_names == ["behaviour", "taste"]

    @register_expert("test_constant")
    class Constant(torch.nn.Module):  # a user's own expert type: one registered class
        def __init__(self, config, name):
            super().__init__()
            self.vector = torch.nn.Parameter(torch.zeros(config.hidden_size))

        def encode(self, model, input_ids):
            return None

        def forward(self, state, context):
            return self.vector.expand_as(state)

    try:
        config_file = tmp_path / "experts.json"
        config_file.write_text(json.dumps({"content": {"taste": "taste.safetensors"},
                                           "expert_types": {"taste": "content", "bias": "test_constant"}}))
        results = finetune.main([*common, "--output_dir", str(tmp_path / "config"), "--config", str(config_file)])
        assert results["config"]["model_config"]["expert_types"] == {"behaviour": "behaviour", "taste": "content", "bias": "test_constant"}
        assert all(len(group["mean"][0]) == 3 for group in results["gate_weights"].values())  # three experts in the gate
    finally:
        EXPERT_REGISTRY.pop("test_constant")
    with pytest.raises(ValueError, match="NAME=VALUE"):
        finetune.main([*common, "--output_dir", str(tmp_path / "bad"), "--content", "taste.safetensors"])


def test_prefix_packing_trains_the_decoder_at_many_splits_and_the_encoder_jointly(stage1, tmp_path):
    """--prefix_samples trains the decoder at several split points of each user's window from one encoder pass, with
    the encoder's own loss on the same window: the encoder moves, the decoder learns the task, the run records it."""
    from safetensors.torch import load_file

    out = tmp_path / "prefix"
    results = finetune.main(["--dataset", str(stage1 / "data"), "--encoder_path", str(stage1 / "hstu"), "--output_dir", str(out),
                             "--num_train_epochs", "3", "--evaluate_test", "false", *DECODER, "--samples_per_user", "1",
                             "--prefix_samples", "6", "--encoder_loss_weight", "1"])
    assert results["config"]["prefix_samples"] == 6
    assert results["metrics"]["validation"]["ndcg@10"] > 0.3
    before, after = load_file(stage1 / "hstu" / "model.safetensors"), load_file(out / "model.safetensors")
    assert max(float((after["model.encoder." + k[len("model."):]] - v).abs().max()) for k, v in before.items() if k.startswith("model.")) > 1e-4
    with pytest.raises(SystemExit):
        finetune.main(["--dataset", str(stage1 / "data"), "--output_dir", str(tmp_path / "both"), *DECODER, "--prefix_samples", "4"])


def test_max_train_seconds_stops_stage_two_at_the_first_epoch_end_past_the_budget(stage1, tmp_path):
    """A time-budget run (issue 42's same-budget comparison): training stops at the first epoch end past the budget
    and the results say so."""
    results = finetune.main(["--dataset", str(stage1 / "data"), "--encoder_path", str(stage1 / "hstu"), "--output_dir", str(tmp_path / "b"),
                             "--num_train_epochs", "5", "--evaluate_test", "false", *DECODER, "--max_train_seconds", "0.001"])
    assert results["epochs"] == 1 and results["stopped_by"] == "time_budget"
