"""DPO before/after and the accuracy-vs-novelty/diversity trade-off over beta.

    python benchmarks/dpo_tradeoff.py --model runs/ml-1m-geniusrec-no-text --pairs data/ml-1m-pairs --dataset data/ml-1m \\
        --betas 0.1 0.5 --max-users 2000 --output benchmarks/results/ml-1m-geniusrec-dpo.json

For each beta: `train.dpo` (LoRA), then `train.evaluate --task all` on the leave-one-out test view (the first
`--max-users` users): next-item NDCG@10 from the decoder's first step, and novelty, intra-list diversity and
coverage of the generated 10-item sessions. `metrics.before` is the stage-2 model, `metrics.test` the beta chosen
by `--report-beta`; every beta is kept under `sweep`. Writes a PNG of the trade-off beside the JSON.
"""

import argparse
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from train import dpo, evaluate  # noqa: E402
from train.common import machine_description, today, write_json_atomic  # noqa: E402
from train.reporting import _save, plt  # noqa: E402

KEYS = ("ndcg@10", "hr@10", "novelty", "ild", "coverage", "repetition_rate")


def score(model_dir, args):
    metrics = evaluate.main(["--model", model_dir, "--dataset", args.dataset, "--task", "all", "--num-beams", str(args.num_beams),
                             "--max-users", str(args.max_users), "--session-length", "10"])
    return {k: metrics[k] for k in KEYS}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="stage-2 GeniusRec checkpoint")
    p.add_argument("--pairs", required=True, help="pairs dataset")
    p.add_argument("--dataset", required=True, help="processed dataset folder")
    p.add_argument("--betas", type=float, nargs="+", default=[0.1], help="DPO betas to sweep")
    p.add_argument("--report-beta", type=float, default=None, help="beta reported as metrics.test (default: the first)")
    p.add_argument("--max-users", type=int, default=2000, help="test users scored")
    p.add_argument("--num-beams", type=int, default=10, help="beams for session generation")
    p.add_argument("--dpo-args", default="--use_peft true --num_train_epochs 1 --learning_rate 5e-4 --per_device_train_batch_size 32",
                   help="extra train.dpo flags")
    p.add_argument("--work-dir", default="runs/dpo-sweep", help="where the DPO runs go")
    p.add_argument("--output", required=True, help="results JSON (a PNG is written beside it)")
    args = p.parse_args(argv)
    before = score(args.model, args)
    sweep = {}
    for beta in args.betas:
        out = os.path.join(args.work_dir, f"beta-{beta}")
        start = time.time()
        _, summary = dpo.main(["--model", args.model, "--pairs", args.pairs, "--output_dir", out, "--beta", str(beta),
                               "--disable_tqdm", "true", *args.dpo_args.split()])
        sweep[str(beta)] = {"metrics": score(os.path.join(out, "merged"), args), "dpo_wall_time_s": round(time.time() - start, 1),
                            "final_train_log": summary["train_log"][-1] if summary["train_log"] else None}
    report = str(args.report_beta if args.report_beta is not None else args.betas[0])
    results = {
        "metrics": {"before": before, "test": sweep[report]["metrics"]}, "beta": float(report), "sweep": sweep,
        "protocol": "leave-one-out", "users": args.max_users, "command": "python benchmarks/dpo_tradeoff.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), "machine": machine_description(), "date": today(),
    }
    write_json_atomic(args.output, results)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, key in zip(axes, ("novelty", "ild")):
        ax.scatter([before["ndcg@10"]], [before[key]], color="black", label="before DPO")
        for beta, entry in sweep.items():
            ax.scatter([entry["metrics"]["ndcg@10"]], [entry["metrics"][key]], label=f"beta {beta}")
        ax.set_xlabel("next-item NDCG@10")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    _save(fig, os.path.splitext(args.output)[0] + ".png")
    print(json.dumps(results["metrics"], indent=1))
    return results


if __name__ == "__main__":
    main()
