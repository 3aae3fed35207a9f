"""Streaming readers of tabular files: CSV / TSV (quoted fields, optionally .gz), Parquet (a file or a folder of
shards), JSON Lines (plain or .gz), or a `datasets` dataset, each yielding pyarrow `RecordBatch`es of the wanted
columns only, so that no whole table is ever held as Python objects.

    >>> for batch in read_batches("events.parquet", columns=["user_id", "item_id", "timestamp"]):
    ...     ...  # a pyarrow.RecordBatch of at most `batch_size` rows

Row numbers in error messages count data rows from 1 (the header of a CSV file is not a row).
"""

import gzip
import os

import pyarrow as pa

FORMATS = ("csv", "tsv", "parquet", "jsonl")
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl",
               ".ndjson": "jsonl", ".json": "jsonl"}


def detect_format(path: str) -> str:
    """`csv` / `tsv` / `parquet` / `jsonl` from the file name (a trailing `.gz` ignored), or from the shards of a folder."""
    if os.path.isdir(path):
        found = sorted({detect_format(f) for f in shard_files(path, None)})
        if len(found) != 1:
            raise ValueError(f"{path!r} holds shards of several formats ({', '.join(found)}): keep one format per folder")
        return found[0]
    name = path[:-3] if path.endswith(".gz") else path
    ext = os.path.splitext(name)[1].lower()
    if ext not in _EXTENSIONS:
        raise ValueError(f"{path!r}: cannot tell the format from the extension {ext or '(none)'!r}: name it .csv, .tsv, .parquet "
                         "or .jsonl (.gz allowed for text formats), or pass --format")
    return _EXTENSIONS[ext]


def shard_files(folder: str, fmt: str | None) -> list[str]:
    """The files of a folder of shards, in name order (the row order of the whole log), hidden files skipped."""
    files = []
    for name in sorted(os.listdir(folder)):
        if name.startswith((".", "_")):
            continue
        path = os.path.join(folder, name)
        stem = name[:-3] if name.endswith(".gz") else name
        if os.path.isfile(path) and os.path.splitext(stem)[1].lower() in _EXTENSIONS:
            if fmt is None or _EXTENSIONS[os.path.splitext(stem)[1].lower()] == fmt:
                files.append(path)
    if not files:
        raise FileNotFoundError(f"{folder!r} holds no .csv / .tsv / .parquet / .jsonl files")
    return files


def column_names(path: str, fmt: str) -> list[str]:
    """The columns of a file (its header, schema or first JSON object), read without reading the file."""
    if os.path.isdir(path):
        return column_names(shard_files(path, fmt)[0], fmt)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).schema_arrow.names
    if fmt in ("csv", "tsv"):
        import pyarrow.csv as pcsv

        reader = pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=1 << 16),
                               parse_options=pcsv.ParseOptions(delimiter="," if fmt == "csv" else "\t"),
                               convert_options=pcsv.ConvertOptions(column_types={}, strings_can_be_null=False))
        return reader.schema.names
    import json

    with (gzip.open(path, "rt", encoding="utf-8") if path.endswith(".gz") else open(path, encoding="utf-8")) as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                try:
                    return list(json.loads(line))
                except ValueError as error:
                    raise ValueError(f"{path}: row {number} is not a JSON object ({error})") from None
    return []


def require_columns(source: str, present: list[str], wanted: dict[str, str]) -> None:
    """Refuses a missing column in one line: which flag asked for it and the columns that do exist."""
    for flag, column in wanted.items():
        if column is not None and column not in present:
            raise ValueError(f"{source}: no column {column!r} (asked by {flag}); the columns are {present}: pass "
                             f"{flag} with one of them")


def read_batches(path: str, columns: list[str], fmt: str | None = None, batch_size: int = 1 << 20,
                 string_columns: tuple = ()):
    """Yields `pyarrow.RecordBatch`es holding `columns` of the file or folder `path`, in row order.

    `string_columns` are read as text from CSV / TSV (no type inference: an id column "007" stays "007", and a
    time column is parsed by the caller, who can then count and locate the rows that do not parse).
    """
    fmt = fmt or detect_format(path)
    if os.path.isdir(path):
        for shard in shard_files(path, fmt):
            yield from read_batches(shard, columns, fmt, batch_size, string_columns)
        return
    if fmt == "parquet":
        import pyarrow.parquet as pq

        yield from pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=columns)
    elif fmt in ("csv", "tsv"):
        import pyarrow.csv as pcsv

        reader = pcsv.open_csv(
            path,
            read_options=pcsv.ReadOptions(block_size=16 << 20),
            parse_options=pcsv.ParseOptions(delimiter="," if fmt == "csv" else "\t", newlines_in_values=False),
            convert_options=pcsv.ConvertOptions(include_columns=columns, column_types={c: pa.string() for c in string_columns},
                                                strings_can_be_null=True, quoted_strings_can_be_null=False),
        )
        try:
            yield from reader
        except pa.ArrowInvalid as error:
            raise ValueError(f"{path}: {str(error).splitlines()[0]} (fix the file, or pass the column as text)") from None
    elif fmt == "jsonl":
        import pyarrow.json as pj

        stream = pa.input_stream(path, compression="gzip" if path.endswith(".gz") else None)
        reader = pj.open_json(stream, read_options=pj.ReadOptions(block_size=16 << 20),
                              parse_options=pj.ParseOptions(newlines_in_values=False))
        try:
            for batch in reader:
                yield batch.select([c for c in columns if c in batch.schema.names])
        except pa.ArrowInvalid as error:
            raise ValueError(f"{path}: {str(error).splitlines()[0]}: a column must hold one JSON type in every row "
                             "(quote numeric ids as strings everywhere, or nowhere)") from None
    else:
        raise ValueError(f"unknown format {fmt!r}: one of {FORMATS}")


def load_hf_dataset(name_or_path: str, split: str = "train"):
    """A `datasets.Dataset` from a hub name, a local folder saved with `save_to_disk`, a local data file, or a folder of
    data files (`datasets.load_dataset`)."""
    import datasets

    if os.path.isdir(name_or_path) and os.path.exists(os.path.join(name_or_path, "dataset_info.json")):
        dataset = datasets.load_from_disk(name_or_path)
    elif os.path.isfile(name_or_path):
        builder = {"csv": "csv", "tsv": "csv", "parquet": "parquet", "jsonl": "json"}[detect_format(name_or_path)]
        kwargs = {"delimiter": "\t"} if detect_format(name_or_path) == "tsv" else {}
        dataset = datasets.load_dataset(builder, data_files=name_or_path, split=split, **kwargs)
    else:
        dataset = datasets.load_dataset(name_or_path, split=split)
    if isinstance(dataset, datasets.DatasetDict):
        if split not in dataset:
            raise ValueError(f"{name_or_path}: no split {split!r} (splits: {list(dataset)}); pass --hf_split")
        dataset = dataset[split]
    return dataset


def dataset_batches(dataset, columns: list[str], batch_size: int = 1 << 20):
    """`RecordBatch`es of `columns` of a `datasets.Dataset`, straight from its Arrow table (no Python rows)."""
    table = dataset.select_columns(columns).with_format("arrow")
    for start in range(0, len(dataset), batch_size):
        chunk = table[start : start + batch_size]
        yield from chunk.to_batches()


__all__ = ["FORMATS", "detect_format", "shard_files", "column_names", "require_columns", "read_batches", "load_hf_dataset",
           "dataset_batches"]
