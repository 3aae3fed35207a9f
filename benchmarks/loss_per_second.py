"""Which stage-1 loss buys the most validation quality per wall-clock second on this machine.

    python -m benchmarks.loss_per_second --dataset data/ml-1m --seconds 600 --output benchmarks/results/loss-per-second.json

Trains the HSTU config (`train/configs/ml-1m-hstu.json`) once per loss for the same wall-clock budget
(`--max_train_seconds`, validation every epoch included), one run at a time, and reads validation NDCG@10 against
elapsed time. The test split is never read (`--evaluate_test false`): this is a choice of settings, made on
validation. Reported per loss: epochs run, seconds per epoch, the best validation NDCG@10 reached by each checkpoint
time (`--checkpoints`), and the best overall. The loss with the best validation NDCG@10 at the budget wins.
"""

import argparse
import os

from train import pretrain
from train.evaluation.results import provenance, write_json_atomic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOSSES = {
    "sampled_shared_512": ["--loss_type", "sampled_softmax", "--negatives_sharing", "batch", "--num_negatives", "512"],
    "sampled_position_128": ["--loss_type", "sampled_softmax", "--negatives_sharing", "position", "--num_negatives", "128"],
    "full_softmax": ["--loss_type", "full_softmax"],
}


def best_by(history: list[dict], seconds: float):
    """Best validation NDCG@10 among evaluations finished within `seconds` (None if none)."""
    values = [h["eval_ndcg@10"] for h in history if h.get("elapsed_s", float("inf")) <= seconds]
    return round(max(values), 5) if values else None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="data/ml-1m", help="processed ML-1M folder")
    p.add_argument("--config", default=os.path.join(ROOT, "train", "configs", "ml-1m-hstu.json"), help="stage-1 config")
    p.add_argument("--seconds", type=float, default=600, help="wall-clock budget per loss (validation included)")
    p.add_argument("--checkpoints", type=float, nargs="+", default=[150, 300, 450, 600], help="times at which to read the curves")
    p.add_argument("--losses", nargs="+", default=list(LOSSES), choices=list(LOSSES), help="losses to compare")
    p.add_argument("--output_dir", default="runs/loss-per-second", help="runs go to <output_dir>/<loss>")
    p.add_argument("--output", default=None, help="results JSON")
    args = p.parse_args(argv)
    rows = {}
    for name in args.losses:
        results = pretrain.main(["--config", args.config, "--dataset", args.dataset, "--output_dir", os.path.join(args.output_dir, name),
                                 "--max_train_seconds", str(args.seconds), "--evaluate_test", "false", "--early_stopping_patience", "1000",
                                 "--disable_tqdm", "true", "--report_to", "none", *LOSSES[name]])
        history = results["eval_history"]
        rows[name] = {"epochs": results["epochs"], "seconds_per_epoch": results["seconds_per_epoch"], "wall_time_s": results["wall_time_s"],
                      "best_validation_ndcg@10": round(max(h["eval_ndcg@10"] for h in history), 5),
                      "validation_ndcg@10_by_seconds": {str(int(t)): best_by(history, t) for t in args.checkpoints},
                      "curve": [{"epoch": h["epoch"], "elapsed_s": h.get("elapsed_s"), "ndcg@10": round(h["eval_ndcg@10"], 5)} for h in history]}
        print(name, {k: v for k, v in rows[name].items() if k != "curve"}, flush=True)
    winner = max(rows, key=lambda n: rows[n]["best_validation_ndcg@10"])
    out = {"losses": rows, "winner_on_validation": winner, "seconds": args.seconds, "config": os.path.relpath(args.config, ROOT),
           **provenance("python -m benchmarks.loss_per_second", argv)}
    if args.output:
        write_json_atomic(args.output, out)
    return out


if __name__ == "__main__":
    main()
