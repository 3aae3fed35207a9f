"""Seconds to evaluate a stage-1 model on a full split view: full ranking over every item, whole history filtered.

    python -m benchmarks.eval_speed --dataset data/ml-1m --model runs/ml-1m-hstu --output benchmarks/results/eval-speed.jsonl

Times two paths after one warm-up pass, `--repeats` times each (median reported): `train.evaluation.ranking.evaluate_next_item`
(what `python -m train.evaluate` runs) and `Trainer.evaluate` with the `compute_metrics` of `train.pretrain` (what
every training epoch runs), both on the validation view (6,040 users on MovieLens-1M), batch `--batch_size`. The
metrics of the two paths must agree (printed). Without `--model`, a freshly initialised paper-size HSTU (the time
does not depend on the weights).
"""

import argparse
import json
import statistics
import tempfile
import time

import torch
from transformers import Trainer, TrainingArguments

from data_scripts.processed import NextItemCollator, NextItemDataset, load_processed
from data_scripts.splits import SequenceStore
from modeling_geniusrec import HSTUConfig, HSTUForNextItemPrediction
from train.console import quiet_trainer
from train.evaluation.ranking import (
    evaluate_next_item,
    keep_user_embeddings,
    make_compute_metrics,
)
from train.evaluation.results import provenance
from train.runner import load_checkpoint


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="processed dataset folder")
    p.add_argument("--model", default=None, help="stage-1 checkpoint folder (default: a fresh paper-size HSTU)")
    p.add_argument("--split", default="validation", choices=["validation", "test"], help="evaluated view")
    p.add_argument("--batch_size", type=int, default=256, help="users per forward pass")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per path (median reported)")
    p.add_argument("--output", default=None, help="append one JSON line here")
    args = p.parse_args(argv)
    sequences, _, tokenizer, _ = load_processed(args.dataset)
    store = SequenceStore.from_dataset(sequences)
    if args.model:
        model = load_checkpoint(args.model, ("hstu", "sasrec"), tokenizer)
    else:
        torch.manual_seed(0)
        model = HSTUForNextItemPrediction(HSTUConfig(vocab_size=len(tokenizer)))
    model.eval()
    length = model.config.max_position_embeddings
    view = NextItemDataset(store, args.split, length)
    timings, metrics = {}, {}

    def direct():
        return evaluate_next_item(model, view, args.batch_size, "full", progress=False)

    ordered = NextItemDataset(store, args.split, length).order_by_length()  # as train.pretrain builds it
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model=model, args=TrainingArguments(output_dir=tmp, per_device_eval_batch_size=args.batch_size, report_to="none",
                                                              remove_unused_columns=False, disable_tqdm=True),
                          eval_dataset=ordered, data_collator=NextItemCollator(tokenizer.pad_token_id),
                          preprocess_logits_for_metrics=keep_user_embeddings)
        quiet_trainer(trainer, "warning")
        trainer.compute_metrics = make_compute_metrics(lambda: model, ordered, "full")

        def through_trainer():
            out = trainer.evaluate()
            return {k[len("eval_"):]: v for k, v in out.items() if k.startswith("eval_") and "@" in k}

        for name, fn in (("evaluate_next_item", direct), ("trainer_evaluate", through_trainer)):
            fn()  # warm-up
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                metrics[name] = fn()
                times.append(time.perf_counter() - start)
            timings[name] = round(statistics.median(times), 2)
            print(f"{name:20s} {timings[name]:6.2f} s  ({len(view):,} users, NDCG@10 {metrics[name]['ndcg@10']:.4f})", flush=True)
    result = {"seconds": timings, "users": len(view), "split": args.split, "batch_size": args.batch_size, "model": args.model or "fresh HSTU 2x50",
              "ndcg@10": {k: round(v["ndcg@10"], 6) for k, v in metrics.items()}, "threads": torch.get_num_threads(),
              **provenance("python -m benchmarks.eval_speed", argv)}
    if args.output:
        with open(args.output, "a") as f:
            f.write(json.dumps(result) + "\n")
    return result


if __name__ == "__main__":
    main()
