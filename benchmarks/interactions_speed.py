"""Your own data: the events reader's throughput and peak memory on synthetic logs (`/usr/bin/time -v`).

    python -m benchmarks.interactions_speed --work /tmp/events --sizes 1000000 10000000 100000000 --formats parquet csv \
        --output benchmarks/results/interactions-speed.json

For each size and format, `data_scripts.make_synthetic_events` writes the log once (kept under `--work`, so a rerun
reuses it), then `python -m data_scripts.interactions --events <log> --out <work>/out` runs in its own process under
`/usr/bin/time -v`. Recorded per row: the command's wall time and peak RSS (imports included: about 6 s of Python
start-up with torch and transformers), events/s over that wall time ("end to end"), the time spent reading
(`read_seconds` in stats.json) and the events kept. Run it alone: two processes at once halve each other's speed.
"""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

from benchmarks.books_scale import parse_time_v
from data_scripts.arguments import make_parser, parse_args, run_cli
from train.evaluation.results import provenance, write_json_atomic

EXTENSIONS = {"parquet": "parquet", "csv": "csv", "jsonl": "jsonl"}


def measure(work: str, size: int, fmt: str) -> dict:
    log = os.path.join(work, f"events-{size}.{EXTENSIONS[fmt]}")
    if not os.path.exists(log):
        subprocess.run([sys.executable, "-m", "data_scripts.make_synthetic_events", "--events", str(size), "--out", log], check=True)
    out = os.path.join(work, "out")
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "data_scripts.interactions", "--events", log, "--out", out, "--quiet"]
    result = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    timing = parse_time_v(result.stderr)
    stats = json.load(open(os.path.join(out, "stats.json")))
    shutil.rmtree(out, ignore_errors=True)
    return {"format": fmt, "events": size, "file_mb": round(os.path.getsize(log) / 2**20, 1), **timing,
            "events_per_s": round(size / timing["wall_s"]), "in_process_s": stats["seconds"], "read_s": stats["read_seconds"],
            "events_per_s_in_process": round(size / stats["seconds"]), "interactions_kept": stats["interactions"],
            "users": stats["users"], "items": stats["items"], "command": " ".join(["python", *command[1:]])}


@dataclass
class SpeedArguments:
    work: str = field(default="/tmp/geniusrec-events", metadata={"help": "where the synthetic logs are written (and reused)"})
    sizes: list[int] = field(default_factory=lambda: [1_000_000, 10_000_000], metadata={"help": "events per log", "nargs": "+"})
    formats: list[str] = field(default_factory=lambda: ["parquet", "csv"], metadata={"help": "file formats", "nargs": "+",
                                                                                      "choices": list(EXTENSIONS)})
    output: str | None = field(default=None, metadata={"help": "results JSON (rows are merged with an existing file's, by format and size)"})


def main(argv=None):
    (args,) = parse_args(make_parser(SpeedArguments, description=__doc__), argv)
    os.makedirs(args.work, exist_ok=True)
    rows = {}
    if args.output and os.path.exists(args.output):
        rows = {(r["format"], r["events"]): r for r in json.load(open(args.output))["rows"]}
    for size in args.sizes:
        for fmt in args.formats:
            row = measure(args.work, size, fmt)
            rows[(fmt, size)] = row
            print(f"{fmt:8s} {size:>12,} events  wall {row['wall_s']:7.1f} s  {row['events_per_s']:>10,}/s end to end  "
                  f"({row['events_per_s_in_process']:,}/s after start-up)  peak RSS {row['peak_rss_mb']:,.0f} MB", flush=True)
            if args.output:
                write_json_atomic(args.output, {"rows": sorted(rows.values(), key=lambda r: (r["format"], r["events"])),
                                                **provenance("python -m benchmarks.interactions_speed", argv)})
    return rows


if __name__ == "__main__":
    sys.exit(run_cli(main))
