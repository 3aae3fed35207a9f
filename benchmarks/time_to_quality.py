"""Training time to a validation NDCG@10 target, read from `train.pretrain` results files, with one curve per run.

    python -m benchmarks.time_to_quality --runs benchmarks/results/ml-1m-hstu-position.json benchmarks/results/ml-1m-hstu-cpu-fast.json \\
        --target 0.1893 --output benchmarks/results/ml-1m-cpu-time-to-quality.json

For each results file: the first validation whose NDCG@10 reaches `--target` (epoch and `elapsed_s`, the wall clock
from the start of training to the end of that validation, every earlier validation included), the best validation,
the test metrics of the run, its seconds per epoch. Writes the table as JSON and the curves (training seconds vs
validation NDCG@10, the target dotted) as a PNG beside it.
"""

import argparse
import json
import os

from train.evaluation.reporting import plt, save_figure
from train.evaluation.results import provenance, write_json_atomic


def first_reaching(history: list[dict], target: float) -> dict | None:
    """The first validation entry with `eval_ndcg@10 >= target` as `{epoch, elapsed_s, ndcg@10}`, else None."""
    for entry in history:
        if entry.get("eval_ndcg@10", 0.0) >= target:
            return {"epoch": entry["epoch"], "elapsed_s": entry.get("elapsed_s"), "ndcg@10": entry["eval_ndcg@10"]}
    return None


def summary(path: str, target: float) -> dict:
    run = json.load(open(path))
    history = [e for e in run.get("eval_history", []) if "eval_ndcg@10" in e]
    best = max(history, key=lambda e: e["eval_ndcg@10"]) if history else None
    test = run.get("metrics", {}).get("test", {})
    return {"results_file": path, "command": run.get("command"), "commit": run.get("commit"), "date": run.get("date"),
            "machine": run.get("machine"), "epochs": run.get("epochs"), "seconds_per_epoch": run.get("seconds_per_epoch"),
            "wall_time_s": run.get("wall_time_s"), "reached": first_reaching(history, target),
            "best_validation": {"epoch": best["epoch"], "ndcg@10": best["eval_ndcg@10"]} if best else None,
            "test_ndcg@10": test.get("ndcg@10"), "test_hr@10": test.get("hr@10"),
            "curve": [(e.get("elapsed_s"), e["eval_ndcg@10"]) for e in history]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True, help="train.pretrain results files (with eval_history)")
    p.add_argument("--labels", nargs="*", default=None, help="one label per run (default: the file names)")
    p.add_argument("--target", type=float, default=0.1893, help="validation NDCG@10 to reach (default: published HSTU-large)")
    p.add_argument("--budget_s", type=float, default=600.0, help="the time budget drawn on the plot (seconds)")
    p.add_argument("--output", required=True, help="JSON table (a PNG of the curves is written beside it)")
    args = p.parse_args(argv)
    labels = args.labels or [os.path.splitext(os.path.basename(r))[0] for r in args.runs]
    if len(labels) != len(args.runs):
        p.error(f"--labels has {len(labels)} entries for {len(args.runs)} runs")
    table = {label: summary(path, args.target) for label, path in zip(labels, args.runs)}
    write_json_atomic(args.output, {"target": args.target, "budget_s": args.budget_s, "runs": table,
                                    **provenance("python -m benchmarks.time_to_quality", argv)})
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, run in table.items():
        points = [(t, v) for t, v in run["curve"] if t is not None]
        ax.plot([t for t, _ in points], [v for _, v in points], marker=".", label=label)
    ax.axhline(args.target, color="grey", ls=":", lw=1, label=f"target {args.target}")
    ax.axvline(args.budget_s, color="grey", ls="--", lw=1, label=f"{args.budget_s:.0f} s")
    ax.set_xlabel("training seconds (validation included)")
    ax.set_ylabel("validation NDCG@10")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, os.path.splitext(args.output)[0] + ".png")
    for label, run in table.items():
        reached = run["reached"]
        print(f"{label}: " + (f"reached {args.target} at epoch {reached['epoch']:.0f}, {reached['elapsed_s']} s" if reached else "never reached")
              + f"; test NDCG@10 {run['test_ndcg@10']}")
    return table


if __name__ == "__main__":
    main()
