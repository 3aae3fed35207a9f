"""The quick start, timed: `python -m train.pipeline` (what `make quickstart` runs after its install step) in a fresh
work folder, with its wall time, its console output's size and the tables it printed.

    python -m benchmarks.quickstart_time --output benchmarks/results/quickstart-time.json

Run it alone (after `make test`, as a new user would). The work folder is a temp folder this command creates and
removes; `--keep DIR` runs in DIR instead (which must not exist) and leaves it.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from data_scripts.arguments import make_parser, parse_args, run_cli
from train.evaluation.results import provenance, write_json_atomic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE_KEYS = ("hr@10", "ndcg@10", "session_recall@10", "session_ndcg@10", "hstu_session_recall@10", "hstu_session_ndcg@10", "coverage",
              "hstu_coverage")


@dataclass
class QuickstartTimeArguments:
    output: str = field(default=None, metadata={"help": "results JSON"})
    keep: str | None = field(default=None, metadata={"help": "run in this new folder and keep it (default: a temp folder, removed)"})
    goal_s: float = field(default=180.0, metadata={"help": "the wall-time goal the results file compares against"})


def main(argv=None) -> dict:
    parser = make_parser(QuickstartTimeArguments, description=__doc__)
    (args,) = parse_args(parser, argv)
    if args.keep and os.path.exists(args.keep):
        parser.error(f"--keep {args.keep!r} exists: name a new folder (the quick start skips steps whose output exists)")
    work = args.keep or tempfile.mkdtemp(prefix="geniusrec-quickstart-")
    command = [sys.executable, "-m", "train.pipeline", "--work_dir", os.path.join(work, "quickstart")]
    try:
        start = time.time()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        wall = time.time() - start
        if done.returncode:
            raise RuntimeError(f"the quick start failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        runs = {name: json.load(open(os.path.join(work, "quickstart", name, "results.json"))) for name in ("hstu", "geniusrec")}
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    stdout_lines = [line for line in done.stdout.splitlines() if line.strip()]
    result = {
        "wall_s": round(wall, 1), "goal_s": args.goal_s, "met": wall <= args.goal_s,
        "stdout_lines": len(stdout_lines), "stderr_bytes": len(done.stderr),
        "stages": {name: {"wall_time_s": run["wall_time_s"], "epochs": run["epochs"], "evaluated_users": run.get("evaluated_users"),
                          "test": {k: run["metrics"]["test"][k] for k in TABLE_KEYS if k in run["metrics"]["test"]}}
                   for name, run in runs.items()},
        "pipeline_command": "python -m train.pipeline --work_dir <fresh folder>/quickstart",
        **provenance("python -m benchmarks.quickstart_time", argv),
    }
    print(f"quick start: {result['wall_s']} s (goal {args.goal_s:.0f} s: {'met' if result['met'] else 'missed'}), "
          f"{len(stdout_lines)} lines of output")
    if args.output:
        write_json_atomic(args.output, result)
    return result


if __name__ == "__main__":
    sys.exit(run_cli(main))
