"""Ranking metrics against hand-computed values and a brute-force implementation."""

import json
import math

import numpy as np
import pytest
import torch

from train.evaluation.ranking import ranking_metrics, target_ranks


class FixedScores:
    """A stand-in model whose item scores are a fixed (users, vocab) matrix."""

    class config:
        num_special_tokens = 4
        filter_special_tokens = True

    def __init__(self, scores):
        self.scores = scores

    def iter_item_scores(self, users, chunk_size):
        rows = users.long().flatten()
        for lo in range(4, self.scores.shape[1], chunk_size):
            yield lo, self.scores[rows, lo : lo + chunk_size]


def test_hand_computed_values():
    m = ranking_metrics(torch.tensor([0, 3, 10, 60]), ks=(10, 50))
    assert m["hr@10"] == pytest.approx(2 / 4)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(5)) / 4)
    assert m["hr@50"] == pytest.approx(3 / 4)
    assert m["ndcg@50"] == pytest.approx((1 + 1 / math.log2(5) + 1 / math.log2(12)) / 4)
    assert m["mrr"] == pytest.approx((1 + 1 / 4 + 1 / 11 + 1 / 61) / 4)


def test_a_new_metric_is_one_function_and_one_registration(monkeypatch):
    """README "How to add a metric": a per-user function of (ranks, k) and one RANK_METRICS entry; it is reported at
    every cut-off, after the built-in ones, which do not move."""
    from train.evaluation import ranking

    before = ranking_metrics(torch.tensor([0, 3, 10, 60]), ks=(10, 50))
    monkeypatch.setitem(ranking.RANK_METRICS, "precision", lambda ranks, k: (ranks < k) / k)
    after = ranking_metrics(torch.tensor([0, 3, 10, 60]), ks=(10, 50))
    assert after["precision@10"] == pytest.approx(2 / 4 / 10) and after["precision@50"] == pytest.approx(3 / 4 / 50)
    assert {k: v for k, v in after.items() if not k.startswith("precision")} == before


def test_ties_history_filter_and_large_k():
    # vocab: 4 specials + items 4..9
    scores = torch.tensor([[0, 0, 0, 0, 0.9, 0.5, 0.5, 0.1, 0.5, 0.2]])
    model = FixedScores(scores)
    users = torch.tensor([[0.0]])
    # target 5 ties with items 6 and 8 and is beaten by 4: pessimistic rank = 1 + 2 = 3
    assert target_ranks(model, users, torch.tensor([5])).tolist() == [3]
    # filtering history items 4 and 6 (pad 0 ignored) leaves only 8 tied: rank 1
    assert target_ranks(model, users, torch.tensor([5]), torch.tensor([[0, 4, 6]])).tolist() == [1]
    # the target itself is never filtered even if it is in the history
    assert target_ranks(model, users, torch.tensor([5]), torch.tensor([[5, 4]])).tolist() == [2]
    m = ranking_metrics(target_ranks(model, users, torch.tensor([7])), ks=(10, 1000))
    assert m["hr@10"] == 1.0 and m["hr@1000"] == 1.0  # K larger than the 6-item catalog


def test_matches_brute_force_on_random_scores():
    rng = np.random.default_rng(0)
    scores = torch.tensor(rng.integers(0, 5, size=(50, 30)).astype(np.float32))  # many ties
    targets = torch.tensor(rng.integers(4, 30, size=50))
    histories = torch.tensor(rng.integers(0, 30, size=(50, 6)))
    got = target_ranks(FixedScores(scores), torch.arange(50.0).view(-1, 1), targets, histories, user_chunk_size=7, item_chunk_size=5)
    for u in range(50):
        t = int(targets[u])
        candidates = [i for i in range(4, 30) if i != t and i not in histories[u].tolist()]
        expected = sum(scores[u, i] >= scores[u, t] for i in candidates)
        assert got[u] == expected


def test_session_metrics_hand_computed():
    from train.evaluation.session_metrics import coverage, intra_list_diversity, novelty, repetition_rate, session_accuracy

    m = session_accuracy([[5, 6, 7, 8], [9, 10, 11, 12]], [[6, 8, 20, 21], [1, 2, 3, 4]], k=4)
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4) + 1 / math.log2(5)
    assert m["session_recall@4"] == pytest.approx((2 / 4 + 0) / 2)
    assert m["session_ndcg@4"] == pytest.approx(((1 / math.log2(3) + 1 / math.log2(5)) / ideal) / 2)
    vectors = torch.zeros(8, 2)
    vectors[4], vectors[5], vectors[6] = torch.tensor([1.0, 0]), torch.tensor([0, 1.0]), torch.tensor([1.0, 0])
    # pairs (4,5): distance 1, (4,6): 0, (5,6): 1 -> mean 2/3
    assert intra_list_diversity([[4, 5, 6]], vectors) == pytest.approx(2 / 3)
    counts = np.zeros(8)
    counts[4], counts[5] = 50, 25
    assert novelty([[4, 5]], counts, 100) == pytest.approx((1 + 2) / 2)
    assert coverage([[4, 5], [5, 6]], 4) == pytest.approx(3 / 4)
    assert repetition_rate([[4, 5, 4], [7]], [[5], []]) == pytest.approx(2 / 4)


def test_next_basket_metrics_hand_computed():
    """PHR@k, the repeat / explore split and the invalid / duplicate rates, by hand."""
    from train.evaluation.session_metrics import session_accuracy, validity

    sessions = [[5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16]]
    targets = [[6, 8, 20, 21], [1, 2, 3, 4], [13, 30]]
    histories = [[8, 40], [], [50]]
    m = session_accuracy(sessions, targets, k=4, histories=histories)
    assert m["phr@4"] == pytest.approx(2 / 3)  # users 0 and 2 have a hit
    # user 0: repeat part {8} (hit) -> 1.0; explore part {6, 20, 21} -> 1/3; user 1: explore {1..4} -> 0; user 2: explore {13, 30} -> 1/2
    assert m["repeat_recall@4"] == pytest.approx(1.0)
    assert m["explore_recall@4"] == pytest.approx((1 / 3 + 0 + 1 / 2) / 3)
    assert m["target_repeat_share"] == pytest.approx(1 / 10)
    assert session_accuracy(sessions, targets, k=4, histories=[[], [], []])["repeat_recall@4"] is None
    v = validity([[5, 1, 5, 99], [6, 7]], num_special_tokens=4, vocab_size=50)
    assert v == {"invalid_rate": pytest.approx(2 / 6), "duplicate_rate": pytest.approx(1 / 6)}


def test_full_history_filtering_removes_items_outside_the_input_window():
    """`full` (the default) never ranks an item the user saw before the target, even one older than the model's input
    window; `window` (the HSTU reference's rule) only removes the window."""
    import numpy as np

    from data_scripts.processed import NextItemDataset, resolve_filter_history
    from data_scripts.splits import SequenceStore
    from train.evaluation.baselines import popularity_metrics

    # user 0: 4 (old, outside a 2-item window), 9, 10, then the targets; users 1-3 make item 4 the most popular
    rows = [[4, 9, 10, 11, 12], [4, 5, 6, 7, 8], [4, 5, 6, 7, 8], [4, 5, 6, 7, 8]]
    offsets = np.cumsum([0] + [len(r) for r in rows])
    store = SequenceStore([f"u{i}" for i in range(4)], offsets, np.concatenate(rows).astype(np.int32), np.arange(offsets[-1]) * 10)
    test = NextItemDataset(store, "test", max_length=2)
    assert test.filter_items("full")[0].tolist() == [4, 9, 10, 11] and test.filter_items("window")[0].tolist() == [10, 11]
    assert test.filter_items("none") is None and resolve_filter_history("auto", "hstu-reference") == "window"
    test.users, test.bounds = test.users[:1], test.bounds[:1]
    full = popularity_metrics(store, test, vocab_size=13, filter_history="full")
    window = popularity_metrics(store, test, vocab_size=13, filter_history="window")
    assert full["mrr"] > window["mrr"]  # item 4 (seen, most popular) no longer outranks the target


def random_store_and_model(seed: int, users: int):
    """A store of `users` random histories (4-29 items of ids 4..39, times 1000 s apart) and a tiny HSTU (seed 0)."""
    import numpy as np

    from data_scripts.splits import SequenceStore
    from modeling_geniusrec import HSTUConfig, HSTUForNextItemPrediction

    rng = np.random.default_rng(seed)
    rows = [rng.integers(4, 40, size=int(n)) for n in rng.integers(4, 30, size=users)]
    offsets = np.cumsum([0] + [len(r) for r in rows])
    store = SequenceStore([f"u{i}" for i in range(users)], offsets, np.concatenate(rows).astype(np.int32), np.arange(offsets[-1]) * 1000)
    torch.manual_seed(0)
    model = HSTUForNextItemPrediction(HSTUConfig(vocab_size=40, hidden_size=16, qk_head_dim=8, v_head_dim=8, max_position_embeddings=12)).eval()
    return store, model


def test_ordering_a_view_by_length_keeps_every_rank():
    """Evaluation views are batched shortest-first (`order_by_length`, and inside `evaluate_next_item`) so batches pad
    little: every user's rank, hence every metric, is the one of the original order, by both evaluation paths."""
    import numpy as np

    from data_scripts.processed import NextItemCollator, NextItemDataset
    from train.evaluation.ranking import evaluate_next_item, make_compute_metrics, query_states

    store, model = random_store_and_model(seed=0, users=37)
    collator = NextItemCollator()

    def ranks_by_user(view, batch_size):
        out = {}
        for lo in range(0, len(view), batch_size):
            rows = list(range(lo, min(lo + batch_size, len(view))))
            with torch.no_grad():
                states = query_states(model, collator.pad_histories([view[i] for i in rows]))
            ranks = target_ranks(model, states, view.targets()[rows], view.filter_items("full")[rows])
            out.update({int(view.users[i]): int(r) for i, r in zip(rows, ranks)})
        return out

    plain = NextItemDataset(store, "test", max_length=12)
    ordered = NextItemDataset(store, "test", max_length=12).order_by_length()
    lengths = ordered.input_lengths()
    assert (np.diff(lengths) >= 0).all() and not (np.diff(plain.input_lengths()) >= 0).all()
    assert ranks_by_user(plain, 5) == ranks_by_user(ordered, 5)
    direct = evaluate_next_item(model, plain, batch_size=5, progress=False)
    with torch.no_grad():
        states = torch.cat([query_states(model, collator.pad_histories([ordered[i] for i in range(lo, min(lo + 5, len(ordered)))]))
                            for lo in range(0, len(ordered), 5)])
    trainer_path = make_compute_metrics(lambda: model, ordered, "full")(type("P", (), {"predictions": states.numpy()})())
    for k, v in direct.items():
        assert v == pytest.approx(trainer_path[k], abs=1e-12), k


def test_evaluation_pads_filter_lists_per_chunk_not_for_the_whole_view(monkeypatch):
    """The items each row must not be recommended are padded per batch / chunk of rows, never as one (view rows,
    longest history) matrix (on the Books-scale synthetic data that matrix asked for 55 GB); the ranks are the same."""

    import data_scripts.processed as processed
    import train.evaluation.ranking as ranking
    from data_scripts.processed import NextItemCollator, NextItemDataset

    store, model = random_store_and_model(seed=1, users=23)
    view = NextItemDataset(store, "test", max_length=12)
    whole = ranking.evaluate_next_item(model, view, batch_size=23, progress=False)
    padded = []
    real = processed.pad_item_lists
    monkeypatch.setattr(processed, "pad_item_lists", lambda lists, *a: padded.append(len(lists)) or real(lists, *a))
    from modeling_geniusrec import scoring

    monkeypatch.setattr(scoring, "SCORE_CHUNK_ROWS", 5)
    chunked = ranking.evaluate_next_item(model, view, batch_size=5, progress=False)
    assert padded and max(padded) <= 5 and chunked == pytest.approx(whole, abs=1e-12)
    padded.clear()
    with torch.no_grad():
        states = torch.cat([ranking.query_states(model, NextItemCollator().pad_histories([view[i] for i in range(lo, min(lo + 5, 23))]))
                            for lo in range(0, 23, 5)])
    trainer_path = ranking.make_compute_metrics(lambda: model, view, "full")(type("P", (), {"predictions": states.numpy()})())
    assert max(padded) <= 5 and trainer_path["ndcg@10"] == pytest.approx(whole["ndcg@10"], abs=1e-12)


def test_stage2_vs_encoder_aggregates_seeds_by_hand(tmp_path):
    """The stage-2-vs-encoder file: means over seeds, the per-seed relative change, a 95% t-interval (t = 4.303 for 3
    seeds) and whether it includes zero, the 1.03x target."""
    import json
    import math

    from benchmarks import stage2_vs_encoder

    def write(name, ndcg, hr, seed=None):
        keys = {"ndcg@10": ndcg, "hr@10": hr, "ndcg@50": ndcg, "hr@50": hr, "mrr": ndcg}
        (tmp_path / name).write_text(json.dumps({"metrics": {"test": keys}, "seed": seed, "command": f"cmd {name}"}))
        return str(tmp_path / name)

    encoder = write("enc.json", 0.2, 0.3)
    seeds = [write(f"s{s}.json", 0.2 * r, 0.3 * r, s) for s, r in ((42, 1.04), (43, 1.05), (44, 1.06))]
    out = stage2_vs_encoder.main(["--encoder", encoder, "--seeds", *seeds, "--output", str(tmp_path / "out.json")])
    rel = out["metrics"]["test"]["relative"]["ndcg@10"]
    assert rel["per_seed"] == pytest.approx([0.04, 0.05, 0.06]) and rel["mean"] == pytest.approx(0.05)
    half = 4.303 * 0.01 / math.sqrt(3)
    assert rel["ci95"][0] == pytest.approx(0.05 - half) and rel["ci95"][1] == pytest.approx(0.05 + half)
    assert rel["interval_includes_zero"] is False
    assert out["metrics"]["test"]["geniusrec"]["ndcg@10"] == pytest.approx(0.21) and out["target_met"] is True
    assert out["seeds"] == [42, 43, 44] and json.loads((tmp_path / "out.json").read_text())["target_met"] is True


def test_paired_seeds_compares_variant_and_baseline_seed_by_seed(tmp_path):
    """benchmarks.paired_seeds: files paired by recorded seed (in any order), per-seed relative change overall and per
    bucket, its mean and 95% t-interval, the bucket sizes; a missing test split or a seed mismatch is refused."""
    import json
    import math

    from benchmarks import paired_seeds

    def write(name, seed, ndcg, tail, test=True):
        metrics = {"ndcg@10": ndcg, "hr@10": 2 * ndcg, "tail_ndcg@10": tail, "tail_hr@10": 2 * tail, "users": 100, "tail_users": 7}
        (tmp_path / name).write_text(json.dumps({"metrics": {"test": metrics if test else {}}, "seed": seed, "epochs": 4}))
        return str(tmp_path / name)

    base = [write(f"b{s}.json", s, 0.2, 0.1) for s in (42, 43, 44)]
    var = [write(f"v{s}.json", s, 0.2 * r, 0.1 * t) for s, r, t in ((44, 1.03, 1.2), (42, 1.02, 0.8), (43, 1.025, 1.0))]
    out = paired_seeds.main(["--baseline", *base, "--variant", *var, "--output", str(tmp_path / "out.json")])
    row = out["test"]["ndcg@10"]
    assert out["seeds"] == [42, 43, 44] and row["relative_per_seed"] == pytest.approx([0.02, 0.025, 0.03])
    half = 4.303 * 0.005 / math.sqrt(3)
    assert row["ci95"] == pytest.approx([0.025 - half, 0.025 + half]) and row["interval_includes_zero"] is False
    assert out["test"]["tail_ndcg@10"]["relative_per_seed"] == pytest.approx([-0.2, 0.0, 0.2])
    assert out["test"]["tail_ndcg@10"]["interval_includes_zero"] is True and out["bucket_users"]["tail"] == 7
    assert "head_ndcg@10" not in out["test"] and json.loads((tmp_path / "out.json").read_text())["runs"]["variant"]["44"]["epochs"] == 4
    with pytest.raises(SystemExit, match="different seeds"):
        paired_seeds.main(["--baseline", *base, "--variant", *var[:2], "--output", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit, match="no test metrics"):
        paired_seeds.main(["--baseline", write("n.json", 42, 0.2, 0.1, test=False), "--variant", var[1], "--output", str(tmp_path / "x.json")])


def test_provenance_names_command_machine_date_commit():
    from train.evaluation.results import provenance

    stamp = provenance("python -m train.evaluate", ["--model", "m", "--dataset", "d"])
    assert stamp["command"] == "python -m train.evaluate --model m --dataset d"
    assert set(stamp) == {"command", "machine", "date", "commit"} and len(stamp["date"]) == 10


def test_ild_is_measured_on_the_models_text_table_and_says_so():
    """ILD never falls back silently: a GeniusRec whose text table is its encoder's (shared) measures on text, an
    ID-only one on genres, and the report names which (issue 28/29)."""
    import datasets

    from modeling_geniusrec import GeniusRecForSessionGeneration, HSTUConfig, HSTUForNextItemPrediction
    from train.evaluation.sessions import ild_feature_source, item_feature_vectors, model_text_table

    items = datasets.Dataset.from_dict({"id": [4, 5], "genres": [["a"], ["b"]]})
    encoder = HSTUForNextItemPrediction(HSTUConfig(vocab_size=6, hidden_size=8, qk_head_dim=4, v_head_dim=4, num_attention_heads=2,
                                                   max_position_embeddings=8, content_embedding_dims={"text": 3}))
    text = torch.randn(6, 3)
    encoder.model.embeddings.set_content_table("text", text)
    shared = GeniusRecForSessionGeneration.from_encoder_pretrained(encoder, num_hidden_layers=1, intermediate_size=8)
    assert torch.equal(model_text_table(shared), text)  # the old lookup (model.model.text_embeddings) found nothing here
    assert ild_feature_source(items, model_text_table(shared)) == "text"
    plain = GeniusRecForSessionGeneration.from_encoder_pretrained(
        HSTUForNextItemPrediction(HSTUConfig(vocab_size=6, hidden_size=8, qk_head_dim=4, v_head_dim=4, num_attention_heads=2,
                                             max_position_embeddings=8)), num_hidden_layers=1, intermediate_size=8)
    assert model_text_table(plain) is None and ild_feature_source(items, None) == "genres"
    assert item_feature_vectors(items, 6)[4].tolist() == [1.0, 0.0]


def test_sessions_vs_list_means_intervals_and_targets(tmp_path):
    from benchmarks import sessions_vs_list

    files = []
    for seed, (ours, rel) in {42: (0.22, 0.10), 43: (0.21, 0.05), 44: (0.20, 0.0)}.items():
        test = {"session_recall@10": ours, "hstu_session_recall@10": 0.20, "session_ndcg@10": 0.2 * (1 + rel),
                "hstu_session_ndcg@10": 0.2, "ild": 0.5, "hstu_ild": 0.5, "coverage": 0.5, "hstu_coverage": 0.6, "ild_features": "genres"}
        path = tmp_path / f"run-seed{seed}.json"
        path.write_text(json.dumps({"metrics": {"test": test}, "command": "c", "commit": "x"}))
        files.append(str(path))
    out = sessions_vs_list.main(["--seeds", *files, "--output", str(tmp_path / "out.json")])
    assert out["seeds"] == [42, 43, 44] and out["metrics"]["test"]["session_recall@10"] == pytest.approx(0.21)
    assert out["relative"]["session_ndcg@10"]["mean"] == pytest.approx(0.05)
    assert out["relative"]["session_ndcg@10"]["interval_includes_zero"]
    assert out["targets"]["session_ndcg@10"]["met"] and not out["targets"]["coverage"]["met"]
    assert out["targets"]["coverage"]["distance"] == pytest.approx(-1 / 6 + 0.05)
    assert out["metrics"]["test"]["ild_features"] == "genres" and len(out["per_seed"]) == 3


def test_popularity_buckets_and_metrics_by_bucket():
    from train.evaluation.buckets import popularity_buckets
    from train.evaluation.ranking import bucket_metrics

    counts = np.array([0, 0, 0, 0] + [100, 90, 50, 30, 21, 20, 5, 1, 0, 40])  # 10 items after 4 special tokens
    bucket, description = popularity_buckets(counts, 4)
    assert bucket[:4].tolist() == [-1] * 4
    assert bucket[[4, 5]].tolist() == [0, 0]  # top 20% of 10 items: the two most interacted
    assert bucket[[6, 7, 8, 13]].tolist() == [1, 1, 1, 1] and bucket[[9, 10, 11, 12]].tolist() == [2, 2, 2, 2]  # <= 20: tail
    assert description["items"] == {"head": 2, "torso": 4, "tail": 4} and description["head_min_interactions"] == 90
    ranks = torch.tensor([0, 20, 3, 1])
    targets = torch.tensor([4, 6, 9, 12])
    m = bucket_metrics(ranks, targets, bucket)
    assert m["head_users"] == 1 and m["head_hr@10"] == 1.0
    assert m["torso_users"] == 1 and m["torso_hr@10"] == 0.0
    assert m["tail_users"] == 2 and m["tail_ndcg@10"] == pytest.approx((1 / math.log2(5) + 1 / math.log2(3)) / 2)
    overall = ranking_metrics(ranks, ks=(10,))["ndcg@10"]
    assert overall == pytest.approx(sum(m[f"{b}_ndcg@10"] * m[f"{b}_users"] for b in ("head", "torso", "tail")) / 4)
