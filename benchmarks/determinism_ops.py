"""Which training operation makes two identical runs differ on CPU, and what the deterministic mode costs there.

    python -m benchmarks.determinism_ops --output benchmarks/results/determinism-ops.json

The sampled-softmax loss's gradient paths at ML-1M size (3,710 rows of 50, 1,600 supervised positions, 128 negatives
each), each repeated 20 times in one process with the default threads: the backward of `items[targets]` (advanced
indexing: `index_put_` with accumulation), of `items[negatives]`, of the `(P, V)` matmul + `gather` path, and of
`F.embedding`; once in the default mode and once under `torch.use_deterministic_algorithms(True)` (what the Trainer's
`--full_determinism true` turns on), with the time per forward + backward (median of `--repeats`).
"""

import statistics
import sys
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from data_scripts.arguments import make_parser, parse_args, run_cli
from train.evaluation.results import provenance, write_json_atomic


@dataclass
class DeterminismOpsArguments:
    repeats: int = field(default=200, metadata={"help": "timed repeats per operation and mode"})
    output: str = field(default=None, metadata={"help": "results JSON"})


def main(argv=None) -> dict:
    parser = make_parser(DeterminismOpsArguments, description=__doc__)
    (args,) = parse_args(parser, argv)
    torch.manual_seed(0)
    positions, rows, width, negatives = 1600, 3710, 50, 128
    items = torch.randn(rows, width, requires_grad=True)
    h = torch.randn(positions, width)
    targets = torch.randint(4, rows, (positions,))
    sampled = torch.randint(4, rows, (positions, negatives))
    weights = torch.randn(positions, negatives)
    ops = {
        "index targets (items[targets])": lambda: (items[targets] * h).sum(),
        "index negatives (items[negatives])": lambda: ((items[sampled] * h.unsqueeze(1)).sum(-1) * weights).sum(),
        "matmul + gather": lambda: ((h @ items.T).gather(1, sampled) * weights).sum(),
        "F.embedding(targets)": lambda: (F.embedding(targets, items) * h).sum(),
    }
    report = {}
    for deterministic in (False, True):
        torch.use_deterministic_algorithms(deterministic)
        for name, op in ops.items():
            grads, times = [], []
            for repeat in range(20 + args.repeats):
                items.grad = None
                start = time.perf_counter()
                op().backward()
                times.append(time.perf_counter() - start)
                if repeat < 20:
                    grads.append(items.grad.clone())
            identical = all(torch.equal(grads[0], g) for g in grads[1:])
            report[f"{name}, deterministic={deterministic}"] = {"identical_over_20": identical,
                                                                "median_us": round(1e6 * statistics.median(times[20:]), 1)}
            print(f"{name:<36} deterministic={deterministic!s:<5}  identical over 20: {identical!s:<5}  "
                  f"{report[f'{name}, deterministic={deterministic}']['median_us']:>9.1f} us")
    torch.use_deterministic_algorithms(False)
    result = {"threads": torch.get_num_threads(), "ops": report, **provenance("python -m benchmarks.determinism_ops", argv)}
    if args.output:
        write_json_atomic(args.output, result)
    return result


if __name__ == "__main__":
    sys.exit(run_cli(main))
