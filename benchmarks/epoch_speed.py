"""Seconds per training epoch of HSTU on MovieLens-1M for each loss, from timed optimizer steps.

    python -m benchmarks.epoch_speed --dataset data/ml-1m --steps 5
    python -m benchmarks.epoch_speed --dataset data/ml-1m --steps 5 --compile --losses sampled_softmax:batch:512   # torch.compile

Times `--steps` full training steps (forward, backward, Adam) on real batches of the leave-one-out train view
(paper size: 2 blocks, 1 head, 50 dims, length 200, batch 128) after one warm-up step, and scales to the number of
batches in an epoch. Evaluation time is not included. With `--compile`, the model is `torch.compile`d (default
mode, CPU inductor) and the warm-up is `--warmup` steps, so that compilation and recompilation for new shapes are
not timed; the compile time is reported apart.
"""

import argparse
import json
import math
import time

import torch

from data_scripts.processed import NextItemCollator, NextItemDataset, load_processed
from data_scripts.splits import SequenceStore
from modeling_geniusrec import HSTUConfig, HSTUForNextItemPrediction

LOSSES = [("sampled_softmax", "position", 128), ("sampled_softmax", "batch", 128), ("sampled_softmax", "batch", 512), ("full_softmax", "position", 0)]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="processed dataset folder")
    p.add_argument("--steps", type=int, default=5, help="timed steps per loss")
    p.add_argument("--batch_size", "--batch-size", type=int, default=128, help="users per step")
    p.add_argument("--output", default=None, help="append JSON lines here")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (compilation time reported apart)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (compiled: use 2-3, shapes vary per batch)")
    p.add_argument("--losses", nargs="+", default=None, help="subset as loss:sharing:negatives, e.g. sampled_softmax:batch:512")
    args = p.parse_args(argv)
    losses = LOSSES if not args.losses else [(a, b, int(c)) for a, b, c in (x.split(":") for x in args.losses)]
    sequences, _, tokenizer, _ = load_processed(args.dataset)
    store = SequenceStore.from_dataset(sequences)
    data = NextItemDataset(store, "train", 200)
    collator = NextItemCollator()
    batches = [collator([data[i] for i in range(lo, lo + args.batch_size)])
               for lo in range(0, (args.steps + args.warmup) * args.batch_size, args.batch_size)]
    steps_per_epoch = math.ceil(len(data) / args.batch_size)
    for loss, sharing, negatives in losses:
        torch.manual_seed(0)
        model = HSTUForNextItemPrediction(HSTUConfig(vocab_size=len(tokenizer), loss_type=loss, negatives_sharing=sharing,
                                                     num_negatives=negatives or 128))
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        step_fn = torch.compile(model) if args.compile else model
        began = time.perf_counter()
        for step, batch in enumerate(batches):
            if step == args.warmup:
                warmup_s = time.perf_counter() - began
                start = time.perf_counter()
            step_fn(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        per_step = (time.perf_counter() - start) / args.steps
        result = {"loss": loss, "negatives": f"{negatives} per {sharing}" if negatives else "all items", "seconds_per_step": round(per_step, 3),
                  "seconds_per_epoch": round(per_step * steps_per_epoch, 1), "threads": torch.get_num_threads(), "steps_per_epoch": steps_per_epoch,
                  "compiled": args.compile, "warmup_steps": args.warmup, "warmup_s": round(warmup_s, 1)}
        print(json.dumps(result), flush=True)
        if args.output:
            with open(args.output, "a") as f:
                f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
