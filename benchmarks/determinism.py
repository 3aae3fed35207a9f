"""Where does a rerun with the same seed stop being bitwise identical? (issue 42 item 1)

    python -m benchmarks.determinism --dataset data/ml-1m --steps 30 --output benchmarks/results/determinism.json

Each probe runs `python -m train.pretrain` (the batch-16 recipe, `train/configs/ml-1m-hstu-cpu-fast.json`) for
`--steps` optimizer steps in its own process, logging the training loss at every step, then evaluates the final
weights on the validation view; pairs of probes are compared bit for bit (losses, every weight, every metric):

- `<setting>: rerun`, for each setting, the same command twice (same seed): `default`; `one_thread` (OpenMP and MKL
  limited to 1 thread); `full_determinism` (below); `mkl_cbwr_compatible` (`MKL_CBWR=COMPATIBLE`, MKL's conditional
  numerical reproducibility, which fixes its code path whatever the memory alignment); and `one_thread vs default`;
- `eval_repeat` / `eval_batch`: the same weights evaluated twice, and with another evaluation batch size (other
  padding per batch);
- `full_determinism`: the same command with the Trainer's `--full_determinism true` (`enable_full_determinism`:
  `torch.use_deterministic_algorithms(True)` and the CUDA settings), which fails on an operation without a
  deterministic implementation and otherwise costs what it costs.

The report names the first step (or metric) where each pair differs and the largest difference. Run it alone.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from data_scripts.arguments import make_parser, parse_args, run_cli
from train.evaluation.results import provenance, write_json_atomic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class DeterminismArguments:
    dataset: str = field(default="data/ml-1m", metadata={"help": "processed dataset folder"})
    steps: int = field(default=30, metadata={"help": "optimizer steps per probe"})
    output: str = field(default=None, metadata={"help": "results JSON"})


def probe(work: str, name: str, dataset: str, steps: int, env_extra: dict | None = None, extra: tuple = ()) -> dict:
    """One training run of `steps` steps (loss logged every step) and its validation metrics, in a fresh process."""
    out = os.path.join(work, name)
    command = [sys.executable, "-m", "train.pretrain", "--config", "train/configs/ml-1m-hstu-cpu-fast.json", "--dataset", dataset,
               "--output_dir", out, "--max_steps", str(steps), "--logging_strategy", "steps", "--logging_steps", "1",
               "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false", "--evaluate_test", "false",
               "--disable_tqdm", "true", "--seed", "42", *extra]
    env = {**os.environ, **(env_extra or {})}
    start = time.time()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.time() - start
    if done.returncode:
        return {"name": name, "failed": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}",
                "seconds": round(seconds, 1)}
    results = json.load(open(os.path.join(out, "results.json")))
    return {"name": name, "seconds": round(seconds, 1), "losses": results["train_loss_history"], "weights": os.path.join(out, "model.safetensors"),
            "validation": {k: v for k, v in results["metrics"]["validation"].items() if "@" in k or k == "mrr"}}


def evaluate(model: str, dataset: str, batch_size: int) -> dict:
    from train import evaluate as evaluate_module

    metrics = evaluate_module.main(["--model", model, "--dataset", dataset, "--split", "validation", "--batch_size", str(batch_size)])
    return {k: v for k, v in metrics.items() if "@" in k or k == "mrr"}


def compare(a: dict, b: dict) -> dict:
    """First differing step, largest loss and weight differences, differing metrics."""
    from safetensors.torch import load_file

    if "failed" in a or "failed" in b:
        return {"comparable": False, "failed": a.get("failed") or b.get("failed")}
    first = next((i + 1 for i, (x, y) in enumerate(zip(a["losses"], b["losses"])) if x != y), None)
    wa, wb = load_file(a["weights"]), load_file(b["weights"])
    weight_diff = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    metrics = {k: [a["validation"][k], b["validation"][k]] for k in a["validation"] if a["validation"][k] != b["validation"][k]}
    return {"comparable": True, "first_differing_step": first, "max_loss_difference": max(abs(x - y) for x, y in zip(a["losses"], b["losses"])),
            "max_weight_difference": weight_diff, "bitwise_identical_weights": weight_diff == 0.0, "differing_validation_metrics": metrics}


def main(argv=None) -> dict:
    parser = make_parser(DeterminismArguments, description=__doc__)
    (args,) = parse_args(parser, argv)
    settings = {"default": ({}, ()), "one_thread": ({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}, ()),
                "full_determinism": ({}, ("--full_determinism", "true")), "mkl_cbwr_compatible": ({"MKL_CBWR": "COMPATIBLE"}, ())}
    with tempfile.TemporaryDirectory(prefix="geniusrec-determinism-") as work:
        runs = {f"{name}-{rep}": probe(work, f"{name}-{rep}", args.dataset, args.steps, env, extra)
                for name, (env, extra) in settings.items() for rep in (1, 2)}
        report = {f"{name}: rerun": compare(runs[f"{name}-1"], runs[f"{name}-2"]) for name in settings}
        report["one_thread vs default"] = compare(runs["default-1"], runs["one_thread-1"])
        if "failed" not in runs["default-1"]:
            model = os.path.dirname(runs["default-1"]["weights"])
            first, again, other = (evaluate(model, args.dataset, size) for size in (256, 256, 64))
            report["eval_repeat_same_batch"] = {k: [first[k], again[k]] for k in first if first[k] != again[k]}
            report["eval_batch_256_vs_64"] = {k: [first[k], other[k]] for k in first if first[k] != other[k]}
        report["seconds"] = {name: run["seconds"] for name, run in runs.items()}
    result = {"steps": args.steps, "dataset": args.dataset, "report": report, **provenance("python -m benchmarks.determinism", argv)}
    print(json.dumps(report, indent=1))
    if args.output:
        write_json_atomic(args.output, result)
    return result


if __name__ == "__main__":
    sys.exit(run_cli(main))
