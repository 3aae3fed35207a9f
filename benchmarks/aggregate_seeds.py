"""One results file from several seeds of the same run: `metrics.<split>` is the mean over seeds, `metrics_std.<split>`
the standard deviation (n - 1), `seeds` the per-seed rows (each with its own file, seed and commit).

    python -m benchmarks.aggregate_seeds --output runs/results/ml-1m-geniusrec-text.json runs/results/ml-1m-geniusrec-text-seed*.json
"""

import argparse
import json
import os
import sys

import numpy as np

from train.evaluation.results import write_json_atomic


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", help="results files of the same run with different seeds")
    p.add_argument("--output", required=True, help="the aggregated results file")
    args = p.parse_args(argv)
    runs = []
    for path in args.files:
        with open(path) as f:
            runs.append(json.load(f))
    seeds = [r["seed"] for r in runs]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"duplicate seeds {seeds}: give each seed's file once")
    metrics, spread = {}, {}
    for split in ("validation", "test"):
        keys = [k for k, v in runs[0]["metrics"].get(split, {}).items() if isinstance(v, (int, float))]
        values = {k: [r["metrics"][split][k] for r in runs if k in r["metrics"].get(split, {})] for k in keys}
        metrics[split] = {k: float(np.mean(v)) for k, v in values.items() if len(v) == len(runs)}
        spread[split] = {k: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for k, v in values.items() if len(v) == len(runs)}
    out = {**{k: v for k, v in runs[0].items() if k not in ("metrics", "eval_history", "gate_weights")},
           "metrics": metrics, "metrics_std": spread, "seed": seeds,
           "seeds": [{"seed": r["seed"], "file": os.path.basename(path), "commit": r.get("commit"), "command": r.get("command"),
                      "metrics": {"validation": r["metrics"].get("validation"), "test": r["metrics"].get("test")}}
                     for r, path in zip(runs, args.files)],
           "command": "python -m benchmarks.aggregate_seeds " + " ".join(sys.argv[1:] if argv is None else argv)}
    write_json_atomic(args.output, out)
    test = metrics.get("test", {})
    print(f"{len(runs)} seeds {seeds}: test ndcg@10 {test.get('ndcg@10', float('nan')):.4f} +- {spread['test'].get('ndcg@10', 0):.4f}")
    return out


if __name__ == "__main__":
    main()
