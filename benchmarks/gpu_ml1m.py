"""Stage 1 on one GPU: HSTU and HSTU-large on MovieLens-1M, with the training time to published quality.

    python benchmarks/gpu_ml1m.py --dataset data/ml-1m --output benchmarks/results/gpu-ml1m.json            # GPU
    python benchmarks/gpu_ml1m.py --dataset data/ml-1m --bf16 --compile --output ...                         # bf16 + torch.compile
    python benchmarks/gpu_ml1m.py --dataset <tiny dataset> --smoke --output /tmp/gpu-smoke.json              # CPU, seconds (tests)

`benchmarks/gpu_ml1m.sh` wraps it for a machine without internet (wheels installed from `benchmarks/wheels/`).

For each model (`train/configs/ml-1m-hstu.json`, `ml-1m-hstu-large.json`) it runs `train.pretrain` (validation every
epoch, early stopping, test once) and reads, from the validation history, the first epoch whose validation NDCG@10
reaches published HSTU quality (.1720) and HSTU-large quality (.1893); the training time to it is that epoch's share
of the measured training wall time (epochs take about the same time; evaluation included). Goal on one H100/H200:
<= 30 s to .1720 and <= 90 s to .1893. Writes one results file with every run's metrics, device, date and commit.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from train import pretrain  # noqa: E402
from train.evaluation.results import git_commit, machine_description, today, write_json_atomic  # noqa: E402

TARGETS = {"hstu": 0.1720, "hstu_large": 0.1893}  # published NDCG@10 of HSTU / HSTU-large on ML-1M (reference protocol, test)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = ["--hidden_size", "16", "--qk_head_dim", "8", "--v_head_dim", "8", "--max_length", "20", "--num_negatives", "32",
         "--num_train_epochs", "2", "--per_device_train_batch_size", "32"]


def time_to(history: list[dict], wall: float, epochs: float, target: float):
    """`(epoch, seconds)` of the first evaluation with validation NDCG@10 >= target, or `(None, None)`."""
    for entry in history:
        if entry.get("eval_ndcg@10", 0.0) >= target:
            return entry["epoch"], round(wall * entry["epoch"] / max(epochs, 1e-9), 1)
    return None, None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="data/ml-1m", help="processed ML-1M folder (python -m data_scripts.movielens --variant ml-1m --out ...)")
    p.add_argument("--models", nargs="+", default=["ml-1m-hstu", "ml-1m-hstu-large"], help="configs under train/configs/")
    p.add_argument("--output_dir", default="runs/gpu", help="checkpoints go to <output_dir>/<model>")
    p.add_argument("--output", default="benchmarks/results/gpu-ml1m.json", help="the results file")
    p.add_argument("--bf16", action="store_true", help="bf16 mixed precision (check that the metrics match fp32)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (the Trainer's --torch_compile)")
    p.add_argument("--smoke", action="store_true", help="tiny model, 2 epochs, any device: checks that the script runs")
    args = p.parse_args(argv)
    runs = {}
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
        start = time.time()
        results = pretrain.main(flags)
        history = results["eval_history"]
        run = {"metrics": results["metrics"], "epochs": results["epochs"], "best_epoch": results["best_epoch"],
               "stopped_by": results["stopped_by"], "train_wall_time_s": results["wall_time_s"], "total_s": round(time.time() - start, 1),
               "command": results["command"]}
        for label, target in TARGETS.items():
            epoch, seconds = time_to(history, results["wall_time_s"], results["epochs"], target)
            run[f"epoch_to_{label}_quality"], run[f"seconds_to_{label}_quality"] = epoch, seconds
        runs[name] = run
        print(json.dumps({name: {k: v for k, v in run.items() if k.startswith(("seconds_to", "epoch_to", "train_wall"))}}))
    write_json_atomic(args.output, {
        "runs": runs, "targets": TARGETS, "bf16": args.bf16, "compile": args.compile, "smoke": args.smoke,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", "machine": machine_description(),
        "date": today(), "commit": git_commit(), "command": "python benchmarks/gpu_ml1m.py " + " ".join(sys.argv[1:] if argv is None else argv),
    })
    return runs


if __name__ == "__main__":
    main()
