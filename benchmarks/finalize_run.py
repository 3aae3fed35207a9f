"""Score the best checkpoint of a `train.pretrain` run that had to be stopped before its last epoch.

    python -m benchmarks.finalize_run --run runs/ml-1m-hstu --dataset data/ml-1m --command "python -m train.pretrain ..." \\
        --results benchmarks/results/ml-1m-hstu.json

Reads the newest `checkpoint-*/trainer_state.json`, takes its best checkpoint (by validation NDCG@10), scores the
validation and test views with `train.evaluate`, and writes a results file in the format of `train.pretrain`, with
`"stopped_at_epoch"` telling how far training went. Long CPU runs are stopped this way when a session ends.
"""

import argparse
import glob
import json
import os

from transformers import AutoModelForCausalLM

import modeling_geniusrec  # noqa: F401  (registers the Auto classes)
from data_scripts.processed import NextItemDataset, load_processed
from data_scripts.splits import SequenceStore
from train.evaluation.ranking import evaluate_next_item
from train.evaluation.results import provenance, write_json_atomic


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="output_dir of the stopped run")
    p.add_argument("--dataset", required=True, help="processed dataset folder")
    p.add_argument("--protocol", default="leave-one-out", help="split protocol of the run")
    p.add_argument("--command", required=True, help="the command that started the run (recorded)")
    p.add_argument("--wall_time_s", "--wall-time-s", type=float, default=None, help="training wall time until the stop")
    p.add_argument("--results", required=True, help="results JSON to write")
    p.add_argument("--card_dir", "--card-dir", default=None, help="also write a model card and plots into this checkpoint folder")
    args = p.parse_args(argv)
    states = sorted(glob.glob(os.path.join(args.run, "checkpoint-*", "trainer_state.json")), key=os.path.getmtime)
    if not states:
        raise FileNotFoundError(f"no checkpoint-*/trainer_state.json under {args.run}")
    with open(states[-1]) as f:
        state = json.load(f)
    best = state["best_model_checkpoint"]
    best = best if os.path.isabs(best) or os.path.exists(best) else os.path.join(args.run, os.path.basename(best))
    model = AutoModelForCausalLM.from_pretrained(best)
    sequences, _, _, stats = load_processed(args.dataset)
    store = SequenceStore.from_dataset(sequences)
    length = model.config.max_position_embeddings
    metrics = {split: evaluate_next_item(model, NextItemDataset(store, split, length, args.protocol)) for split in ("validation", "test")}
    history = [h for h in state["log_history"] if "eval_ndcg@10" in h]
    best_epoch = next((h["epoch"] for h in history if h["eval_ndcg@10"] == state["best_metric"]), None)
    results = {
        "metrics": metrics, "protocol": args.protocol, "filter_history": "full", "model": model.config.model_type,
        "config": {"model_config": model.config.to_dict(), "checkpoint": best},
        "dataset": {k: stats[k] for k in ("users", "items", "interactions")}, "seed": 42,
        "epochs": state["epoch"], "stopped_at_epoch": state["epoch"], "best_epoch": best_epoch, "stopped_by": "hand",
        "wall_time_s": args.wall_time_s, **provenance("python -m benchmarks.finalize_run"),
        "command": args.command,  # the training command this scores (the provenance above names this script's)
        "eval_history": history,
    }
    write_json_atomic(args.results, results)
    if args.card_dir:
        from train.evaluation.reporting import write_reports

        write_reports(args.card_dir, results)
    print(json.dumps({split: {k: round(v, 4) for k, v in m.items()} for split, m in metrics.items()}))


if __name__ == "__main__":
    main()
