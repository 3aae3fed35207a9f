"""GeniusRec against stage 1 given the same wall time, seed by seed (issue 42 item 3): one results file.

    python -m benchmarks.same_budget \\
        --geniusrec benchmarks/results/ml-1m-same-budget-geniusrec-seed{42,43,44}-train.json \\
        --geniusrec_tests benchmarks/results/ml-1m-same-budget-geniusrec-seed{42,43,44}-test.json \\
        --stage1 benchmarks/results/ml-1m-same-budget-stage1-seed{42,43,44}.json \\
        --output benchmarks/results/ml-1m-geniusrec-same-budget.json

The GeniusRec arm: `train.finetune` results files (wall time, validation) and, in the same order, the
`train.evaluate --split test` files of the head the rule chose on validation; the stage-1 arm: `train.pretrain`
results files with their test metrics. Pairs them by seed and writes `metrics.test.geniusrec` / `metrics.test.stage1`
(`ndcg@10`, `hr@10` means over seeds), `per_seed`, `seeds`, the per-seed ratio GeniusRec / stage 1 with its mean and
95% t-interval, whether the interval includes 1, each arm's wall times, and the target (>= 1.03x on both metrics).
"""

import argparse
import json

from train.evaluation.results import provenance, write_json_atomic

from .stage2_vs_encoder import interval

KEYS = ("ndcg@10", "hr@10")
TARGET_RATIO = 1.03


def read(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def arm(train_path: str, test_path: str | None) -> dict:
    run = read(train_path)
    test = read(test_path)["metrics"]["test"] if test_path else run["metrics"].get("test")
    if not test:
        raise SystemExit(f"error: {train_path} has no test metrics and no test file was given for it")
    return {"seed": run["seed"], "test": {k: test[k] for k in KEYS}, "validation_ndcg@10": run["metrics"]["validation"]["ndcg@10"],
            "wall_time_s": run.get("wall_time_s"), "epochs": run.get("epochs"), "stopped_by": run.get("stopped_by"),
            "files": [p for p in (train_path, test_path) if p]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--geniusrec", nargs="+", required=True, help="train.finetune results files, one per seed")
    parser.add_argument("--geniusrec_tests", nargs="+", required=True, help="their train.evaluate --split test files, same order")
    parser.add_argument("--stage1", nargs="+", required=True, help="train.pretrain results files (with test metrics), one per seed")
    parser.add_argument("--output", required=True, help="the results file to write")
    args = parser.parse_args(argv)
    if len(args.geniusrec) != len(args.geniusrec_tests):
        raise SystemExit(f"error: {len(args.geniusrec_tests)} --geniusrec_tests for {len(args.geniusrec)} --geniusrec files")
    ours = {r["seed"]: r for r in (arm(a, b) for a, b in zip(args.geniusrec, args.geniusrec_tests))}
    base = {r["seed"]: r for r in (arm(a, None) for a in args.stage1)}
    if set(ours) != set(base) or len(ours) != len(args.geniusrec) or len(base) != len(args.stage1):
        raise SystemExit(f"error: the arms must hold the same distinct seeds, got {sorted(ours)} and {sorted(base)}")
    seeds = sorted(ours)
    metrics, ratios = {"geniusrec": {}, "stage1": {}}, {}
    for key in KEYS:
        metrics["geniusrec"][key] = interval([ours[s]["test"][key] for s in seeds])[0]
        metrics["stage1"][key] = interval([base[s]["test"][key] for s in seeds])[0]
        per = [ours[s]["test"][key] / base[s]["test"][key] for s in seeds]
        mean, low, high = interval(per)
        ratios[key] = {"per_seed": per, "mean": mean, "interval_95": [low, high], "includes_1": low <= 1.0 <= high,
                       "target_met": mean >= TARGET_RATIO}
    results = {"metrics": {"test": metrics}, "ratio": ratios, "seeds": seeds,
               "per_seed": [{"seed": s, "geniusrec": ours[s], "stage1": base[s]} for s in seeds], "target_ratio": TARGET_RATIO,
               **provenance("python -m benchmarks.same_budget", argv)}
    write_json_atomic(args.output, results)
    for key in KEYS:
        r = ratios[key]
        print(f"{key}: GeniusRec {metrics['geniusrec'][key]:.4f} vs stage 1 {metrics['stage1'][key]:.4f}: x{r['mean']:.4f} "
              f"(95% {r['interval_95'][0]:.4f}-{r['interval_95'][1]:.4f}; per seed {', '.join(f'{x:.4f}' for x in r['per_seed'])})")
    return results


if __name__ == "__main__":
    main()
