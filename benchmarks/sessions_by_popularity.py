"""Sessions vs the list by target popularity: of the held-out next 10 items in each popularity bucket (head / torso /
tail, `train.evaluation.buckets`), how many the encoder's top-10 list and GeniusRec's generated session recover.

    python -m benchmarks.sessions_by_popularity --geniusrec runs/quickstart/geniusrec --stage1 runs/quickstart/hstu \\
        --dataset runs/quickstart/data --max_users 1000 --label "quick-start models" \\
        --output benchmarks/results/sessions-by-popularity-quickstart.json

Sessions protocol, test view (each user's last 10 items held out; the models must come from the same split), the
whole history banned; GeniusRec decodes with beam search mixing the first step and the encoder query into every step
(`--first_step_weight`, `--encoder_query_weight`, the benchmark's chosen decoding). Recall per bucket = hits on the
held-out items of that bucket / held-out items of that bucket, over the evaluated users. Writes the JSON and a bar
chart (PNG) beside it.
"""

import os
import sys
from dataclasses import dataclass, field

import numpy as np
import torch

from data_scripts.arguments import make_parser, parse_args, run_cli
from train.evaluation.results import provenance, write_json_atomic


@dataclass
class SessionsByPopularityArguments:
    geniusrec: str = field(default=None, metadata={"help": "GeniusRec checkpoint (sessions split)"})
    stage1: str = field(default=None, metadata={"help": "the stage-1 checkpoint whose top-10 list is the baseline (same split)"})
    dataset: str = field(default=None, metadata={"help": "processed dataset folder"})
    max_users: int | None = field(default=None, metadata={"help": "a seeded sample of this many test users (default: all)"})
    num_beams: int = field(default=10, metadata={"help": "beams"})
    first_step_weight: float = field(default=1.0, metadata={"help": "the first step's scores mixed into every step"})
    encoder_query_weight: float = field(default=2.0, metadata={"help": "the encoder's query mixed into every step"})
    output: str = field(default=None, metadata={"help": "results JSON (the PNG goes beside it)"})
    label: str = field(default="", metadata={"help": "what the models are, for the plot's title (e.g. quick-start models)"})


def bucket_recall(lists: list, targets: list, bucket: np.ndarray) -> dict:
    """`{head, torso, tail}` -> recovered / held-out items of that bucket, and the held-out counts."""
    from train.evaluation.buckets import BUCKETS

    hits, totals = np.zeros(3), np.zeros(3)
    for items, held_out in zip(lists, targets):
        chosen = set(items)
        for item in held_out:
            b = bucket[item]
            if b >= 0:
                totals[b] += 1
                hits[b] += item in chosen
    return {name: float(hits[i] / totals[i]) if totals[i] else None for i, name in enumerate(BUCKETS)} | {
        f"{name}_held_out": int(totals[i]) for i, name in enumerate(BUCKETS)}


def plot(result: dict, path: str) -> None:
    from train.evaluation.reporting import plt, save_figure

    names = ("head", "torso", "tail")
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for offset, (label, key) in enumerate((("encoder's top-10 list", "list"), ("GeniusRec session", "session"))):
        values = [result[key][n] or 0.0 for n in names]
        ax.bar(np.arange(3) + (offset - 0.5) * 0.38, values, width=0.38, label=label)
    ax.set_xticks(np.arange(3), [f"{n}\n({result['list'][n + '_held_out']:,} held out)" for n in names])
    ax.set_ylabel("recall of the next 10 items")
    label = f"; {result['label']}" if result.get("label") else ""
    ax.set_title(f"Sessions vs list by target popularity ({result['users']:,} test users{label})", fontsize=9)
    ax.legend(fontsize=8)
    save_figure(fig, path)


@torch.no_grad()
def main(argv=None) -> dict:
    parser = make_parser(SessionsByPopularityArguments, description=__doc__)
    (args,) = parse_args(parser, argv)
    from data_scripts.processed import NextItemDataset, load_processed
    from data_scripts.splits import SequenceStore
    from modeling_geniusrec import GeniusRecForSessionGeneration
    from train.evaluation.buckets import store_buckets
    from train.evaluation.sessions import generate_sessions, next_item_lists
    from train.runner import load_checkpoint, sample_users

    sequences, _, tokenizer, _ = load_processed(args.dataset)
    store = SequenceStore.from_dataset(sequences)
    model = GeniusRecForSessionGeneration.from_pretrained(args.geniusrec).eval()
    stage1 = load_checkpoint(args.stage1, ("hstu", "sasrec"), tokenizer).eval()
    view = sample_users(NextItemDataset(store, "test", model.config.encoder_config.max_position_embeddings, "sessions", 10), args.max_users)
    bucket, description = store_buckets(store, "sessions", 10, model.config.vocab_size, model.config.num_special_tokens)
    targets = [view[i]["target_session"].tolist() for i in range(len(view))]
    sessions = generate_sessions(model, view, 10, args.num_beams, first_step_weight=args.first_step_weight,
                                 encoder_query_weight=args.encoder_query_weight)
    lists = next_item_lists(stage1, view, 10)
    result = {"users": len(view), "label": args.label, "list": bucket_recall(lists, targets, bucket),
              "session": bucket_recall(sessions, targets, bucket),
              "buckets": description, "models": {"geniusrec": args.geniusrec, "stage1": args.stage1},
              "decoding": {"num_beams": args.num_beams, "first_step_weight": args.first_step_weight,
                           "encoder_query_weight": args.encoder_query_weight},
              **provenance("python -m benchmarks.sessions_by_popularity", argv)}
    for name in ("head", "torso", "tail"):
        print(f"{name:>6}: list {result['list'][name] or 0:.4f}  session {result['session'][name] or 0:.4f}  "
              f"({result['list'][name + '_held_out']:,} held-out items)")
    if args.output:
        write_json_atomic(args.output, result)
        plot(result, os.path.splitext(args.output)[0] + ".png")
    return result


if __name__ == "__main__":
    sys.exit(run_cli(main))
