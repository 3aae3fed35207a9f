"""Synthetic interaction logs in the layout a user brings (for the reader's speed benchmark and the tests).

    python -m data_scripts.make_synthetic_events --events 10000000 --out /tmp/events.parquet
    python -m data_scripts.make_synthetic_events --events 1000000 --out /tmp/events.csv --items /tmp/items.csv

Columns: `user_id` ("u<n>"), `item_id` ("sku-<n>", Zipf-like popularity), `timestamp` (ISO 8601 text in CSV / JSON
Lines, an Arrow `timestamp[s]` column in Parquet), `event_type` (view / cart / purchase). Users have 1 event in 100 on
average, items 1 in 1,000 (at least 1,000 of each). Written in chunks of 1M rows, so any size fits in memory; a folder
path with `.parquet` shards (`--shards N`) writes a folder of N files. Same seed, same file.
"""

import os
import sys
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .arguments import make_parser, parse_args, run_cli
from .tables import detect_format

START = 1_500_000_000  # 2017-07-14


def event_chunk(rng: np.random.Generator, start: int, size: int, num_users: int, num_items: int, fmt: str) -> pa.Table:
    users = rng.integers(0, num_users, size)
    items = np.minimum((rng.pareto(1.2, size) * num_items / 50).astype(np.int64), num_items - 1)
    times = START + (np.arange(start, start + size, dtype=np.int64) * 7) // 10 + rng.integers(0, 3, size)
    kinds = np.array(["view", "cart", "purchase"])[rng.choice(3, size, p=[0.8, 0.15, 0.05])]
    user_ids = pc.binary_join_element_wise("u", pa.array(users).cast(pa.string()), "")
    item_ids = pc.binary_join_element_wise("sku-", pa.array(items).cast(pa.string()), "")
    stamps = pa.array(times, type=pa.timestamp("s"))
    if fmt != "parquet":
        stamps = pc.strftime(stamps, format="%Y-%m-%dT%H:%M:%SZ")
    return pa.table({"user_id": user_ids, "item_id": item_ids, "timestamp": stamps, "event_type": pa.array(kinds)})


def write_events(path: str, num_events: int, seed: int = 0, shards: int = 1, chunk: int = 1 << 20) -> dict:
    """Writes `num_events` synthetic events to `path` (format from its name; a folder of `.parquet` shards when
    `shards > 1`). Returns the sizes used."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    num_users, num_items = max(1000, num_events // 100), max(1000, num_events // 1000)
    rng = np.random.default_rng(seed)
    fmt = "parquet" if shards > 1 else detect_format(path)
    per_shard = -(-num_events // shards)
    if shards > 1:
        os.makedirs(path, exist_ok=True)
    written = 0
    for shard in range(shards):
        target = os.path.join(path, f"part-{shard:05d}.parquet") if shards > 1 else path
        writer, rows = None, min(per_shard, num_events - written)
        try:
            for offset in range(0, rows, chunk):
                table = event_chunk(rng, written + offset, min(chunk, rows - offset), num_users, num_items, fmt)
                if writer is None:
                    writer = (pq.ParquetWriter(target, table.schema) if fmt == "parquet" else
                              pcsv.CSVWriter(target, table.schema, write_options=pcsv.WriteOptions(delimiter="," if fmt == "csv" else "\t"))
                              if fmt in ("csv", "tsv") else open(target, "w"))
                if fmt == "jsonl":
                    import json

                    for row in table.to_pylist():
                        writer.write(json.dumps(row) + "\n")
                else:
                    writer.write_table(table) if fmt == "parquet" else writer.write(table)
        finally:
            if writer is not None:
                writer.close()
        written += rows
    return {"events": num_events, "users": num_users, "items": num_items}


def write_items(path: str, num_items: int) -> None:
    """An items table for the synthetic catalog: `item_id`, `title`, `category`."""
    import pyarrow.csv as pcsv

    ids = pc.binary_join_element_wise("sku-", pa.array(np.arange(num_items)).cast(pa.string()), "")
    titles = pc.binary_join_element_wise("Product ", pa.array(np.arange(num_items)).cast(pa.string()), "")
    categories = pa.array(np.array(["shoes", "hats", "books", "games"])[np.arange(num_items) % 4])
    pcsv.write_csv(pa.table({"item_id": ids, "title": titles, "category": categories}), path)


@dataclass
class SyntheticEventsArguments:
    out: str = field(metadata={"help": "output file (.csv / .tsv / .parquet / .jsonl) or, with --shards > 1, a folder"})
    events: int = field(default=1_000_000, metadata={"help": "number of events"})
    shards: int = field(default=1, metadata={"help": "Parquet shards (a folder) instead of one file"})
    items: str | None = field(default=None, metadata={"help": "also write an items table (CSV) here"})
    seed: int = field(default=0, metadata={"help": "random seed"})


def main(argv=None):
    (args,) = parse_args(make_parser(SyntheticEventsArguments, description=__doc__), argv)
    if os.path.exists(args.out):
        raise FileExistsError(f"{args.out!r} exists: choose a new path (nothing was written)")
    sizes = write_events(args.out, args.events, args.seed, args.shards)
    if args.items:
        write_items(args.items, sizes["items"])
    print(f"wrote {args.out}: {sizes['events']:,} events, {sizes['users']:,} users, {sizes['items']:,} items")
    return sizes


if __name__ == "__main__":
    sys.exit(run_cli(main))
