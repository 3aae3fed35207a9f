"""The stage-1 recipe over several seeds against the HSTU-large+MoL target (issue 42 item 1): one results file.

    python -m benchmarks.stage1_best --runs benchmarks/results/ml-1m-hstu-schedule-cosine40-seed{42,43,44}.json \\
        --output benchmarks/results/ml-1m-hstu-best.json

Each run is a `train.pretrain` results file (validation metrics at its best epoch, and test metrics unless the run
was chosen on validation first); `--tests` gives, in the same order, a `train.evaluate --split test --output` file
that replaces a run's missing test metrics (the seed-42 run of a choice made on validation is tested after the
choice, once). Writes `metrics.test` / `metrics.validation` (means over seeds), `intervals` (95% t-intervals),
`per_seed`, `seeds`, `commands`, and the distance of each mean to the target (test HR@10 .3412 / NDCG@10 .1979).
"""

import argparse
import json

from train.evaluation.results import provenance, write_json_atomic

from .stage2_vs_encoder import interval

KEYS = ("hr@10", "ndcg@10", "hr@50", "ndcg@50", "hr@200", "ndcg@200", "mrr")
TARGET = {"hr@10": 0.3412, "ndcg@10": 0.1979}  # issue 42: HSTU-large + MoL, as the issue states it


def load_run(path: str, test_path: str | None) -> dict:
    with open(path) as f:
        run = json.load(f)
    test, commands = run["metrics"].get("test") or {}, [run["command"]]
    if test_path:
        if test:
            raise SystemExit(f"error: {path} already has test metrics; a second test file ({test_path}) would read the test split twice")
        with open(test_path) as f:
            scored = json.load(f)
        test, commands = scored["metrics"]["test"], commands + [scored["command"]]
    if not test:
        raise SystemExit(f"error: {path} has no test metrics: pass the checkpoint's `train.evaluate --split test --output` file with --tests")
    return {"seed": run["seed"], "validation": {k: run["metrics"]["validation"][k] for k in KEYS}, "test": {k: test[k] for k in KEYS},
            "best_epoch": run.get("best_epoch"), "epochs": run.get("epochs"), "wall_time_s": run.get("wall_time_s"),
            "commit": run.get("commit"), "commands": commands, "files": [p for p in (path, test_path) if p]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", required=True, help="train.pretrain results files, one per seed")
    parser.add_argument("--tests", nargs="*", default=[], help="per run, in order: a train.evaluate test file, or '-' for none")
    parser.add_argument("--output", required=True, help="the results file to write")
    args = parser.parse_args(argv)
    tests = [None if t == "-" else t for t in args.tests] + [None] * (len(args.runs) - len(args.tests))
    if len(tests) != len(args.runs):
        raise SystemExit(f"error: {len(args.tests)} --tests for {len(args.runs)} --runs")
    per_seed = [load_run(path, test) for path, test in zip(args.runs, tests)]
    seeds = [run["seed"] for run in per_seed]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"error: one distinct seed per run expected, got {seeds}")
    metrics, intervals = {"test": {}, "validation": {}}, {}
    for key in KEYS:
        mean, low, high = interval([run["test"][key] for run in per_seed])
        metrics["test"][key], intervals[key] = mean, [low, high]
        metrics["validation"][key] = interval([run["validation"][key] for run in per_seed])[0]
    results = {"metrics": metrics, "intervals": {"test": intervals}, "seeds": seeds, "per_seed": per_seed,
               "target": {"test": TARGET}, "distance_to_target": {k: metrics["test"][k] - v for k, v in TARGET.items()},
               "target_met": all(metrics["test"][k] >= v for k, v in TARGET.items()),
               "commands": [c for run in per_seed for c in run["commands"]], **provenance("python -m benchmarks.stage1_best", argv)}
    write_json_atomic(args.output, results)
    print(f"{len(seeds)} seeds {seeds}")
    for key in ("hr@10", "ndcg@10"):
        low, high = intervals[key]
        values = ", ".join(f"{run['test'][key]:.4f}" for run in per_seed)
        print(f"test {key}: {metrics['test'][key]:.4f} (95% {low:.4f}-{high:.4f}; per seed {values}) target {TARGET[key]:.4f}: "
              f"{metrics['test'][key] - TARGET[key]:+.4f}")
    return results


if __name__ == "__main__":
    main()
