"""The GPU stage-1 benchmark script runs (on CPU, `--smoke`), so that it cannot rot between GPU sessions."""

import json
import os

from data_scripts import movielens

from .fixtures import write_learnable_ml


def test_gpu_script_smoke(tmp_path):
    write_learnable_ml(tmp_path / "raw", users=40, items=40)
    movielens.main(["--raw_dir", str(tmp_path / "raw"), "--out", str(tmp_path / "data")])
    from benchmarks import gpu_ml1m as module
    out = tmp_path / "gpu.json"
    module.main(["--dataset", str(tmp_path / "data"), "--smoke", "--models", "ml-1m-hstu", "--output_dir", str(tmp_path / "runs"),
                 "--output", str(out)])
    results = json.loads(out.read_text())
    run = results["runs"]["ml-1m-hstu"]
    assert results["smoke"] and results["commit"] and {"validation", "test"} <= set(run["metrics"])
    assert "seconds_to_hstu_quality" in run and "seconds_to_hstu_large_quality" in run
    assert module.time_to([{"epoch": 1.0, "eval_ndcg@10": 0.1}, {"epoch": 2.0, "eval_ndcg@10": 0.18}], 100.0, 4.0, 0.172) == (2.0, 50.0)
    assert module.time_to([{"epoch": 1.0, "eval_ndcg@10": 0.1}], 100.0, 1.0, 0.172) == (None, None)
    # measured time-to-quality is the stamped wall clock at that validation, not an epoch share
    assert all(h["elapsed_s"] > 0 for h in run["eval_history"]) and len(run["eval_history"]) == 2
    assert module.time_to([{"epoch": 1.0, "eval_ndcg@10": 0.2, "elapsed_s": 7.5}], 100.0, 4.0, 0.172) == (1.0, 7.5)
    # a second run compared with the first (the bf16 / compile check): same seed and flags on CPU give the same curve
    again = tmp_path / "gpu-again.json"
    module.main(["--dataset", str(tmp_path / "data"), "--smoke", "--models", "ml-1m-hstu", "--output_dir", str(tmp_path / "runs2"),
                 "--output", str(again), "--compare_to", str(out), "--results_dir", str(tmp_path / "full")])
    compared = json.loads(again.read_text())["runs"]["ml-1m-hstu"]["compared_to"]
    assert compared["epochs_compared"] == 2 and compared["max_abs_ndcg@10_difference"] < 1e-6
    assert json.loads((tmp_path / "full" / "ml-1m-hstu.json").read_text())["eval_history"]
    assert module.compare_histories([{"epoch": 1.0, "eval_ndcg@10": 0.2}, {"epoch": 2.0, "eval_ndcg@10": 0.3}],
                                    [{"epoch": 1.0, "eval_ndcg@10": 0.25}]) == {"epochs_compared": 1, "max_abs_ndcg@10_difference": 0.05}


def test_time_budget_stops_training(tmp_path):
    """`--max_train_seconds` stops at the first epoch end past the budget, tests the best checkpoint and says so."""
    from train import pretrain

    write_learnable_ml(tmp_path / "raw", users=40, items=40)
    movielens.main(["--raw_dir", str(tmp_path / "raw"), "--out", str(tmp_path / "data")])
    results = pretrain.main(["--dataset", str(tmp_path / "data"), "--output_dir", str(tmp_path / "run"), "--hidden_size", "16",
                             "--qk_head_dim", "8", "--v_head_dim", "8", "--max_length", "20", "--num_train_epochs", "50",
                             "--max_train_seconds", "0.001", "--disable_tqdm", "true", "--report_to", "none"])
    assert results["epochs"] == 1.0 and results["stopped_by"] == "time_budget" and results["metrics"]["test"]
    # a selection run never reads the test split
    unread = pretrain.main(["--dataset", str(tmp_path / "data"), "--output_dir", str(tmp_path / "run2"), "--hidden_size", "16",
                            "--qk_head_dim", "8", "--v_head_dim", "8", "--max_length", "20", "--num_train_epochs", "1",
                            "--evaluate_test", "false", "--disable_tqdm", "true", "--report_to", "none"])
    assert unread["metrics"]["test"] == {} and unread["metrics"]["validation"]


def test_loss_per_second_script(tmp_path):
    """The loss comparison runs each loss for the budget, never reads test, and reads curves by elapsed time."""
    from benchmarks import loss_per_second as module
    assert module.best_by([{"eval_ndcg@10": 0.1, "elapsed_s": 5}, {"eval_ndcg@10": 0.3, "elapsed_s": 20}], 10) == 0.1
    write_learnable_ml(tmp_path / "raw", users=40, items=40)
    movielens.main(["--raw_dir", str(tmp_path / "raw"), "--out", str(tmp_path / "data")])
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"model_type": "hstu", "hidden_size": 16, "qk_head_dim": 8, "v_head_dim": 8, "max_length": 20,
                                  "num_negatives": 16, "num_train_epochs": 2}))
    out = module.main(["--dataset", str(tmp_path / "data"), "--config", str(config), "--seconds", "1000", "--checkpoints", "1000",
                       "--losses", "sampled_shared_512", "full_softmax", "--output_dir", str(tmp_path / "runs"),
                       "--output", str(tmp_path / "o.json")])
    assert set(out["losses"]) == {"sampled_shared_512", "full_softmax"} and out["winner_on_validation"] in out["losses"]
    assert all(len(row["curve"]) == 2 for row in out["losses"].values())


def test_time_to_quality_reads_the_first_validation_at_the_target(tmp_path):
    """benchmarks.time_to_quality: the first validation at or above the target (its stamped wall clock), none when
    never reached, the best validation and the test figure; a table and a curve plot."""
    from benchmarks import time_to_quality

    history = [{"epoch": 1.0, "eval_ndcg@10": 0.15, "elapsed_s": 30.0}, {"epoch": 2.0, "eval_ndcg@10": 0.19, "elapsed_s": 61.0},
               {"epoch": 3.0, "eval_ndcg@10": 0.2, "elapsed_s": 90.0}]
    assert time_to_quality.first_reaching(history, 0.1893) == {"epoch": 2.0, "elapsed_s": 61.0, "ndcg@10": 0.19}
    assert time_to_quality.first_reaching(history, 0.3) is None
    fast, slow = tmp_path / "fast.json", tmp_path / "slow.json"
    fast.write_text(json.dumps({"eval_history": history, "metrics": {"test": {"ndcg@10": 0.195}}, "epochs": 3}))
    slow.write_text(json.dumps({"eval_history": history[:1], "metrics": {"test": {"ndcg@10": 0.15}}, "epochs": 1}))
    out = tmp_path / "ttq.json"
    table = time_to_quality.main(["--runs", str(fast), str(slow), "--labels", "fast", "slow", "--output", str(out)])
    assert table["fast"]["reached"]["elapsed_s"] == 61.0 and table["slow"]["reached"] is None
    assert table["fast"]["best_validation"] == {"epoch": 3.0, "ndcg@10": 0.2} and table["fast"]["test_ndcg@10"] == 0.195
    assert json.loads(out.read_text())["runs"]["fast"]["curve"][1] == [61.0, 0.19] and (tmp_path / "ttq.png").exists()


def test_books_scale_chain_runs_every_step_and_resumes(tmp_path):
    """benchmarks.books_scale at a tiny size: every step runs under /usr/bin/time -v (wall, peak RSS, throughput in the
    results), the sessions have 10 items, add_items grows the catalog; a second call reruns nothing (the .done files)."""
    from benchmarks import books_scale

    parsed = books_scale.parse_time_v("\tElapsed (wall clock) time (h:mm:ss or m:ss): 1:02.50\n\tMaximum resident set size (kbytes): 2048\n")
    assert parsed == {"wall_s": 62.5, "peak_rss_mb": 2.0}
    out = tmp_path / "books.json"
    args = ["--work", str(tmp_path / "w"), "--rows", "100000", "--pretrain_steps", "2", "--eval_users", "20", "--session_users", "4",
            "--session_batch", "2", "--candidate_count", "30", "--two_stage_batch", "4", "--new_items", "5", "--output", str(out)]
    results = books_scale.main(args)
    steps = results["steps"]
    assert list(steps) == list(books_scale.STEPS) and all(s["wall_s"] > 0 and s["peak_rss_mb"] > 0 for s in steps.values())
    assert steps["prepare"]["items"] > 0 and steps["sessions"]["items_per_session"] == 10 and steps["add_items"]["new_items"] == 5
    assert steps["generate"]["reviews_per_second"] > 0 and json.loads(out.read_text())["commit"]
    two_stage = steps["sessions_two_stage"]
    assert two_stage["candidate_count"] == 30 and two_stage["items_per_session"] == 10 and steps["sessions"]["candidate_count"] is None
    assert "--max_eval_users 20" in steps["pretrain"]["command"]
    stamp = os.path.getmtime(tmp_path / "w" / "pretrain.time")
    assert books_scale.main(args)["steps"]["pretrain"] == steps["pretrain"] and os.path.getmtime(tmp_path / "w" / "pretrain.time") == stamp
