"""DPO toward novelty and diversity, chosen on validation and read once on test.

    python -m benchmarks.dpo_tradeoff --model runs/ml-1m-geniusrec-no-text --dataset data/ml-1m \\
        --pairs data/ml-1m-pairs-default data/ml-1m-pairs-nov2-div3 --betas 0.1 0.3 \\
        --max-users 2000 --output benchmarks/results/ml-1m-geniusrec-dpo.json

Separation (what is tuned on what):
- pairs: built by `train.build_preference_pairs` from the train view of a seeded random subset of users
  (each `--pairs` folder is one reward-weight setting; all must hold the same users);
- selection: every (pairs, beta) is trained with `train.dpo` (LoRA) and scored on the **validation** view of users
  *not* in the pairs (the first `--max-users` of them): next-item NDCG@10 from the decoder's first step, and
  novelty / intra-list diversity / coverage of generated 10-item sessions. The rule, fixed in advance: among the
  runs whose validation NDCG@10 is at least `(1 - --max-ndcg-drop)` x the starting model's, the one with the
  largest min(relative novelty gain, relative ILD gain); if none qualifies, the one with the smallest NDCG drop;
- test: the chosen run and the starting model are scored once on the **test** view of the same held-out users.

Writes `metrics.validation` (before + every run), `metrics.test` (chosen), `metrics.test_before`, the choice and its
rule, and a PNG of the validation trade-off beside the JSON.
"""

import argparse
import json
import os
import resource
import time

from train import dpo, evaluate
from train.evaluation.reporting import plt, save_figure
from train.evaluation.results import provenance, write_json_atomic

KEYS = ("ndcg@10", "hr@10", "mrr", "novelty", "ild", "coverage", "repetition_rate")


def score(model_dir, split, args):
    """Next-item and session metrics of a checkpoint on `split` of the held-out users (never the pair users)."""
    metrics = evaluate.main(["--model", model_dir, "--dataset", args.dataset, "--split", split, "--task", "all",
                             "--num_beams", str(args.num_beams), "--max_users", str(args.max_users), "--holdout_length", "10",
                             "--exclude_users", args.pairs[0]])
    return {k: metrics[k] for k in KEYS}


def choose(before: dict, runs: dict, max_ndcg_drop: float) -> tuple[str, str]:
    """The selection rule of the module docstring: `(run name, why)`."""
    def gain(m, key):
        return m[key] / before[key] - 1.0

    floor = (1.0 - max_ndcg_drop) * before["ndcg@10"]
    allowed = {name: m for name, m in runs.items() if m["ndcg@10"] >= floor}
    if allowed:
        name = max(allowed, key=lambda n: min(gain(allowed[n], "novelty"), gain(allowed[n], "ild")))
        return name, f"validation NDCG@10 >= {floor:.4f}; largest min(novelty gain, ILD gain)"
    name = max(runs, key=lambda n: runs[n]["ndcg@10"])
    return name, f"no run kept validation NDCG@10 >= {floor:.4f}: the smallest drop"


def main(argv=None):
    import datasets

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="stage-2 GeniusRec checkpoint")
    p.add_argument("--pairs", nargs="+", required=True, help="pairs folders, one per reward-weight setting (same users)")
    p.add_argument("--dataset", required=True, help="processed dataset folder")
    p.add_argument("--betas", type=float, nargs="+", default=[0.1], help="DPO betas to sweep")
    p.add_argument("--max_users", "--max-users", type=int, default=2000, help="held-out users scored (validation for the choice, test once)")
    p.add_argument("--max_ndcg_drop", "--max-ndcg-drop", type=float, default=0.03, help="largest relative validation NDCG@10 drop a run may have")
    p.add_argument("--num_beams", "--num-beams", type=int, default=10, help="beams for session generation")
    p.add_argument("--dpo_args", "--dpo-args", default="--use_peft true --num_train_epochs 1 --learning_rate 5e-4 --per_device_train_batch_size 32",
                   help="extra train.dpo flags")
    p.add_argument("--work_dir", "--work-dir", default="runs/dpo-sweep", help="where the DPO runs go")
    p.add_argument("--output", required=True, help="results JSON (a PNG is written beside it)")
    args = p.parse_args(argv)
    pair_users = [set(datasets.load_from_disk(path)["user_id"]) for path in args.pairs]
    if any(users != pair_users[0] for users in pair_users):
        raise ValueError("every --pairs folder must hold the same users (build them with the same --num-users and --seed), "
                         "so that one set of users stays held out")
    before = score(args.model, "validation", args)
    runs, info = {}, {}
    for pairs in args.pairs:
        for beta in args.betas:
            name = f"{os.path.basename(pairs.rstrip('/'))}-beta-{beta}"
            out = os.path.join(args.work_dir, name)
            start = time.time()
            _, summary = dpo.main(["--model", args.model, "--pairs", pairs, "--output_dir", out, "--beta", str(beta),
                                   "--disable_tqdm", "true", *args.dpo_args.split()])
            runs[name] = score(os.path.join(out, "merged"), "validation", args)
            info[name] = {"pairs": pairs, "pairs_config": json.load(open(os.path.join(pairs, "pairs_config.json"))), "beta": beta,
                          "dpo_wall_time_s": round(time.time() - start, 1), "model": os.path.join(out, "merged"),
                          "final_train_log": summary["train_log"][-1] if summary["train_log"] else None}
    chosen, why = choose(before, runs, args.max_ndcg_drop)
    test_before = score(args.model, "test", args)  # the test view: read once per model, after the choice
    test = score(info[chosen]["model"], "test", args)
    results = {
        "metrics": {"validation": {"before": before, **runs}, "test": test, "test_before": test_before},
        "chosen": chosen, "selection_rule": why, "runs": info,
        "separation": f"pairs from the train view of {len(pair_users[0])} users; weights and beta chosen on the validation view of "
                      f"{args.max_users} other users; test read once on those held-out users",
        "protocol": "leave-one-out", "filter_history": "full", "users": args.max_users,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        **provenance("python -m benchmarks.dpo_tradeoff", argv),
    }
    write_json_atomic(args.output, results)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, key in zip(axes, ("novelty", "ild")):
        ax.scatter([before["ndcg@10"]], [before[key]], color="black", label="before DPO")
        for name, metrics in runs.items():
            ax.scatter([metrics["ndcg@10"]], [metrics[key]], label=name + (" (chosen)" if name == chosen else ""))
        ax.set_xlabel("validation next-item NDCG@10")
        ax.set_ylabel(f"validation {key}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    save_figure(fig, os.path.splitext(args.output)[0] + ".png")
    print(f"chosen on validation: {chosen} ({why})")
    print(json.dumps({"test_before": test_before, "test": test}, indent=1))
    return results


if __name__ == "__main__":
    main()
