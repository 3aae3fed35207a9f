"""Books scale end to end on one machine: each step's wall time, throughput and peak RSS (`/usr/bin/time -v`).

    python -m benchmarks.books_scale --work /work/books --rows 29500000 --output benchmarks/results/books-scale.json
    python -m benchmarks.books_scale --work /tmp/tiny --rows 100000 --pretrain_steps 3 --eval_users 50 --session_users 8 \
        --new_items 10 --output /tmp/b.json

Steps, each its own process under `/usr/bin/time -v`, in order:
`generate` (`data_scripts.make_synthetic_amazon`, `--rows` reviews), `prepare` (`data_scripts.amazon_reviews`,
5-core, 2 workers), `pretrain` (`train.pretrain`, the per-position sampled softmax, `--pretrain_steps` steps, no
validation during training; the final validation on a seeded `--eval_users` sample, `--max_eval_users`),
`evaluate` (`train.evaluate`: full ranking of `--eval_users` test users over the whole catalog, scores in chunks of
1,024 users x 65,536 items), `sessions` (`generate()` with 10 beams and 10 items for `--session_users` users,
`--session_batch` per call, a GeniusRec built on the pretrained encoder: speed does not depend on the decoder's
weights), `sessions_two_stage` (the same users through the two-stage decode, `generate(candidate_count=
--candidate_count)`, `--two_stage_batch` per call) and `add_items` (`--new_items` new items appended to that model).
A step whose `<work>/<step>.done` exists is not run again (its recorded figures are reused), so the chain
continues across sessions; the results file is rewritten after every step.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time

from train.evaluation.results import provenance, write_json_atomic

STEPS = ("generate", "prepare", "pretrain", "evaluate", "sessions", "sessions_two_stage", "add_items")


def parse_time_v(text: str) -> dict:
    """Wall seconds and peak RSS (MB) from `/usr/bin/time -v` output."""
    out = {}
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text)
    if wall:
        parts = [float(p) for p in wall.group(1).split(":")]
        out["wall_s"] = round(sum(p * 60**i for i, p in enumerate(reversed(parts))), 2)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if rss:
        out["peak_rss_mb"] = round(int(rss.group(1)) / 1024, 1)
    return out


def commands(args) -> dict:
    py, w = sys.executable, args.work
    return {
        "generate": [py, "-m", "data_scripts.make_synthetic_amazon", "--out", f"{w}/raw", "--rows", str(args.rows)],
        "prepare": [py, "-m", "data_scripts.amazon_reviews", "--reviews", f"{w}/raw/Synthetic.jsonl.gz", "--meta",
                    f"{w}/raw/meta_Synthetic.jsonl.gz", "--out", f"{w}/data", "--workers", "2", "--quiet"],
        "pretrain": [py, "-m", "train.pretrain", "--config", "train/configs/ml-1m-hstu.json", "--dataset", f"{w}/data", "--output_dir",
                     f"{w}/hstu", "--max_length", str(args.max_length), "--max_steps", str(args.pretrain_steps), "--eval_strategy", "no",
                     "--save_strategy", "no", "--load_best_model_at_end", "false", "--evaluate_test", "false", "--disable_tqdm", "true",
                     "--max_eval_users", str(args.eval_users)],
        "evaluate": [py, "-m", "train.evaluate", "--model", f"{w}/hstu", "--dataset", f"{w}/data", "--max_users", str(args.eval_users),
                     "--output", f"{w}/evaluate.json"],
        "sessions": [py, "-m", "benchmarks.books_scale", "--step", "sessions", "--work", w, "--session_users", str(args.session_users),
                     "--session_batch", str(args.session_batch), "--output", f"{w}/sessions.json"],
        "sessions_two_stage": [py, "-m", "benchmarks.books_scale", "--step", "sessions", "--work", w, "--session_users", str(args.session_users),
                               "--session_batch", str(args.two_stage_batch), "--candidate_count", str(args.candidate_count),
                               "--output", f"{w}/sessions_two_stage.json"],
        "add_items": [py, "-m", "benchmarks.books_scale", "--step", "add_items", "--work", w, "--new_items", str(args.new_items),
                      "--output", f"{w}/add_items.json"],
    }


def sessions_step(args) -> dict:
    """`generate()` for the first `--session_users` test users, `--session_batch` at a time: `(batch x 10 beams,
    catalog)` scores per step is the largest tensor; with `--candidate_count C` the two-stage decode, whose largest
    are retrieval's `(batch, min(catalog, 65,536))` chunk and the steps' `(batch x 10, C)`."""
    import torch

    from data_scripts.processed import NextItemCollator, NextItemDataset, load_processed
    from data_scripts.splits import SequenceStore
    from modeling_geniusrec import GeniusRecForSessionGeneration
    from train.runner import tune_cpu_allocator

    tune_cpu_allocator()
    sequences, _, tokenizer, _ = load_processed(f"{args.work}/data")
    model = GeniusRecForSessionGeneration.from_encoder_pretrained(f"{args.work}/hstu").eval()
    view = NextItemDataset(SequenceStore.from_dataset(sequences), "test", model.config.encoder_config.max_position_embeddings)
    users = min(args.session_users, len(view))
    collator, start, lengths = NextItemCollator(), time.time(), []
    with torch.no_grad():
        for lo in range(0, users, args.session_batch):
            rows = list(range(lo, min(lo + args.session_batch, users)))
            batch = collator.pad_histories([view[i] for i in rows])
            out = model.generate(**batch, banned_item_ids=view.filter_items("full", rows), num_beams=10, max_new_tokens=10, min_new_tokens=10,
                                 candidate_count=args.candidate_count)
            lengths.append(out.shape[1] - 1)
    wall = time.time() - start
    if not args.candidate_count:  # the model add_items grows
        model.save_pretrained(f"{args.work}/geniusrec")
        tokenizer.save_pretrained(f"{args.work}/geniusrec")
    if args.candidate_count:
        from modeling_geniusrec import scoring

        largest = max(min(args.session_batch, scoring.SCORE_CHUNK_ROWS) * min(model.config.vocab_size, scoring.SCORE_CHUNK_ITEMS),
                      args.session_batch * 10 * args.candidate_count)
    else:
        largest = args.session_batch * 10 * model.config.vocab_size
    return {"users": users, "catalog": model.config.vocab_size, "seconds": round(wall, 2), "sessions_per_second": round(users / wall, 2),
            "items_per_session": max(lengths), "users_per_call": args.session_batch, "candidate_count": args.candidate_count,
            "largest_scores_tensor_mb": round(largest * 4 / 2**20, 1)}


def add_items_step(args) -> dict:
    import torch

    from modeling_geniusrec import GeniusRecForSessionGeneration

    model = GeniusRecForSessionGeneration.from_pretrained(f"{args.work}/geniusrec").eval()
    before = model.config.vocab_size
    start = time.time()
    model.add_items(args.new_items)
    wall = time.time() - start
    assert model.config.vocab_size == before + args.new_items
    with torch.no_grad():
        assert model.item_vectors(before, before + args.new_items).shape[0] == args.new_items
    return {"catalog_before": before, "new_items": args.new_items, "seconds": round(wall, 3),
            "items_per_second": round(args.new_items / max(wall, 1e-9), 1)}


def throughput(step: str, figures: dict, args) -> dict:
    wall = figures.get("wall_s") or 0
    if not wall:
        return {}
    per = {"generate": ("reviews_per_second", args.rows), "prepare": ("reviews_per_second", args.rows),
           "pretrain": ("steps_per_second", args.pretrain_steps), "evaluate": ("users_per_second", args.eval_users)}
    if step in per:
        name, count = per[step]
        return {name: round(count / wall, 1)}
    return {}


def run_chain(args) -> dict:
    os.makedirs(args.work, exist_ok=True)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    results = {"rows": args.rows, "steps": {}, **provenance("python -m benchmarks.books_scale", args.argv)}
    for step, cmd in commands(args).items():
        if step not in args.steps:
            continue
        done = os.path.join(args.work, f"{step}.done")
        if not os.path.exists(done):
            with open(os.path.join(args.work, f"{step}.log"), "w") as log, open(os.path.join(args.work, f"{step}.time"), "w") as timing:
                code = subprocess.run(["/usr/bin/time", "-v", *cmd], cwd=root, stdout=log, stderr=timing).returncode
            if code != 0:
                results["steps"][step] = {"failed": code, "log": os.path.join(args.work, f"{step}.log")}
                write_json_atomic(args.output, results)
                raise SystemExit(f"step {step} failed (exit {code}): see {args.work}/{step}.log and {step}.time")
            with open(done, "w") as f:
                f.write(" ".join(cmd) + "\n")
        figures = {"command": open(done).read().strip(), **parse_time_v(open(os.path.join(args.work, f"{step}.time")).read())}
        figures.update(throughput(step, figures, args))
        inner = os.path.join(args.work, f"{step}.json")
        if step in ("sessions", "sessions_two_stage", "add_items") and os.path.exists(inner):
            figures.update(json.load(open(inner)))
        if step == "prepare" and os.path.exists(os.path.join(args.work, "data", "stats.json")):
            stats = json.load(open(os.path.join(args.work, "data", "stats.json")))
            figures.update({k: stats[k] for k in ("users", "items", "interactions") if k in stats})
        if step == "evaluate" and os.path.exists(os.path.join(args.work, "evaluate.json")):
            metrics = json.load(open(os.path.join(args.work, "evaluate.json")))["metrics"]["test"]
            figures.update({k: metrics[k] for k in ("hr@10", "ndcg@10") if k in metrics})
        results["steps"][step] = figures
        write_json_atomic(args.output, results)
        print(step, json.dumps({k: v for k, v in figures.items() if k != "command"}), flush=True)
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, help="working folder (raw files, processed data, checkpoints, per-step logs)")
    p.add_argument("--rows", type=int, default=29_500_000, help="synthetic reviews (Amazon Books 2023: 29.5M)")
    p.add_argument("--steps", nargs="*", default=list(STEPS), choices=STEPS, help="which steps to run (default: all, in order)")
    p.add_argument("--max_length", type=int, default=50, help="pretrain: history length")
    p.add_argument("--pretrain_steps", type=int, default=300, help="pretrain: optimizer steps (batch 128)")
    p.add_argument("--eval_users", type=int, default=10_000, help="evaluate: test users ranked over the whole catalog")
    p.add_argument("--session_users", type=int, default=1_000, help="sessions: users to generate for")
    p.add_argument("--session_batch", type=int, default=8, help="sessions: users per generate() call")
    p.add_argument("--candidate_count", type=int, default=None, help="sessions_two_stage: items retrieved per user (default 1,000 there; "
                   "the sessions step decodes over the whole catalog)")
    p.add_argument("--two_stage_batch", type=int, default=64, help="sessions_two_stage: users per generate() call")
    p.add_argument("--new_items", type=int, default=1_000, help="add_items: items appended")
    p.add_argument("--step", choices=["sessions", "add_items"], default=None, help=argparse.SUPPRESS)  # one in-process step
    p.add_argument("--output", required=True, help="results JSON")
    args = p.parse_args(argv)
    args.argv = argv
    if not args.step and args.candidate_count is None:
        args.candidate_count = 1_000
    if args.step:
        out = (sessions_step if args.step == "sessions" else add_items_step)(args)
        write_json_atomic(args.output, out)
        return out
    return run_chain(args)


if __name__ == "__main__":
    main()
