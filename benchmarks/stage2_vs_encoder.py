"""GeniusRec against its own encoder on the same test users: one results file from several stage-2 seeds.

Reads each seed's stage-2 results file (`train.finetune` output, or `train.evaluate --output` of a checkpoint chosen
on validation) and the encoder's stage-1 results file (the same leave-one-out test users), and writes
`metrics.test.geniusrec` / `metrics.test.encoder` (`ndcg@10`, `hr@10`, ... as means over seeds, with `per_seed`),
the relative difference per seed, its mean and a 95% t-interval over seeds, and whether that interval includes zero.
The encoder is one fixed checkpoint, so its numbers are the same for every seed.

    python -m benchmarks.stage2_vs_encoder --encoder benchmarks/results/ml-1m-hstu-position.json \\
        --seeds benchmarks/results/ml-1m-stage2-joint-seed{42,43,44}.json --output benchmarks/results/ml-1m-stage2-vs-encoder.json
"""

import argparse
import json
import math
import os

import numpy as np

from train.evaluation.results import provenance, write_json_atomic

KEYS = ("ndcg@10", "hr@10", "ndcg@50", "hr@50", "mrr")
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}  # Student t, 97.5%


def test_metrics(path: str) -> dict:
    with open(path) as f:
        payload = json.load(f)
    metrics = payload.get("metrics", {})
    test = metrics.get("test")
    if not test:
        raise ValueError(f"{path} has no test metrics: score the chosen checkpoint with `python -m train.evaluate --split test --output ...`")
    return {"metrics": test, "seed": payload.get("seed"), "command": payload.get("command"), "commit": payload.get("commit"),
            "model": payload.get("model")}


def interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95% t-interval `(mean, low, high)` of `values` (n >= 2; n = 1 gives an unbounded interval)."""
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, -math.inf, math.inf
    half = T_975.get(len(values) - 1, 1.96) * float(np.std(values, ddof=1)) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", required=True, help="the encoder's stage-1 results file (test metrics on the same users)")
    parser.add_argument("--seeds", nargs="+", required=True, help="one stage-2 results file per seed, each with test metrics")
    parser.add_argument("--seed_values", nargs="*", type=int, default=None, help="the seeds, when the files do not record them")
    parser.add_argument("--label", default="GeniusRec", help="name of the stage-2 recipe in the printed table")
    parser.add_argument("--output", required=True, help="the results file to write")
    args = parser.parse_args(argv)
    encoder = test_metrics(args.encoder)
    runs = [test_metrics(path) for path in args.seeds]
    seeds = args.seed_values or [run["seed"] for run in runs]
    if len(seeds) != len(runs) or len(set(seeds)) != len(seeds):
        raise SystemExit(f"error: one distinct seed per file expected, got {seeds} for {len(runs)} files")
    geniusrec, relative = {}, {}
    for key in KEYS:
        values = [run["metrics"][key] for run in runs]
        mean, low, high = interval(values)
        geniusrec[key] = mean
        geniusrec.setdefault("per_seed", {})[key] = values
        change = [v / encoder["metrics"][key] - 1 for v in values]
        c_mean, c_low, c_high = interval(change)
        relative[key] = {"per_seed": change, "mean": c_mean, "ci95": [c_low, c_high], "interval_includes_zero": bool(c_low <= 0 <= c_high),
                         "ratio": geniusrec[key] / encoder["metrics"][key], "spread_std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}
    enc = {key: encoder["metrics"][key] for key in KEYS}
    enc["per_seed"] = {key: [encoder["metrics"][key]] * len(runs) for key in KEYS}
    out = {
        "metrics": {"test": {"geniusrec": geniusrec, "encoder": enc, "relative": relative}},
        "seeds": seeds,
        "target": "geniusrec >= 1.03 x encoder on test ndcg@10 and hr@10 (mean of 3 seeds)",
        "target_met": bool(relative["ndcg@10"]["ratio"] >= 1.03 and relative["hr@10"]["ratio"] >= 1.03),
        "commands": {"encoder": encoder["command"], "seeds": [run["command"] for run in runs]},
        "files": {"encoder": os.path.basename(args.encoder), "seeds": [os.path.basename(p) for p in args.seeds]},
        **provenance("python -m benchmarks.stage2_vs_encoder", argv),
    }
    write_json_atomic(args.output, out)
    print(f"{'':<12}{'encoder':>10}{args.label:>14}{'change':>10}   95% interval over seeds")
    for key in ("ndcg@10", "hr@10", "mrr"):
        r = relative[key]
        print(f"{key:<12}{enc[key]:>10.4f}{geniusrec[key]:>14.4f}{r['mean']:>+10.2%}   [{r['ci95'][0]:+.2%}, {r['ci95'][1]:+.2%}]"
              + ("  (includes zero)" if r["interval_includes_zero"] else ""))
    return out


if __name__ == "__main__":
    main()
