"""Session decodings of GeniusRec checkpoints on the validation users (issue 17's choice; the test split is never read).

    python -m benchmarks.session_decodings --dataset data/ml-1m --models runs/ml-1m-geniusrec-sessions \
        --grid "beam:w=1,2:beta=0,1:alpha=0,0.1" --grid "first_step:beta=0,1.5:alpha=0" \
        --output benchmarks/results/ml-1m-session-decodings-validation.jsonl

Each grid point is one `train.evaluation.sessions.generate_sessions` call (the code `train.evaluate --task sessions`
runs) with `first_step_weight` w, `encoder_query_weight` beta, `popularity_penalty` alpha and (decoding `mmr`) the
MMR trade-off lam, scored with the same
session metrics; the HSTU top-10 list of `--stage1_baseline` on the same users is the first line. Appends one JSON
line per point (machine, date, commit, command); pick the winner with the rule of BENCHMARKS.md and read the test
once with `train.evaluate`.
"""

import argparse
import itertools
import json
import time

import torch

from data_scripts.processed import NextItemDataset, load_processed
from data_scripts.splits import SequenceStore, protocol_store
from train.evaluation.results import provenance
from train.evaluation.sessions import (
    generate_sessions,
    next_item_lists,
    popularity_bias,
    session_report,
    session_report_inputs,
)
from train.runner import load_checkpoint, tune_cpu_allocator

KEYS = ["session_recall@10", "session_ndcg@10", "phr@10", "ild", "novelty", "coverage"]


def parse_grid(text: str) -> list[tuple[str, float, float, float, float]]:
    """`"beam:w=1,2:beta=0,1:alpha=0"` -> [(decoding, w, beta, alpha, lam), ...] (missing names: 0; lam, the MMR
    trade-off of decoding `mmr`: 1)."""
    decoding, *parts = text.split(":")
    values = {"w": [0.0], "beta": [0.0], "alpha": [0.0], "lam": [1.0]}
    for part in parts:
        name, _, listed = part.partition("=")
        if name not in values:
            raise ValueError(f"unknown grid name {name!r} in {text!r}: use w, beta, alpha, lam")
        values[name] = [float(v) for v in listed.split(",")]
    return list(itertools.product([decoding], values["w"], values["beta"], values["alpha"], values["lam"]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="processed dataset folder")
    p.add_argument("--models", nargs="+", required=True, help="GeniusRec checkpoints (sessions protocol)")
    p.add_argument("--stage1_baseline", default=None, help="stage-1 checkpoint whose top-10 list is scored on the same users")
    p.add_argument("--grid", action="append", required=True, help="decoding:w=..:beta=..:alpha=..:lam=.. (repeatable)")
    p.add_argument("--holdout_length", "--session_length", type=int, default=10, help="k of the sessions protocol (--session_length: the older name)")
    p.add_argument("--num_beams", type=int, default=10, help="beam width")
    p.add_argument("--candidate_counts", type=int, nargs="+", default=[0], help="two-stage decode: items retrieved per user "
                   "(generate(candidate_count=N)); 0 = the whole catalog. With 0 first, the other rows also report the share of users "
                   "whose session equals the whole-catalog one (same_as_full)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="the models' weights and activations")
    p.add_argument("--output", required=True, help="JSON lines file to append to")
    args = p.parse_args(argv)
    tune_cpu_allocator()
    sequences, items, tokenizer, _ = load_processed(args.dataset)
    store = protocol_store(SequenceStore.from_dataset(sequences), "sessions", len(tokenizer), tokenizer.num_special_tokens)
    dataset = NextItemDataset(store, "validation", 200, "sessions", args.holdout_length)
    report = session_report_inputs(store, items, dataset, args.holdout_length, len(tokenizer), tokenizer.num_special_tokens)
    counts = report["counts"]
    stamp = dict(split="validation", users=len(dataset), **provenance("python -m benchmarks.session_decodings", argv))

    def write(row):
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items() if k not in stamp}), flush=True)
        with open(args.output, "a") as f:
            f.write(json.dumps({**row, **stamp}) + "\n")

    if args.stage1_baseline:
        stage1 = load_checkpoint(args.stage1_baseline, ("hstu", "sasrec"), tokenizer).eval()
        metrics = session_report(next_item_lists(stage1, dataset, args.holdout_length), dataset, **report)
        write(dict(checkpoint=args.stage1_baseline, decoding="top-10 list", **{k: metrics[k] for k in KEYS}))
    for path in args.models:
        model = load_checkpoint(path, ("geniusrec",), tokenizer, dtype=getattr(torch, args.dtype)).eval()
        for decoding, w, beta, alpha, lam in [point for grid in args.grid for point in parse_grid(grid)]:
            full = None
            for count in args.candidate_counts:
                start = time.time()
                lists = generate_sessions(model, dataset, args.holdout_length, args.num_beams, 256, progress=False, decoding=decoding,
                                          item_bias=popularity_bias(counts, alpha) if alpha else None, first_step_weight=w,
                                          encoder_query_weight=beta, item_vectors=report["vectors"], mmr_trade_off=lam,
                                          candidate_count=count or None)
                seconds = time.time() - start
                metrics = session_report(lists, dataset, **report)
                full = lists if count == 0 else full
                agreement = {"same_as_full": sum(a == b for a, b in zip(lists, full)) / len(lists)} if count and full else {}
                write(dict(checkpoint=path, dtype=args.dtype, decoding=decoding, first_step_weight=w, encoder_query_weight=beta,
                           popularity_penalty=alpha, **({"mmr_trade_off": lam} if decoding == "mmr" else {}),
                           **({"candidate_count": count} if count else {}), seconds=round(seconds, 1), **{k: metrics[k] for k in KEYS},
                           **agreement))


if __name__ == "__main__":
    main()
