"""Batch recommendations for every user of a dataset: wall time, peak RSS (`/usr/bin/time -v`) and the time spent
recommending (the command's own figure, after start-up and loading).

    python -m benchmarks.batch_recommend --dataset runs/quickstart/data \\
        --runs hstu=runs/quickstart/hstu geniusrec=runs/quickstart/geniusrec geniusrec-two-stage=runs/quickstart/geniusrec:100 \\
        --output benchmarks/results/ml-1m-batch-recommend.json

Each run is `python -m train.recommend --model M --dataset D --all_users --output <tmp>.parquet --k 10` in its own
process (`:N` after a path adds `--candidate_count N`, GeniusRec's two-stage decode); the output file is checked to
hold k rows per user with no item of the user's history. Run it alone.
"""

import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

from benchmarks.books_scale import parse_time_v
from data_scripts.arguments import make_parser, parse_args, run_cli
from train.evaluation.results import provenance, write_json_atomic


def check_output(path: str, dataset: str, k: int) -> dict:
    """Rows per user and the seen-item rule, read back from the written file."""
    import pyarrow.parquet as pq

    from data_scripts.processed import load_processed
    from data_scripts.splits import SequenceStore

    sequences, _, tokenizer, _ = load_processed(dataset)
    store = SequenceStore.from_dataset(sequences)
    seen = {store.user_ids[u]: set(tokenizer.decode_items(store.row(u)[0].tolist())) for u in range(len(store.user_ids))}
    table = pq.read_table(path).to_pydict()
    repeated = sum(item in seen[user] for user, item in zip(table["user_id"], table["item_id"]))
    return {"rows": len(table["user_id"]), "users": len(set(table["user_id"])), "expected_rows": k * len(seen), "seen_items_returned": repeated}


def measure(name: str, model: str, dataset: str, k: int, candidate_count: int | None, chunk_size: int) -> dict:
    out = os.path.join(tempfile.mkdtemp(), "recs.parquet")
    command = [sys.executable, "-m", "train.recommend", "--model", model, "--dataset", dataset, "--all_users", "--output", out,
               "--k", str(k), "--chunk_size", str(chunk_size), "--quiet"]
    if candidate_count:
        command += ["--candidate_count", str(candidate_count)]
    result = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    seconds = float(re.search(r"in ([\d.]+) s", result.stdout).group(1))
    return {"name": name, **parse_time_v(result.stderr), "recommend_s": seconds, **check_output(out, dataset, k),
            "command": " ".join(["python", *command[1:]]).replace(out, "recs.parquet")}


@dataclass
class BatchArguments:
    dataset: str = field(metadata={"help": "processed dataset whose users get recommendations"})
    runs: list[str] = field(metadata={"help": "NAME=CHECKPOINT[:CANDIDATE_COUNT] entries", "nargs": "+"})
    k: int = field(default=10, metadata={"help": "items per user"})
    chunk_size: int = field(default=512, metadata={"help": "users per model call"})
    output: str | None = field(default=None, metadata={"help": "results JSON"})


def main(argv=None):
    (args,) = parse_args(make_parser(BatchArguments, description=__doc__), argv)
    rows = []
    for entry in args.runs:
        name, _, target = entry.partition("=")
        model, _, count = target.partition(":")
        row = measure(name, model, args.dataset, args.k, int(count) if count else None, args.chunk_size)
        rows.append(row)
        print(f"{name:22s} recommend {row['recommend_s']:6.1f} s   wall {row['wall_s']:6.1f} s   peak RSS {row['peak_rss_mb']:7,.0f} MB   "
              f"rows {row['rows']:,} / {row['expected_rows']:,}   seen items returned {row['seen_items_returned']}", flush=True)
    if args.output:
        write_json_atomic(args.output, {"rows": rows, "k": args.k, **provenance("python -m benchmarks.batch_recommend", argv)})
    return rows


if __name__ == "__main__":
    sys.exit(run_cli(main))
