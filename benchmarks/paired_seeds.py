"""A variant against its baseline, seed by seed, on the same test users: overall and per target-popularity bucket.

    python -m benchmarks.paired_seeds --baseline benchmarks/results/ml-1m-geniusrec-b16-no-text-seed{42,43,44}.json \\
        --variant benchmarks/results/ml-1m-geniusrec-b16-text-expert-only-seed{42,43,44}.json \\
        --output benchmarks/results/ml-1m-geniusrec-b16-text-vs-no-text.json

Pairs the files by their recorded seed; for every metric of `KEYS` (overall, then `head_` / `torso_` / `tail_`, the
buckets `train.finetune` writes into `metrics.test`) reports both means, the per-seed relative change
`variant / baseline - 1`, its mean, a 95% t-interval over seeds and whether it includes zero, plus each file's
epochs and wall time (so equal epoch budgets and wall times can be read beside the numbers).
"""

import argparse
import json
import os

from train.evaluation.results import provenance, write_json_atomic

from .stage2_vs_encoder import interval

KEYS = ("ndcg@10", "hr@10")
BUCKETS = ("", "head_", "torso_", "tail_")


def load(paths: list[str]) -> dict:
    """`{seed: results}` of results files that each record a distinct seed and test metrics."""
    runs = {}
    for path in paths:
        with open(path) as f:
            payload = json.load(f)
        if not payload.get("metrics", {}).get("test"):
            raise SystemExit(f"error: {path} has no test metrics (a run with --evaluate_test false cannot be compared on test)")
        if payload.get("seed") in runs:
            raise SystemExit(f"error: seed {payload.get('seed')} appears twice ({path})")
        runs[payload.get("seed")] = {**payload, "file": os.path.basename(path)}
    return runs


def compare(baseline: dict, variant: dict) -> dict:
    """Per metric and bucket: means, per-seed relative change, its mean and 95% interval (seeds of both sides)."""
    seeds = sorted(baseline)
    if sorted(variant) != seeds:
        raise SystemExit(f"error: the two sides have different seeds: {seeds} vs {sorted(variant)}")
    out = {}
    for bucket in BUCKETS:
        for key in KEYS:
            name = bucket + key
            base = [baseline[s]["metrics"]["test"].get(name) for s in seeds]
            var = [variant[s]["metrics"]["test"].get(name) for s in seeds]
            if None in base or None in var:
                continue
            change = [v / b - 1 if b else float("nan") for v, b in zip(var, base)]
            mean, low, high = interval(change)
            out[name] = {"baseline": interval(base)[0], "variant": interval(var)[0], "baseline_per_seed": base, "variant_per_seed": var,
                         "relative_per_seed": change, "relative_mean": mean, "ci95": [low, high],
                         "interval_includes_zero": bool(low <= 0 <= high)}
    users = {bucket.rstrip("_") or "all": baseline[seeds[0]]["metrics"]["test"].get(f"{bucket}users") for bucket in BUCKETS}
    return {"seeds": seeds, "test": out, "bucket_users": users}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", nargs="+", required=True, help="the baseline's results files, one per seed")
    p.add_argument("--variant", nargs="+", required=True, help="the variant's results files, one per seed (the same seeds)")
    p.add_argument("--output", required=True, help="the comparison file to write")
    args = p.parse_args(argv)
    baseline, variant = load(args.baseline), load(args.variant)
    result = compare(baseline, variant)
    result["runs"] = {side: {str(s): {"file": r["file"], "epochs": r.get("epochs"), "wall_time_s": r.get("wall_time_s"),
                                      "command": r.get("command"), "commit": r.get("commit")} for s, r in runs.items()}
                      for side, runs in (("baseline", baseline), ("variant", variant))}
    result["popularity_buckets"] = next(iter(baseline.values()))["metrics"]["test"].get("popularity_buckets")
    result.update(provenance("python -m benchmarks.paired_seeds", argv))
    write_json_atomic(args.output, result)
    print(f"{'':<18}{'baseline':>10}{'variant':>10}{'change':>10}   95% interval over seeds {result['seeds']}")
    for name, row in result["test"].items():
        print(f"{name:<18}{row['baseline']:>10.4f}{row['variant']:>10.4f}{row['relative_mean']:>+10.2%}   "
              f"[{row['ci95'][0]:+.2%}, {row['ci95'][1]:+.2%}]" + ("  (includes zero)" if row["interval_includes_zero"] else ""))
    return result


if __name__ == "__main__":
    main()
