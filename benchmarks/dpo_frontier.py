"""DPO against decoding-time knobs: two accuracy/novelty/diversity frontiers on validation, one choice, test once.

    python -m benchmarks.dpo_frontier knobs --model runs/s24/set3-fixed10-42 --dataset data/ml-1m --exclude_users runs/pairs/s28-nov2-div3 \\
        --alphas 0.1 0.2 0.3 0.5 --trade_offs 0.9 0.8 0.7 0.6 0.5 --output benchmarks/results/ml-1m-dpo-frontier-validation.jsonl
    python -m benchmarks.dpo_frontier dpo --name gated-lr1e-4 --pairs runs/pairs/s28-gated --model runs/s24/set3-fixed10-42 \\
        --dataset data/ml-1m --dpo_args "--use_peft true --learning_rate 1e-4 --beta 0.3" --output ...-validation.jsonl
    python -m benchmarks.dpo_frontier choose --model runs/s24/set3-fixed10-42 --dataset data/ml-1m --exclude_users runs/pairs/s28-nov2-div3 \\
        --validation ...-validation.jsonl --output benchmarks/results/ml-1m-geniusrec-dpo.json

Users and protocol: the **sessions** protocol (the starting model's), scored on the users *not* in the preference
pairs (`--exclude_users`: a pairs folder; every pairs setting is built from the same seeded users); each point is a
10-item session per user decoded the way the starting model was chosen (beam 10, first-step mix `--first_step_weight`,
encoder query `--encoder_query_weight`) and scored against the user's real next 10 items: `ndcg@10` and `recall@10`
are the session's, `novelty` (bits), `ild` (on the vectors the results name in `ild_features`), `coverage`.

- `knobs` (free at decoding time, no training): the starting model with a popularity penalty alpha (subtract
  alpha * log(1 + training count) from every item's score at every step) and with an MMR re-rank of its beams' items
  (trade-off lambda: relevance = the beams' Borda count, similarity = cosine of the ILD vectors).
- `dpo`: one `train.dpo` run (LoRA) on one pairs folder, its merged model scored with the same decoding.
- `choose`, the rule fixed before any DPO run was scored: among the DPO runs whose validation NDCG@10 is at least
  `(1 - --max_ndcg_drop)` x the starting model's, the one with the largest min(novelty gain, ILD gain); if none
  qualifies, the smallest NDCG@10 drop. Then the knob comparison on validation: the best novelty and the best ILD any
  knob point reaches at a validation NDCG@10 no lower than the chosen run's. The test view of the same held-out
  users is read once, for the starting model and the chosen run. Writes `metrics.validation` (every point),
  `metrics.test_before`, `metrics.test`, the choice, the comparison, the targets with their distances, and
  `ml-1m-dpo-frontier.png` (both frontiers) beside the output.

Every `knobs` / `dpo` point is one JSON line (machine, date, commit, command), so a sweep continues across sessions.
"""

import argparse
import json
import os
import time

from data_scripts.processed import NextItemDataset, load_processed
from data_scripts.splits import SequenceStore, protocol_store
from train.evaluate import read_user_ids
from train.evaluation.reporting import plt, save_figure
from train.evaluation.results import provenance, write_json_atomic
from train.evaluation.sessions import generate_sessions, popularity_bias, session_report, session_report_inputs
from train.runner import load_checkpoint, tune_cpu_allocator

TARGETS = {"novelty": 0.10, "ild": 0.10, "ndcg": -0.03}


class Scorer:
    """The held-out users' view of one split and what the session report needs; `score(model, ...)` -> metrics."""

    def __init__(self, dataset_dir: str, split: str, exclude_users: str, holdout_length: int = 10):
        sequences, self.items, tokenizer, _ = load_processed(dataset_dir)
        self.tokenizer = tokenizer
        store = protocol_store(SequenceStore.from_dataset(sequences), "sessions", len(tokenizer), tokenizer.num_special_tokens)
        self.view = NextItemDataset(store, split, 200, "sessions", holdout_length)
        excluded = read_user_ids(exclude_users)
        self.view.select([i for i, u in enumerate(self.view.users) if store.user_ids[int(u)] not in excluded])
        self.report = session_report_inputs(store, self.items, self.view, holdout_length, len(tokenizer), tokenizer.num_special_tokens)
        self.k = holdout_length

    def score(self, model, first_step_weight: float, encoder_query_weight: float, alpha: float = 0.0, trade_off: float | None = None,
              num_beams: int = 10) -> dict:
        start = time.time()
        lists = generate_sessions(model, self.view, self.k, num_beams, 256, progress=False, decoding="beam" if trade_off is None else "mmr",
                                  item_bias=popularity_bias(self.report["counts"], alpha) if alpha else None,
                                  first_step_weight=first_step_weight, encoder_query_weight=encoder_query_weight,
                                  item_vectors=self.report["vectors"], mmr_trade_off=1.0 if trade_off is None else trade_off)
        metrics = session_report(lists, self.view, **self.report)
        k = self.k  # `ndcg` (what the rule reads) is `ndcg@k`, the session's NDCG against the real next k items
        return {"ndcg": metrics[f"session_ndcg@{k}"], f"ndcg@{k}": metrics[f"session_ndcg@{k}"], f"recall@{k}": metrics[f"session_recall@{k}"],
                **{key: metrics[key] for key in ("novelty", "ild", "coverage", "ild_features")},
                "users": len(self.view), "seconds": round(time.time() - start, 1)}


def append(path: str, row: dict, argv) -> None:
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps({**row, **provenance("python -m benchmarks.dpo_frontier", argv)}) + "\n")


def gains(point: dict, before: dict) -> dict:
    """Relative change of each metric over the starting model (0 where both are 0)."""
    def change(a, b):
        return a / b - 1.0 if b else (0.0 if a == b else float("inf"))

    return {key: change(point[key], before[key]) for key in ("ndcg", "novelty", "ild", "coverage")}


def choose(before: dict, runs: dict, max_ndcg_drop: float) -> tuple[str, str]:
    """The rule of the module docstring over `{name: validation metrics}`: `(run name, why)`."""
    floor = (1.0 - max_ndcg_drop) * before["ndcg"]
    allowed = {name: m for name, m in runs.items() if m["ndcg"] >= floor}
    if allowed:
        name = max(allowed, key=lambda n: min(gains(allowed[n], before)["novelty"], gains(allowed[n], before)["ild"]))
        return name, f"validation NDCG@10 >= {floor:.4f}; the largest min(novelty gain, ILD gain)"
    name = max(runs, key=lambda n: runs[n]["ndcg"])
    return name, f"no run kept validation NDCG@10 >= {floor:.4f}: the smallest drop"


def knob_comparison(chosen: dict, knobs: list[dict]) -> dict:
    """The best novelty and the best ILD any knob point reaches at a validation NDCG@10 >= the chosen run's, and
    whether the chosen run beats both."""
    at_least = [k for k in knobs if k["ndcg"] >= chosen["ndcg"]]
    if not at_least:
        return {"knob_points_at_or_above_its_ndcg": 0, "dpo_beats_knobs": True}
    best = {key: max(at_least, key=lambda k: k[key]) for key in ("novelty", "ild")}
    return {"knob_points_at_or_above_its_ndcg": len(at_least),
            **{f"best_knob_{key}": {"value": p[key], "knob": p["knob"], "setting": p["setting"], "ndcg": p["ndcg"]}
               for key, p in best.items()},
            "dpo_beats_knobs": chosen["novelty"] > best["novelty"]["novelty"] and chosen["ild"] > best["ild"]["ild"]}


def read_points(path: str, model: str) -> tuple[dict, list[dict], dict]:
    """(the starting model's point, the knob points, {dpo name: point}) of `model` in a validation JSON-lines file
    (the latest line of each name wins)."""
    before, knobs, runs = None, {}, {}
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            if row.get("model") != model and row.get("start_model") != model:
                continue
            if row["kind"] == "before":
                before = row
            elif row["kind"] == "knob":
                knobs[(row["knob"], row["setting"])] = row
            else:
                runs[row["name"]] = row
    if before is None:
        raise ValueError(f"{path} has no `knobs` line for {model}: run `python -m benchmarks.dpo_frontier knobs` first")
    return before, list(knobs.values()), runs


def plot(before: dict, knobs: list[dict], runs: dict, chosen: str, path: str) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("novelty", "ild")):
        for knob, style in (("popularity_penalty", "o-"), ("mmr", "s-")):
            series = sorted([k for k in knobs if k["knob"] == knob], key=lambda k: -k["ndcg"])
            ax.plot([before["ndcg"]] + [k["ndcg"] for k in series], [before[key]] + [k[key] for k in series], style,
                    label=f"decoding knob: {knob}", alpha=0.8)
        ax.scatter([m["ndcg"] for m in runs.values()], [m[key] for m in runs.values()], marker="^", color="tab:red", label="DPO runs")
        if chosen in runs:
            ax.scatter([runs[chosen]["ndcg"]], [runs[chosen][key]], s=160, facecolors="none", edgecolors="black", label=f"chosen: {chosen}")
        ax.scatter([before["ndcg"]], [before[key]], marker="*", s=160, color="black", label="starting model")
        ax.axvline(0.97 * before["ndcg"], color="grey", ls=":", lw=1)
        ax.axhline(1.10 * before[key], color="grey", ls=":", lw=1)
        ax.set_xlabel("validation session NDCG@10")
        ax.set_ylabel(f"validation {key}" + (" (bits)" if key == "novelty" else ""))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("ML-1M sessions protocol, held-out users: DPO vs decoding-time knobs (dotted: -3% NDCG, +10%)", fontsize=9)
    save_figure(fig, path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("phase", choices=["knobs", "dpo", "choose"], help="what to run (see above)")
    p.add_argument("--model", required=True, help="the starting stage-2 GeniusRec checkpoint (sessions protocol)")
    p.add_argument("--dataset", required=True, help="processed dataset folder")
    p.add_argument("--exclude_users", default=None, help="a pairs folder: its users are never scored (default: --pairs)")
    p.add_argument("--output", required=True, help="knobs/dpo: the validation JSON-lines file to append to; choose: the results JSON")
    p.add_argument("--validation", default=None, help="choose: the validation JSON-lines file")
    p.add_argument("--holdout_length", type=int, default=10, help="k of the sessions protocol (items per session)")
    p.add_argument("--first_step_weight", type=float, default=1.0, help="the starting model's first-step mix (its chosen decoding)")
    p.add_argument("--encoder_query_weight", type=float, default=2.0, help="the starting model's encoder-query weight (its chosen decoding)")
    p.add_argument("--alphas", type=float, nargs="*", default=[0.05, 0.1, 0.2, 0.3, 0.5, 0.8], help="knobs: popularity penalties")
    p.add_argument("--trade_offs", type=float, nargs="*", default=[0.9, 0.8, 0.7, 0.6, 0.5, 0.3], help="knobs: MMR trade-offs")
    p.add_argument("--combined", nargs="*", default=[], help="knobs: both at once, as ALPHA:LAMBDA pairs (e.g. 0.3:0.5)")
    p.add_argument("--name", default=None, help="dpo: the run's name")
    p.add_argument("--pairs", default=None, help="dpo: the pairs folder (train.build_preference_pairs)")
    p.add_argument("--dpo_args", default="--use_peft true", help="dpo: extra train.dpo flags")
    p.add_argument("--work_dir", default="runs/dpo-frontier", help="dpo: where the runs go")
    p.add_argument("--max_ndcg_drop", type=float, default=0.03, help="choose: largest relative validation NDCG@10 drop allowed")
    args = p.parse_args(argv)
    exclude = args.exclude_users or args.pairs
    if not exclude:
        p.error("--exclude_users (or, for dpo, --pairs) is required: the pair users are never scored")
    tune_cpu_allocator()
    decoding = dict(first_step_weight=args.first_step_weight, encoder_query_weight=args.encoder_query_weight)
    if args.phase == "knobs":
        scorer = Scorer(args.dataset, "validation", exclude, args.holdout_length)
        model = load_checkpoint(args.model, ("geniusrec",), scorer.tokenizer).eval()
        append(args.output, {"kind": "before", "model": args.model, **decoding, **scorer.score(model, **decoding)}, argv)
        for alpha in args.alphas:
            append(args.output, {"kind": "knob", "knob": "popularity_penalty", "setting": alpha, "model": args.model, **decoding,
                                 **scorer.score(model, **decoding, alpha=alpha)}, argv)
        for trade_off in args.trade_offs:
            append(args.output, {"kind": "knob", "knob": "mmr", "setting": trade_off, "model": args.model, **decoding,
                                 **scorer.score(model, **decoding, trade_off=trade_off)}, argv)
        for pair in args.combined:  # both knobs at once: "ALPHA:LAMBDA"
            alpha, trade_off = (float(v) for v in pair.split(":"))
            append(args.output, {"kind": "knob", "knob": "popularity_penalty+mmr", "setting": pair, "model": args.model, **decoding,
                                 **scorer.score(model, **decoding, alpha=alpha, trade_off=trade_off)}, argv)
    elif args.phase == "dpo":
        from train import dpo

        if not args.name or not args.pairs:
            p.error("dpo needs --name and --pairs")
        out = os.path.join(args.work_dir, args.name)
        start = time.time()
        _, summary = dpo.main(["--model", args.model, "--pairs", args.pairs, "--output_dir", out, "--disable_tqdm", "true",
                               *args.dpo_args.split()])
        wall = round(time.time() - start, 1)
        scorer = Scorer(args.dataset, "validation", exclude, args.holdout_length)
        merged = load_checkpoint(os.path.join(out, "merged"), ("geniusrec",), scorer.tokenizer).eval()
        pairs_config = json.load(open(os.path.join(args.pairs, "pairs_config.json")))
        append(args.output, {"kind": "dpo", "name": args.name, "start_model": args.model, "model": os.path.join(out, "merged"),
                             "pairs": args.pairs, "pairs_config": pairs_config, "dpo_args": args.dpo_args, "dpo_wall_time_s": wall,
                             "final_train_log": summary["train_log"][-1] if summary["train_log"] else None, **decoding,
                             **scorer.score(merged, **decoding)}, argv)
    else:
        return choose_and_test(args, exclude, decoding, argv)


def choose_and_test(args, exclude: str, decoding: dict, argv) -> dict:
    before, knobs, runs = read_points(args.validation, args.model)
    if not runs:
        raise ValueError(f"{args.validation} has no DPO run of {args.model}: run `python -m benchmarks.dpo_frontier dpo` first")
    chosen, why = choose(before, runs, args.max_ndcg_drop)
    comparison = knob_comparison(runs[chosen], knobs)
    scorer = Scorer(args.dataset, "test", exclude, args.holdout_length)  # the test view: read once per model, after the choice
    test_before = scorer.score(load_checkpoint(args.model, ("geniusrec",), scorer.tokenizer).eval(), **decoding)
    test = scorer.score(load_checkpoint(runs[chosen]["model"], ("geniusrec",), scorer.tokenizer).eval(), **decoding)
    relative = gains(test, test_before)
    targets = {key: {"target": bound, "measured": round(relative[key], 4), "met": relative[key] >= bound,
                     "distance": round(max(0.0, bound - relative[key]), 4)} for key, bound in TARGETS.items()}
    results = {
        "metrics": {"validation": {"before": before, **{f"knob:{k['knob']}={k['setting']}": k for k in knobs}, **runs},
                    "test_before": test_before, "test": test},
        "chosen": chosen, "selection_rule": why, "relative_test": relative, "targets": targets,
        "validation_knob_comparison": comparison, "ild_features": test["ild_features"],
        "decoding": {"num_beams": 10, **decoding}, "protocol": "sessions", "holdout_length": args.holdout_length, "users": test["users"],
        "separation": "pairs from the train view of the pair users only; every choice on the validation view of the other "
                      "users; the test view of those held-out users read once for the starting model and the chosen run",
        **provenance("python -m benchmarks.dpo_frontier", argv),
    }
    write_json_atomic(args.output, results)
    plot(before, knobs, runs, chosen, os.path.join(os.path.dirname(args.output), "ml-1m-dpo-frontier.png"))
    print(f"chosen on validation: {chosen} ({why}); beats the knobs at its accuracy: {comparison['dpo_beats_knobs']}")
    print(json.dumps({"test_before": test_before, "test": test, "relative": relative}, indent=1))
    return results


if __name__ == "__main__":
    main()
