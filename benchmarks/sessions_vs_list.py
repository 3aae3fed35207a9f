"""Generated sessions against the encoder's own top-10 list, same test users, over several stage-2 seeds.

Reads one `train.evaluate --task sessions --stage1_baseline ...` results file per seed (each holds GeniusRec's session
metrics and the encoder's list, `hstu_*`, on the same users) and writes the 3-seed means under the keys of a single
run (`session_recall@10`, `hstu_session_recall@10`, `ild`, `hstu_ild`, `coverage`, `hstu_coverage`, ...), plus
`seeds`, `per_seed`, and for each compared metric the relative difference per seed, its mean and a 95% t-interval
over seeds (`relative`), and whether the issue's targets are met (`targets`).

    python -m benchmarks.sessions_vs_list --seeds benchmarks/results/ml-1m-geniusrec-sessions-seed{42,43,44}.json \\
        --output benchmarks/results/ml-1m-geniusrec.json
"""

import argparse
import json
import re

import numpy as np

from benchmarks.stage2_vs_encoder import interval
from train.evaluation.results import provenance, write_json_atomic

COMPARED = ("session_recall@10", "session_ndcg@10", "ild", "coverage", "novelty", "phr@10")
# issue 24: recall and NDCG >= +5% over the list; ILD and coverage no more than 5% below it
PER_SEED_KEYS = ("session_", "hstu_session_", "ild", "hstu_ild", "coverage", "hstu_coverage", "novelty", "hstu_novelty")
TARGETS = {"session_recall@10": 0.05, "session_ndcg@10": 0.05, "ild": -0.05, "coverage": -0.05}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", required=True, help="one train.evaluate sessions results file per seed")
    parser.add_argument("--output", required=True, help="the results file to write")
    args = parser.parse_args(argv)
    runs = []
    for path in args.seeds:
        with open(path) as f:
            payload = json.load(f)
        test = payload.get("metrics", {}).get("test", {})
        if "session_recall@10" not in test or "hstu_session_recall@10" not in test:
            raise SystemExit(f"error: {path} has no session metrics beside the encoder's list: run train.evaluate --task sessions "
                             "--stage1_baseline <encoder> --split test --output ...")
        seed = re.search(r"seed(\d+)", path)
        runs.append({"seed": int(seed.group(1)) if seed else None, "test": test, "command": payload.get("command"),
                     "commit": payload.get("commit")})
    numeric = [k for k, v in runs[0]["test"].items()
               if isinstance(v, (int, float)) and all(isinstance(r["test"].get(k), (int, float)) for r in runs)]
    means = {k: float(np.mean([r["test"][k] for r in runs])) for k in numeric}
    relative, targets = {}, {}
    for key in COMPARED:
        if key not in means or f"hstu_{key}" not in means:
            continue
        per_seed = [r["test"][key] / r["test"][f"hstu_{key}"] - 1 for r in runs]
        mean, low, high = interval(per_seed)
        relative[key] = {"per_seed": per_seed, "mean": mean, "ci95": [low, high], "interval_includes_zero": bool(low <= 0 <= high)}
        if key in TARGETS:
            goal = TARGETS[key]
            targets[key] = {"goal": goal, "mean": mean, "met": bool(mean >= goal), "distance": min(0.0, mean - goal)}
    strings = {k: v for k, v in runs[0]["test"].items() if isinstance(v, str)}
    results = {
        "metrics": {"test": {**means, **strings}}, "seeds": [r["seed"] for r in runs],
        "per_seed": [{"seed": r["seed"], **{k: r["test"][k] for k in numeric if k.startswith(PER_SEED_KEYS)},
                      "command": r["command"], "commit": r["commit"]} for r in runs],
        "relative": relative, "targets": targets, "files": args.seeds, **provenance("python -m benchmarks.sessions_vs_list", argv),
    }
    write_json_atomic(args.output, results)
    print(f"{len(runs)} seeds {results['seeds']}: GeniusRec session vs the encoder's top-10 list (same test users)")
    for key, row in relative.items():
        flag = f" target {TARGETS[key]:+.0%}: {'met' if targets[key]['met'] else 'missed'}" if key in targets else ""
        print(f"  {key:18s} {means[key]:.4f} vs {means['hstu_' + key]:.4f}  {row['mean']:+.1%} "
              f"[{row['ci95'][0]:+.1%}, {row['ci95'][1]:+.1%}]{flag}")
    return results


if __name__ == "__main__":
    main()
