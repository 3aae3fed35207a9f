"""Seconds per training epoch of the joint stage 2 with prefix packing against stage 1, on the same batches (issue 42
item 2: the dense objective's cost per epoch should stay within 2x of stage 1's).

    python -m benchmarks.prefix_cost --dataset data/ml-1m --encoder runs/s1/cosine40-42 --steps 30 \\
        --output benchmarks/results/prefix-cost.json

Times `--steps` full optimizer steps (forward, backward, AdamW) of `--batch_size` users after `--warmup` untimed
ones, for: stage 1 (the batch-16 per-position recipe's model: the HSTU checkpoint `--encoder` trained on its own),
and GeniusRec built from it by `train.finetune`'s own code with the ML-1M decoder (`train/configs/ml-1m-geniusrec.json`),
unfrozen, `--encoder_loss_weight 1`, for one split point per user (the unpacked path: one encoder pass per split)
and for `--prefix_samples` P in `--prefix` (one pass per user window); with `--dense`, stage-1 checkpoints trained
with the dense multi-item objective (`--future_items k`), each with its own loss. Variants take turns step by step
(round robin), so a change in the machine's load falls on all of them alike. Seconds per epoch = seconds per step x steps
in an epoch (users / batch size). Evaluation is not included. Run it alone.
"""

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import TrainingArguments

from data_scripts.arguments import make_parser, parse_args, run_cli
from data_scripts.processed import (
    NextItemCollator,
    NextItemDataset,
    PrefixSessionDataset,
    SessionCollator,
    SessionTrainingDataset,
    load_processed,
)
from data_scripts.splits import SequenceStore
from train import finetune
from train.evaluation.results import provenance, write_json_atomic
from train.runner import load_checkpoint, parse_with_config


@dataclass
class CostArguments:
    dataset: str = field(default="data/ml-1m", metadata={"help": "processed dataset folder"})
    encoder: str = field(default=None, metadata={"help": "stage-1 HSTU checkpoint (both variants start from it)"})
    steps: int = field(default=30, metadata={"help": "timed optimizer steps per variant"})
    warmup: int = field(default=3, metadata={"help": "untimed steps per variant first"})
    batch_size: int = field(default=16, metadata={"help": "users per step (the batch-16 recipe)"})
    prefix: str = field(default="4,8", metadata={"help": "comma-separated --prefix_samples values to time ('' for none)"})
    dense: str = field(default="", metadata={"help": "comma-separated stage-1 checkpoints trained with --future_items k: each is "
                                                     "timed with its dense objective (issue 42 item 2)"})
    output: str = field(default=None, metadata={"help": "results JSON"})


def geniusrec(args, tokenizer, store, extra):
    parser = make_parser((finetune.ModelArguments, finetune.DataArguments, TrainingArguments), config=True)
    model_args, data_args, _ = parse_with_config(parser, ["--config", "train/configs/ml-1m-geniusrec.json", "--dataset", args.dataset,
                                                          "--encoder_path", args.encoder, "--freeze_encoder", "false",
                                                          "--encoder_loss_weight", "1", "--output_dir", "/tmp/unused", *extra])
    return finetune.prepare_model(model_args, data_args, tokenizer, store), data_args


def variants(args, tokenizer, store):
    """(name, model, batches) per variant; every variant reads the same users in the same order."""
    users = args.batch_size * (args.steps + args.warmup)
    np.random.seed(0)
    stage1 = load_checkpoint(args.encoder, ("hstu",), tokenizer)
    stage1.future_heads = None  # stage 1 is the next-item loss alone, also when --encoder was trained with --future_items
    data = NextItemDataset(store, "train", stage1.config.max_position_embeddings)
    out = [("stage 1 (per position)", stage1, [NextItemCollator()([data[i] for i in range(lo, lo + args.batch_size)])
                                                for lo in range(0, users, args.batch_size)])]
    for path in filter(None, args.dense.split(",")):
        dense = load_checkpoint(path, ("hstu",), tokenizer)
        name = f"stage 1 + dense objective, k = {dense.config.future_items}, weight {dense.config.future_loss_weight:g}"
        out.append((name, dense, out[0][2]))
    prefixes = [int(x) for x in args.prefix.split(",") if x.strip()]
    if not prefixes:
        return out
    model, data_args = geniusrec(args, tokenizer, store, [])
    one = SessionTrainingDataset(store, data_args.max_length, data_args.target_length, eos_token_id=model.config.eos_token_id)
    collate = SessionCollator(model.config.pad_token_id, model.config.eos_token_id)
    out.append(("GeniusRec joint, 1 split per user (unpacked)", model,
                [collate([one[i] for i in range(lo, lo + args.batch_size)]) for lo in range(0, users, args.batch_size)]))
    for p in prefixes:
        model, data_args = geniusrec(args, tokenizer, store, ["--prefix_samples", str(p)])
        packed = PrefixSessionDataset(store, data_args.max_length, data_args.target_length, eos_token_id=model.config.eos_token_id,
                                      prefix_samples=p)
        out.append((f"GeniusRec joint, prefix packing P={p}", model,
                    [collate([packed[i] for i in range(lo, lo + args.batch_size)]) for lo in range(0, users, args.batch_size)]))
    return out


def main(argv=None):
    (args,) = parse_args(make_parser(CostArguments, description=__doc__), argv)
    started = provenance("python -m benchmarks.prefix_cost", argv)
    sequences, _, tokenizer, _ = load_processed(args.dataset)
    store = SequenceStore.from_dataset(sequences)
    runs = variants(args, tokenizer, store)
    optimizers = [torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4) for _, model, _ in runs]
    seconds = [0.0] * len(runs)
    for step in range(args.warmup + args.steps):
        for index, (_, model, batches) in enumerate(runs):
            model.train()
            began = time.perf_counter()
            model(**batches[step]).loss.backward()
            optimizers[index].step()
            optimizers[index].zero_grad()
            if step >= args.warmup:
                seconds[index] += time.perf_counter() - began
    steps_per_epoch = math.ceil(len(NextItemDataset(store, "train", 200)) / args.batch_size)
    rows = [{"variant": name, "seconds_per_step": round(s / args.steps, 4), "seconds_per_epoch": round(s / args.steps * steps_per_epoch, 1),
             "vs_stage1": round(s / seconds[0], 2)} for (name, _, _), s in zip(runs, seconds)]
    for row in rows:
        print(f"{row['variant']:<48} {row['seconds_per_step']:>8.3f} s/step {row['seconds_per_epoch']:>8.1f} s/epoch {row['vs_stage1']:>6.2f}x")
    results = {"rows": rows, "steps": args.steps, "warmup": args.warmup, "batch_size": args.batch_size, "steps_per_epoch": steps_per_epoch,
               "threads": torch.get_num_threads(), "encoder": args.encoder, **started}
    if args.output:
        write_json_atomic(args.output, results)
    return results


if __name__ == "__main__":
    run_cli(main)
