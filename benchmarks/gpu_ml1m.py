"""Stage 1 on one GPU: HSTU and HSTU-large on MovieLens-1M, with the training time to published quality.

    python -m benchmarks.gpu_ml1m --dataset data/ml-1m --output benchmarks/results/gpu-ml1m.json            # GPU
    python -m benchmarks.gpu_ml1m --dataset data/ml-1m --bf16 --compile --output ...                         # bf16 + torch.compile
    python -m benchmarks.gpu_ml1m --dataset <tiny dataset> --smoke --output /tmp/gpu-smoke.json              # CPU, seconds (tests)

`benchmarks/gpu_ml1m.sh` wraps it for a machine without internet (wheels installed from `benchmarks/wheels/`).

For each model (`train/configs/ml-1m-hstu.json`, `ml-1m-hstu-large.json`) it runs `train.pretrain` (validation every
epoch, early stopping, test once) and reads, from the validation history, the first epoch whose validation NDCG@10
reaches published HSTU quality (.1720) and HSTU-large quality (.1893); the training time to it is the wall-clock time
from the start of training to the end of that epoch's validation (`elapsed_s`, stamped by `train.pretrain`; every
earlier validation included). Goal on one H100/H200: <= 30 s to .1720 and <= 90 s to .1893. `--max_train_seconds`
caps each run (it stops at the first epoch end past it and tests the best checkpoint so far). The results file is
rewritten after every run, so a run cut short by the machine's limit keeps the ones before it. `--compare_to` an
earlier results file (e.g. fp32) adds, per model, the largest validation NDCG@10 difference over the epochs both ran:
the check that bf16 / torch.compile give the same metrics.
"""

import argparse
import json
import os
import sys
import time

import torch

from train import pretrain
from train.evaluation.results import provenance, write_json_atomic

TARGETS = {"hstu": 0.1720, "hstu_large": 0.1893}  # published NDCG@10 of HSTU / HSTU-large on ML-1M (reference protocol, test)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = ["--hidden_size", "16", "--qk_head_dim", "8", "--v_head_dim", "8", "--max_length", "20", "--num_negatives", "32",
         "--num_train_epochs", "2", "--per_device_train_batch_size", "32"]


def time_to(history: list[dict], wall: float, epochs: float, target: float):
    """`(epoch, seconds)` of the first evaluation with validation NDCG@10 >= target, or `(None, None)`. Seconds are the
    entry's `elapsed_s` when stamped, else that epoch's share of `wall`."""
    for entry in history:
        if entry.get("eval_ndcg@10", 0.0) >= target:
            seconds = entry.get("elapsed_s", wall * entry["epoch"] / max(epochs, 1e-9))
            return entry["epoch"], round(seconds, 1)
    return None, None


def compare_histories(history: list[dict], other: list[dict]) -> dict:
    """Largest absolute validation NDCG@10 difference over the epochs both histories evaluated (and how many)."""
    theirs = {round(h["epoch"], 3): h["eval_ndcg@10"] for h in other}
    diffs = [abs(h["eval_ndcg@10"] - theirs[round(h["epoch"], 3)]) for h in history if round(h["epoch"], 3) in theirs]
    return {"epochs_compared": len(diffs), "max_abs_ndcg@10_difference": round(max(diffs), 5) if diffs else None}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="data/ml-1m", help="processed ML-1M folder (python -m data_scripts.movielens --variant ml-1m --out ...)")
    p.add_argument("--models", nargs="+", default=["ml-1m-hstu", "ml-1m-hstu-large"], help="configs under train/configs/")
    p.add_argument("--output_dir", default="runs/gpu", help="checkpoints go to <output_dir>/<model>")
    p.add_argument("--output", default="benchmarks/results/gpu-ml1m.json", help="the results file")
    p.add_argument("--bf16", action="store_true", help="bf16 mixed precision (check that the metrics match fp32)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (the Trainer's --torch_compile)")
    p.add_argument("--smoke", action="store_true", help="tiny model, 2 epochs, any device: checks that the script runs")
    p.add_argument("--max_train_seconds", type=float, default=None, help="cap on each run's training time (stops at the next epoch end)")
    p.add_argument("--compare_to", default=None, help="an earlier results file of this script (e.g. fp32) to compare validation curves with")
    p.add_argument("--results_dir", default=None, help="also write each run's full train.pretrain results file here, as <model>.json")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="further train.pretrain flags for every run (last on the line)")
    args = p.parse_args(argv)
    other = {}
    if args.compare_to:
        with open(args.compare_to) as f:
            other = json.load(f)["runs"]
    runs = {}
    command = "python -m benchmarks.gpu_ml1m " + " ".join(sys.argv[1:] if argv is None else argv)
    for name in args.models:
        flags = ["--config", os.path.join(ROOT, "train", "configs", f"{name}.json"), "--dataset", args.dataset,
                 "--output_dir", os.path.join(args.output_dir, name), "--disable_tqdm", "true", "--report_to", "none"]
        if args.smoke:
            flags += SMOKE
        if args.bf16:
            flags += ["--bf16", "true"]
        if args.compile:
            flags += ["--torch_compile", "true"]
        if torch.cuda.is_available():
            flags += ["--dataloader_num_workers", "4", "--per_device_eval_batch_size", "1024"]
        if args.max_train_seconds:
            flags += ["--max_train_seconds", str(args.max_train_seconds)]
        if args.results_dir:
            flags += ["--results_file", os.path.join(args.results_dir, f"{name}.json")]
        flags += args.extra
        start = time.time()
        results = pretrain.main(flags)
        history = results["eval_history"]
        run = {"metrics": results["metrics"], "epochs": results["epochs"], "best_epoch": results["best_epoch"],
               "stopped_by": results["stopped_by"], "train_wall_time_s": results["wall_time_s"], "total_s": round(time.time() - start, 1),
               "command": results["command"], "eval_history": [{k: h[k] for k in ("epoch", "eval_ndcg@10", "eval_hr@10", "elapsed_s") if k in h}
                                                                for h in history]}
        for label, target in TARGETS.items():
            epoch, seconds = time_to(history, results["wall_time_s"], results["epochs"], target)
            run[f"epoch_to_{label}_quality"], run[f"seconds_to_{label}_quality"] = epoch, seconds
        if name in other:
            run["compared_to"] = {"file": args.compare_to, **compare_histories(history, other[name].get("eval_history", [])),
                                  "test_ndcg@10_difference": round(run["metrics"]["test"]["ndcg@10"] - other[name]["metrics"]["test"]["ndcg@10"], 5)}
        runs[name] = run
        print(json.dumps({name: {k: v for k, v in run.items() if k.startswith(("seconds_to", "epoch_to", "train_wall", "compared", "stopped"))}}),
              flush=True)
        write_json_atomic(args.output, {  # after every run: a later one cut short keeps this one
            "runs": runs, "targets": TARGETS, "bf16": args.bf16, "compile": args.compile, "smoke": args.smoke,
            "max_train_seconds": args.max_train_seconds, "extra_flags": args.extra,
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", **provenance("python -m benchmarks.gpu_ml1m"),
            "command": command,
        })
    return runs


if __name__ == "__main__":
    main()
