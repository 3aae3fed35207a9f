"""Stage 1 end to end on a learnable fixture: beats popularity; evaluate.py reproduces the reported metrics."""

import json

import pytest

from data_scripts import movielens
from data_scripts.processed import NextItemDataset, load_processed
from data_scripts.splits import SequenceStore
from train import evaluate, pretrain

from .fixtures import write_learnable_ml

TINY = ["--hidden_size", "16", "--qk_head_dim", "8", "--v_head_dim", "8", "--max_length", "20", "--num_negatives", "32",
        "--dropout", "0.0", "--learning_rate", "0.01", "--per_device_train_batch_size", "32", "--disable_tqdm", "true",
        "--save_strategy", "epoch", "--early_stopping_patience", "3"]


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("learnable")
    write_learnable_ml(root / "raw")
    movielens.main(["--raw_dir", str(root / "raw"), "--out", str(root / "data")])
    return root / "data"


@pytest.fixture(scope="module")
def trained(dataset_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    results = pretrain.main(["--dataset", str(dataset_dir), "--output_dir", str(out), "--num_train_epochs", "6", *TINY])
    return out, results


def test_pretrain_beats_popularity_and_writes_results(dataset_dir, trained):
    out, results = trained
    popularity = evaluate.main(["--baseline", "popularity", "--dataset", str(dataset_dir)])
    assert results["metrics"]["test"]["ndcg@10"] > popularity["ndcg@10"] + 0.2
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["protocol"] == "leave-one-out" and on_disk["seed"] == 42
    assert set(on_disk["metrics"]["test"]) >= {"hr@10", "ndcg@10", "hr@50", "ndcg@50", "hr@200", "ndcg@200", "mrr"}
    assert on_disk["metrics"]["validation"]["ndcg@10"] > 0
    assert len(on_disk["eval_history"]) == round(on_disk["epochs"]) >= 1 and "machine" in on_disk and "date" in on_disk
    card = (out / "README.md").read_text()
    assert f"{on_disk['metrics']['test']['ndcg@10']:.4f}" in card and "leave-one-out" in card
    for plot in ("training_curves.png", "metrics_vs_k.png"):
        assert (out / "plots" / plot).stat().st_size > 5000
    pickles = [p.name for pattern in ("*.bin", "*.pt", "*.pth", "*.pkl") for p in out.rglob(pattern)]
    assert pickles == [] and (out / "training_args.json").exists() and (out / "model.safetensors").exists()


def test_evaluate_reproduces_training_metrics(dataset_dir, trained):
    out, results = trained
    for split in ("validation", "test"):
        metrics = evaluate.main(["--model", str(out), "--dataset", str(dataset_dir), "--split", split, "--batch_size", "17"])
        for key, value in results["metrics"][split].items():
            if key in metrics and isinstance(value, dict):
                assert metrics[key] == value, (split, key)  # the popularity buckets' cut points
            elif key in metrics:
                assert metrics[key] == pytest.approx(value, abs=1e-6), (split, key)
        if split == "test":
            assert metrics["head_users"] + metrics["torso_users"] + metrics["tail_users"] > 0
            assert {"head_ndcg@10", "tail_ndcg@10"} <= set(results["metrics"]["test"])  # the bucket table in the results file


def test_max_eval_users_validates_and_tests_a_seeded_sample(dataset_dir, trained, tmp_path):
    """`--max_eval_users N`: validation and test read a seeded sample of N users (recorded), whose metrics are those of
    the same model on the same users; without it every user is evaluated."""
    from data_scripts.processed import NextItemDataset, load_processed
    from data_scripts.splits import SequenceStore
    from modeling_geniusrec import HSTUForNextItemPrediction
    from train.evaluation.ranking import evaluate_next_item
    from train.pretrain import sample_users

    out, results = trained
    assert results["evaluated_users"] == {"validation": 150, "test": 150}
    sampled = pretrain.main(["--dataset", str(dataset_dir), "--output_dir", str(tmp_path / "s"), "--num_train_epochs", "1", *TINY,
                             "--max_eval_users", "40"])
    assert sampled["evaluated_users"] == {"validation": 40, "test": 40} and sampled["config"]["max_eval_users"] == 40
    model = HSTUForNextItemPrediction.from_pretrained(tmp_path / "s")
    view = sample_users(NextItemDataset(SequenceStore.from_dataset(load_processed(str(dataset_dir))[0]), "test", 20), 40)
    assert len(set(view.users.tolist())) == 40
    by_hand = evaluate_next_item(model, view, progress=False)
    assert by_hand["ndcg@10"] == pytest.approx(sampled["metrics"]["test"]["ndcg@10"], abs=1e-6)


def test_reference_protocol_changes_the_split(dataset_dir, tmp_path):
    store = SequenceStore.from_dataset(load_processed(str(dataset_dir))[0])
    loo = NextItemDataset(store, "train", 50)
    ref = NextItemDataset(store, "train", 50, protocol="hstu-reference")
    assert len(ref[0]["labels"]) == len(loo[0]["labels"]) + 1  # the reference also trains on the validation item
    assert len(NextItemDataset(store, "validation", 50, protocol="hstu-reference")) == 0
    results = pretrain.main(["--dataset", str(dataset_dir), "--output_dir", str(tmp_path), "--num_train_epochs", "1",
                             "--protocol", "hstu-reference", "--report_to", "tensorboard", *TINY])
    assert results["protocol"] == "hstu-reference" and results["metrics"]["validation"] == {}
    assert list(tmp_path.rglob("events.out.tfevents.*"))  # logging through report_to
    assert "HSTU reference protocol" in (tmp_path / "README.md").read_text()
    assert results["eval_history"]  # the reference scores the test view every epoch


def test_frozen_configs_parse(tmp_path):
    import glob

    from transformers import HfArgumentParser, TrainingArguments

    from train import finetune
    from train.runner import parse_with_config

    paths = glob.glob("train/configs/*.json")
    assert len(paths) >= 6
    for path in paths:
        script = finetune if "geniusrec" in path else pretrain
        parser = HfArgumentParser((script.ModelArguments, script.DataArguments, TrainingArguments))
        parser.add_argument("--config")
        model_args, data_args, training_args = parse_with_config(parser, ["--config", path, "--output_dir", str(tmp_path)])
        assert data_args.max_length > 0 and training_args.learning_rate > 0, path


def test_cold_item_restriction(dataset_dir, trained):
    from train.evaluation.sessions import item_user_counts

    out, _ = trained
    store = SequenceStore.from_dataset(load_processed(str(dataset_dir))[0])
    counts, _ = item_user_counts(store, "leave-one-out", 10, 124)
    threshold = int(sorted(counts[4:])[len(counts[4:]) // 2])
    full = evaluate.main(["--model", str(out), "--dataset", str(dataset_dir)])
    cold = evaluate.main(["--model", str(out), "--dataset", str(dataset_dir), "--cold_items", str(threshold), "--output", str(out / "cold.json")])
    written = json.loads((out / "cold.json").read_text())
    test = NextItemDataset(store, "test", 50)
    expected = sum(counts[int(test[i]["target"])] <= threshold for i in range(len(test)))
    assert 0 < written["users"] == expected < len(test) and written["cold_items"] == threshold
    assert set(cold) == set(full)


def test_streaming_examples_split_across_processes(dataset_dir, tmp_path):
    from data_scripts.processed import streaming_train_examples

    sequences = load_processed(str(dataset_dir))[0]
    store = SequenceStore.from_dataset(sequences)
    expected = NextItemDataset(store, "train", 20)
    seen = []
    for rank in range(2):
        part = [tuple(e["labels"]) for e in streaming_train_examples(sequences, 20, num_shards=4, rank=rank, world_size=2, shuffle_buffer=0)]
        assert 0 < len(part) < len(expected)
        seen += part
    assert sorted(seen) == sorted(tuple(expected[i]["labels"].tolist()) for i in range(len(expected)))  # disjoint and complete
    results = pretrain.main(["--dataset", str(dataset_dir), "--output_dir", str(tmp_path), "--streaming", "true", "--max_steps", "6",
                             "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false", *TINY])
    assert results["metrics"]["test"]["ndcg@10"] > 0 and len(results["train_loss_history"]) >= 1


def test_logit_scale_is_the_one_name_and_the_old_flag_still_works(dataset_dir, tmp_path):
    """Stage 1 and stage 2 share one knob name, --logit_scale; --softmax_temperature t is accepted for one release with
    a deprecation warning and means logit_scale = 1 / t (the same model)."""
    import warnings

    common = ["--dataset", str(dataset_dir), "--num_train_epochs", "1", *TINY]
    new = pretrain.main([*common, "--output_dir", str(tmp_path / "new"), "--logit_scale", "10"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = pretrain.main([*common, "--output_dir", str(tmp_path / "old"), "--softmax_temperature", "0.1"])
    assert any("--softmax_temperature is deprecated" in str(w.message) for w in caught)
    assert new["config"]["model_config"]["logit_scale"] == old["config"]["model_config"]["logit_scale"] == 10.0
    assert new["metrics"]["test"]["ndcg@10"] == pytest.approx(old["metrics"]["test"]["ndcg@10"], abs=1e-9)
