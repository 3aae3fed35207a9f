"""Your own interaction log -> a GeniusRec processed-dataset folder (README "Your own data").

    python -m data_scripts.interactions --events events.csv --items items.csv --out data/mine
    python -m data_scripts.interactions --events logs/ --out data/mine --user_column uid --item_column sku \\
        --time_column ts --time_unit ms --filter event_type=purchase,add_to_cart --user_k 5 --item_k 5
    python -m data_scripts.interactions --hf_dataset my_org/my_events --hf_split train --out data/mine

`--events`: a CSV / TSV file (quoted fields, .gz allowed), a Parquet file, a folder of Parquet (or CSV / JSON
Lines) shards read in name order, or JSON Lines (.gz allowed); `--hf_dataset`: anything `datasets.load_dataset`
opens (a hub name, a local file, a folder saved with `save_to_disk`). One row per event with a user id, an item id
and a time (`--time_unit`: s / ms / us / ns / iso, detected when not given and printed). Files are read in record
batches through pyarrow: memory grows with the kept events (16 bytes each) and the distinct ids, never with the file.

The processing rules are those of every reader (data_scripts/preprocessing.py): stable chronological order (ties in
time keep the file's row order), duplicate (user, item) events collapsed to the earliest unless
`--keep_duplicates`, iterative k-core (`--user_k` / `--item_k`, 0 = off), token ids in the natural order of the raw
ids. `--items` adds titles, the text that `data_scripts.embed` embeds (`--item_text_template`), an image path and
every other column as metadata; events whose item it lacks are kept and counted in stats.json.

Bad input stops before anything is written, with one line naming the problem and the fix: a missing column, times
that do not parse (`--on_bad_rows skip` drops and counts them instead), times in the wrong unit, an empty result.
"""

import os
import string
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from modeling_geniusrec.tokenization_items import NUM_SPECIAL_TOKENS

from .arguments import make_parser, parse_args, run_cli
from .preprocessing import InteractionLog, check_output_dir, print_stats, process_log, write_processed
from .tables import FORMATS, column_names, dataset_batches, detect_format, load_hf_dataset, read_batches, require_columns, shard_files
from .timestamps import UNITS, check_range, detect_unit, to_seconds

RESERVED_ITEM_FIELDS = ("id", "raw_id", "title", "text", "image")


class BadRows:
    """Counts rows dropped for one reason, with the first few row numbers (from 1) and values."""

    def __init__(self, reason: str, keep: int = 5):
        self.reason, self.keep, self.count, self.rows, self.values = reason, keep, 0, [], []

    def add(self, bad: np.ndarray, offset: int, values: pa.Array | None = None) -> None:
        where = np.flatnonzero(bad)
        self.count += len(where)
        for row in where[: self.keep - len(self.rows)]:
            self.rows.append(int(offset + row + 1))
            self.values.append(None if values is None else values[int(row)].as_py())

    def describe(self) -> str:
        examples = ", ".join(f"row {r}" + (f" ({v!r})" if v is not None else "") for r, v in zip(self.rows, self.values))
        return f"{self.count:,} rows with {self.reason} (first: {examples})"


class Interner:
    """Raw ids -> int32 ids in first-seen order, vectorised in Arrow: per batch, the distinct values are looked up in
    the ids known so far (`pyarrow.compute.index_in`) and the new ones appended; no Python object per row."""

    def __init__(self):
        self.known = pa.array([], type=pa.string())

    def __call__(self, array: pa.Array) -> np.ndarray:
        encoded = pc.dictionary_encode(array)
        distinct = encoded.dictionary
        position = pc.index_in(distinct, value_set=self.known)
        new = position.is_null().to_numpy(zero_copy_only=False)
        lookup = position.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32)
        lookup[new] = np.arange(len(self.known), len(self.known) + int(new.sum()), dtype=np.int32)
        if new.any():
            self.known = pa.concat_arrays([self.known, distinct.filter(pa.array(new))])
        return lookup[encoded.indices.to_numpy(zero_copy_only=False)]

    def index(self) -> dict:
        """`{raw id: id}` in id order (what [`InteractionLog`] keeps)."""
        return {value: number for number, value in enumerate(self.known.to_pylist())}


def as_text(array: pa.Array) -> pa.Array:
    """Ids as text: integer ids become their decimal string (`42` -> "42"), text stays as it is."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if pa.types.is_string(array.type):
        return array
    if pa.types.is_floating(array.type):  # ids read as floats (a column with gaps in pandas): 42.0 -> "42"
        whole = pc.equal(pc.floor(array), array)
        if pc.all(pc.fill_null(whole, True)).as_py():
            array = pc.cast(array, pa.int64())
    return pc.cast(array, pa.string())


def parse_filters(entries) -> dict[str, set]:
    """`["event_type=purchase,cart"]` -> `{"event_type": {"purchase", "cart"}}`."""
    filters = {}
    for entry in entries or []:
        column, eq, values = entry.partition("=")
        if not eq or not column or not values:
            raise ValueError(f"--filter takes COLUMN=VALUE[,VALUE...] (e.g. --filter event_type=purchase), got {entry!r}")
        filters.setdefault(column, set()).update(v for v in values.split(","))
    return filters


class EventReader:
    """Reads event batches into an [`InteractionLog`], counting what it drops and why."""

    def __init__(self, args):
        self.args, self.log = args, InteractionLog()
        self.filters = parse_filters(args.filter)
        self.unit, self.unit_how = (None, None) if args.time_unit == "auto" else (args.time_unit, "--time_unit")
        self.bad = {"time": BadRows(f"a missing or unparsable time in column {args.time_column!r}"),
                    "user": BadRows(f"a missing or empty user id in column {args.user_column!r}"),
                    "item": BadRows(f"a missing or empty item id in column {args.item_column!r}"),
                    "rating": BadRows(f"a missing or non-numeric rating in column {args.rating_column!r}")}
        self.rows_read = self.filtered_out = self.below_rating = 0
        self.user_ids, self.item_ids = Interner(), Interner()
        self.first, self.last = None, None

    def columns(self) -> dict[str, str]:
        a = self.args
        wanted = {"--user_column": a.user_column, "--item_column": a.item_column, "--time_column": a.time_column,
                  "--rating_column": a.rating_column}
        wanted.update({f"--filter {c}=...": c for c in self.filters})
        return wanted

    def feed(self, batch: pa.RecordBatch) -> None:
        a, offset, n = self.args, self.rows_read, batch.num_rows
        self.rows_read += n
        if n == 0:
            return
        keep = np.ones(n, dtype=bool)
        for column, values in self.filters.items():
            match = pc.fill_null(pc.is_in(as_text(batch.column(column)), value_set=pa.array(sorted(values))), False)
            match = match.to_numpy(zero_copy_only=False)
            self.filtered_out += int((keep & ~match).sum())
            keep &= match
        times = batch.column(a.time_column)
        if self.unit is None:
            self.unit, self.unit_how = detect_unit(times)
            print(f"time unit: {self.unit} (detected from {self.unit_how}; --time_unit overrides)", file=sys.stderr)
        seconds, ok = to_seconds(times, self.unit)
        users, items = as_text(batch.column(a.user_column)), as_text(batch.column(a.item_column))
        good = {"time": ok}
        for name, ids in (("user", users), ("item", items)):
            good[name] = pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(ids)), 0), False).to_numpy(zero_copy_only=False)
        if a.rating_column:
            ratings = batch.column(a.rating_column)
            try:
                ratings = pc.cast(ratings, pa.float64())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                ratings = pc.cast(pc.if_else(pc.match_substring_regex(as_text(ratings), r"^\s*[+-]?\d*\.?\d+\s*$"), ratings, None), pa.float64())
            good["rating"] = ratings.is_valid().to_numpy(zero_copy_only=False)
        for name, valid in good.items():  # a row is reported under its first problem only
            self.bad[name].add(keep & ~valid, offset, times if name == "time" else None)
            keep &= valid
        if a.rating_column and a.min_rating is not None:
            high = pc.fill_null(pc.greater_equal(ratings, a.min_rating), False).to_numpy(zero_copy_only=False)
            self.below_rating += int((keep & ~high).sum())
            keep &= high
        if not keep.all():
            mask = pa.array(keep)
            users, items, seconds = users.filter(mask), items.filter(mask), seconds[keep]
        if len(seconds):
            self.first = int(seconds.min()) if self.first is None else min(self.first, int(seconds.min()))
            self.last = int(seconds.max()) if self.last is None else max(self.last, int(seconds.max()))
            self.log.extend(self.user_ids(users), self.item_ids(items), seconds)

    def finish(self, source: str) -> dict:
        a = self.args
        problems = [b for b in self.bad.values() if b.count]
        if problems and a.on_bad_rows == "error":
            raise ValueError(f"{source}: {'; '.join(b.describe() for b in problems)}. Fix those rows, or pass --on_bad_rows skip to "
                             "drop and count them")
        if len(self.log) == 0:
            raise ValueError(f"{source}: no events left of {self.rows_read:,} rows read ({self.filtered_out:,} removed by --filter, "
                             f"{self.below_rating:,} below --min_rating, {sum(b.count for b in problems):,} bad rows): check the "
                             "filters and the columns")
        check_range(self.first, self.last, self.unit, a.time_column)
        self.log.user_index, self.log.item_index = self.user_ids.index(), self.item_ids.index()
        return {"rows_read": self.rows_read, "time_unit": self.unit, "time_unit_from": self.unit_how,
                "rows_removed_by_filter": self.filtered_out, "rows_below_min_rating": self.below_rating,
                "bad_rows": {name: {"count": b.count, "first_rows": b.rows} for name, b in self.bad.items() if b.count},
                "first_event": self.first, "last_event": self.last}


def event_batches(args, wanted: dict):
    """`(source name, total rows or None, iterator of RecordBatch)` of `--events` or `--hf_dataset`, checking the columns first."""
    columns = list(dict.fromkeys(c for c in wanted.values() if c))
    if args.hf_dataset:
        dataset = load_hf_dataset(args.hf_dataset, args.hf_split)
        require_columns(args.hf_dataset, dataset.column_names, wanted)
        return args.hf_dataset, len(dataset), dataset_batches(dataset, columns, args.batch_size)
    if not os.path.exists(args.events):
        raise FileNotFoundError(f"--events {args.events!r} does not exist")
    fmt = args.format or detect_format(args.events)
    require_columns(args.events, column_names(args.events, fmt), wanted)
    total = None
    if fmt == "parquet":
        import pyarrow.parquet as pq

        files = [args.events] if os.path.isfile(args.events) else shard_files(args.events, fmt)
        total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    text_ids = (args.user_column, args.item_column, args.time_column)
    return args.events, total, read_batches(args.events, columns, fmt, args.batch_size, string_columns=text_ids)


def read_items(args) -> tuple[dict, list[str]]:
    """`({raw id: row dict}, columns)` of the `--items` table (every column kept, ids as text)."""
    fmt = args.items_format or detect_format(args.items)
    names = column_names(args.items, fmt)
    id_column = args.items_id_column or args.item_column
    require_columns(args.items, names, {"--items_id_column": id_column, "--title_column": args.title_column,
                                        "--image_column": args.image_column})
    fields = [f for _, f, _, _ in string.Formatter().parse(args.item_text_template) if f]
    missing = [f for f in fields if f not in names and f not in ("item_id", "title")]
    if missing:
        raise ValueError(f"--item_text_template names {missing}, not columns of {args.items} (columns: {names}); use {{column}} fields of "
                         "the items table")
    rows = {}
    for batch in read_batches(args.items, names, fmt, args.batch_size, string_columns=(id_column,)):
        ids = as_text(batch.column(id_column)).to_pylist()
        for raw_id, row in zip(ids, batch.to_pylist()):
            if raw_id is not None:
                rows.setdefault(raw_id, row)
    return rows, names


def item_table(args, raw_ids: list[str], meta: dict, names: list[str]) -> tuple[list[dict], int]:
    """The `items` rows in token order and the number of items `--items` lacks."""
    id_column = args.items_id_column or args.item_column
    title_column = args.title_column or ("title" if "title" in names else None)
    extra = [c for c in names if c not in (id_column, title_column, args.image_column)]
    rows, missing = [], 0
    for token_id, raw_id in enumerate(raw_ids, start=NUM_SPECIAL_TOKENS):
        info = meta.get(raw_id)
        if info is None:
            missing += 1
            info = {}
        title = info.get(title_column) if title_column else None
        title = str(title) if title not in (None, "") else raw_id
        values = {k: ("" if v is None else v) for k, v in info.items()}
        values.setdefault("title", title)
        values["item_id"] = raw_id
        text = args.item_text_template.format_map(_Blank(values)) if info else title
        row = {"id": token_id, "raw_id": raw_id, "title": title, "text": text}
        if args.image_column:
            row["image"] = info.get(args.image_column) or None
        for column in extra:
            row[f"meta_{column}" if column in RESERVED_ITEM_FIELDS else column] = info.get(column)
        rows.append(row)
    return rows, missing


class _Blank(dict):
    def __missing__(self, key):
        return ""


def build(args) -> dict:
    if bool(args.events) == bool(args.hf_dataset):
        raise ValueError("pass exactly one of --events FILE_OR_FOLDER and --hf_dataset NAME_OR_PATH")
    if args.min_rating is not None and not args.rating_column:
        raise ValueError("--min_rating needs --rating_column (the column that holds the ratings)")
    check_output_dir(args.out, [args.events, args.items], args.overwrite)  # refuse before any work
    start = time.time()
    reader = EventReader(args)
    source, total, batches = event_batches(args, reader.columns())
    meta, names = read_items(args) if args.items else ({}, [])
    with tqdm(total=total, unit=" events", unit_scale=True, desc="reading", disable=args.quiet, mininterval=1) as bar:
        for batch in batches:
            reader.feed(batch)
            bar.update(batch.num_rows)
    read_stats = reader.finish(source)
    read_seconds = time.time() - start
    unknown_events = 0
    if args.items:
        known = np.array([raw in meta for raw in reader.log.item_index], dtype=bool)
        unknown_events = int((~known[np.frombuffer(reader.log.items, dtype=np.int32)]).sum())
    processed = process_log(reader.log, user_k=args.user_k, item_k=args.item_k, keep_duplicates=args.keep_duplicates)
    rows, missing = item_table(args, processed.item_raw_ids, meta, names)
    kept = set(processed.item_raw_ids)
    parameters = {k: v for k, v in vars(args).items() if k not in ("out", "quiet")}
    extra = {"source": source, **read_stats, "items_table": args.items, "items_without_metadata": missing,
             "events_with_item_missing_from_items": unknown_events,
             "items_table_rows_without_events": sum(1 for raw in meta if raw not in kept),
             "read_seconds": round(read_seconds, 2), "seconds": round(time.time() - start, 2)}
    stats = write_processed(args.out, processed, rows, parameters, extra)
    print_stats(stats, args.out)
    if not args.quiet:
        elapsed = max(time.time() - start, 1e-9)
        print(f"{reader.rows_read:,} rows in {elapsed:.1f} s ({reader.rows_read / elapsed:,.0f} events/s); "
              f"{stats.get('duplicates_removed', 0):,} duplicates collapsed, {stats['removed_by_k_core']:,} events removed by k-core"
              + (f", {missing:,} items without a row in --items" if args.items else ""))
    return stats


@dataclass
class InteractionsArguments:
    out: str = field(metadata={"help": "output folder, written atomically; an existing folder is replaced only if it is an earlier "
                                       "processed dataset (see --overwrite)"})
    events: str | None = field(default=None, metadata={"help": "events file or folder of shards: .csv / .tsv (.gz), .parquet, "
                                                               ".jsonl (.gz)"})
    hf_dataset: str | None = field(default=None, metadata={"help": "instead of --events: a datasets.load_dataset name or local "
                                                                   "path (a file, or a folder saved with save_to_disk)"})
    hf_split: str = field(default="train", metadata={"help": "split of --hf_dataset"})
    format: str | None = field(default=None, metadata={"help": "format of --events when its name does not tell",
                                                       "choices": list(FORMATS)})
    user_column: str = field(default="user_id", metadata={"help": "column of user ids"})
    item_column: str = field(default="item_id", metadata={"help": "column of item ids (and of the --items table's ids)"})
    time_column: str = field(default="timestamp", metadata={"help": "column of event times"})
    time_unit: str = field(default="auto", metadata={"help": "unit of the times: s, ms, us, ns (numbers) or iso (ISO 8601 text, "
                                                             "no zone = UTC); auto detects it and prints it",
                                                     "choices": ["auto", *UNITS]})
    filter: list[str] | None = field(default=None, metadata={"help": "keep only rows whose COLUMN is one of the values: "
                                                                     "COLUMN=VALUE[,VALUE...] (repeatable)", "nargs": "*"})
    rating_column: str | None = field(default=None, metadata={"help": "column of ratings (for --min_rating)"})
    min_rating: float | None = field(default=None, metadata={"help": "keep events whose rating is >= this value"})
    on_bad_rows: str = field(default="error", metadata={"help": "rows with a missing or unparsable time, user or item: error "
                                                                "(stop, naming the first rows) or skip (drop and count them "
                                                                "in stats.json)", "choices": ["error", "skip"]})
    items: str | None = field(default=None, metadata={"help": "items table (.csv / .tsv / .parquet / .jsonl): one row per item, "
                                                              "titles, text and metadata"})
    items_format: str | None = field(default=None, metadata={"help": "format of --items when its name does not tell",
                                                             "choices": list(FORMATS)})
    items_id_column: str | None = field(default=None, metadata={"help": "id column of --items (default: --item_column)"})
    title_column: str | None = field(default=None, metadata={"help": "title column of --items (default: 'title' when present, "
                                                                     "else the raw id is the title)"})
    item_text_template: str = field(default="{title}", metadata={"help": "the text each item gets embedded with, "
                                                                         "from --items columns, e.g. '{title}. {category}'"})
    image_column: str | None = field(default=None, metadata={"help": "column of --items with an image path or URL"})
    user_k: int = field(default=0, metadata={"help": "iterative k-core: minimum events per user (0: off)"})
    item_k: int = field(default=0, metadata={"help": "iterative k-core: minimum events per item (0: off)"})
    keep_duplicates: bool = field(default=False, metadata={"help": "keep repeated (user, item) events instead of the earliest only"})
    overwrite: bool = field(default=False, metadata={"help": "replace a non-empty --out folder that is not a processed dataset"})
    batch_size: int = field(default=1 << 20, metadata={"help": "rows per record batch read"})
    quiet: bool = field(default=False, metadata={"help": "no progress bar or summary line"})


def main(argv=None):
    parser = make_parser(InteractionsArguments, description=__doc__)
    (args,) = parse_args(parser, argv)
    if args.batch_size < 1:
        parser.error(f"--batch_size must be >= 1, got {args.batch_size}")
    return build(args)


if __name__ == "__main__":
    sys.exit(run_cli(main))
