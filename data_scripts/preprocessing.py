"""Shared processing of interaction logs into the processed-dataset contract (README.md, "Data").

Steps, in order: (readers apply the rating threshold and count malformed rows) -> stable chronological order ->
collapse duplicate (user, item) events, keeping the earliest -> iterative k-core until stable -> token ids ->
atomic write of `sequences/`, `items/`, `tokenizer/`, `stats.json`.

Stable order: rows are sorted by (user, timestamp, original row number in the source file), so ties in timestamp
keep the file's order, whatever the sort algorithm. Items get token ids in the order of their raw ids (numerically
when all ids are integers, else as strings); users are stored in the same order of theirs.
"""

import datetime
import json
import os
import shutil
import uuid
from array import array
from dataclasses import dataclass, field

import numpy as np

from modeling_geniusrec.tokenization_items import NUM_SPECIAL_TOKENS


class MalformedRows:
    """Counts malformed input rows, remembers the first few line numbers, and enforces a threshold.

    `max_fraction` is the largest tolerated fraction of malformed rows: 0 fails on the first summary with any bad
    row; the default tolerates up to 1%.
    """

    def __init__(self, source: str, max_fraction: float = 0.01, keep: int = 5):
        self.source, self.max_fraction, self.keep = source, max_fraction, keep
        self.count, self.total, self.lines, self.reasons = 0, 0, [], []

    def add(self, line_number: int, reason: str) -> None:
        self.count += 1
        if len(self.lines) < self.keep:
            self.lines.append(line_number)
            self.reasons.append(reason)

    def check(self) -> None:
        if self.count and self.count > self.max_fraction * max(self.total, 1):
            examples = "; ".join(f"line {n}: {r}" for n, r in zip(self.lines, self.reasons))
            raise ValueError(
                f"{self.source}: {self.count} of {self.total} rows are malformed (first: {examples}); above the "
                f"threshold of {self.max_fraction:.2%}. Fix the file or raise --max_malformed_fraction to skip them."
            )

    def summary(self) -> dict:
        return {"malformed_rows": self.count, "rows_read": self.total, "first_malformed_lines": self.lines}


class InteractionLog:
    """Interactions accumulated while streaming a source: raw ids are interned, rows kept in compact arrays.

    Memory grows with what is kept (distinct users and items, kept rows: 16 bytes per row), not with the file.
    """

    def __init__(self):
        self.user_index: dict[str, int] = {}
        self.item_index: dict[str, int] = {}
        self.users = array("i")
        self.items = array("i")
        self.timestamps = array("q")

    def add(self, user: str, item: str, timestamp: int) -> None:
        u = self.user_index.setdefault(user, len(self.user_index))
        i = self.item_index.setdefault(item, len(self.item_index))
        self.users.append(u)
        self.items.append(i)
        self.timestamps.append(timestamp)

    def extend(self, users: np.ndarray, items: np.ndarray, timestamps: np.ndarray) -> None:
        """Appends a batch of rows whose ids are already interned (`user_index` / `item_index` values)."""
        self.users.frombytes(np.ascontiguousarray(users, dtype=np.int32).tobytes())
        self.items.frombytes(np.ascontiguousarray(items, dtype=np.int32).tobytes())
        self.timestamps.frombytes(np.ascontiguousarray(timestamps, dtype=np.int64).tobytes())

    def __len__(self) -> int:
        return len(self.users)

    def release_rows(self) -> None:
        """Drops the rows (not the ids): `process_log` calls it once it holds its own sorted copy, so a large log is
        not held twice."""
        self.users, self.items, self.timestamps = array("i"), array("i"), array("q")

    def arrays(self):
        return (
            np.frombuffer(self.users, dtype=np.int32),
            np.frombuffer(self.items, dtype=np.int32),
            np.frombuffer(self.timestamps, dtype=np.int64),
        )


def natural_order(names: np.ndarray) -> np.ndarray:
    """Indices that sort raw ids: numerically when every id is an integer (MovieLens ids), else as strings."""
    if all(str(n).isdigit() for n in names):
        return np.argsort(np.array([int(n) for n in names], dtype=np.int64), kind="stable")
    return np.argsort(np.array([str(n) for n in names]), kind="stable")


def iterative_k_core(users: np.ndarray, items: np.ndarray, user_k: int, item_k: int, trace: list | None = None):
    """Row mask of the maximal sub-log where every user has >= user_k rows and every item >= item_k rows.

    Repeatedly drops rows of users/items under their threshold until nothing changes (a fixed point; removing
    only what violates the bound keeps it maximal). Returns `(keep_mask, rounds)`; `trace`, when given, receives
    `(users removed, items removed, rows removed)` per round.
    """
    keep = np.ones(len(users), dtype=bool)
    rounds = 0
    if user_k <= 1 and item_k <= 1:
        return keep, rounds
    num_users, num_items = int(users.max(initial=-1)) + 1, int(items.max(initial=-1)) + 1
    while True:
        rounds += 1
        user_count = np.bincount(users[keep], minlength=num_users)
        item_count = np.bincount(items[keep], minlength=num_items)
        new_keep = keep & (user_count[users] >= user_k) & (item_count[items] >= item_k)
        if trace is not None and not np.array_equal(new_keep, keep):
            trace.append((int(((user_count > 0) & (user_count < user_k)).sum()), int(((item_count > 0) & (item_count < item_k)).sum()),
                          int((keep & ~new_keep).sum())))
        if np.array_equal(new_keep, keep):
            return keep, rounds
        keep = new_keep


def first_of_each_pair(users: np.ndarray, items: np.ndarray, rows_per_slice: int = 1 << 23) -> np.ndarray:
    """Row mask of the first row of each (user, item) pair, for rows grouped by user (users contiguous, e.g. sorted).
    Works on slices of whole users of about `rows_per_slice` rows, so its memory does not grow with the log."""
    keep = np.zeros(len(users), dtype=bool)
    starts = np.flatnonzero(np.concatenate([[True], users[1:] != users[:-1]])) if len(users) else np.zeros(0, dtype=np.int64)
    width = int(items.max(initial=0)) + 1
    lo = 0
    while lo < len(users):
        index = np.searchsorted(starts, lo + rows_per_slice)  # the slice ends where a user starts
        hi = int(starts[index]) if index < len(starts) else len(users)
        change = np.ones(hi - lo, dtype=bool)
        change[1:] = users[lo + 1 : hi] != users[lo : hi - 1]
        key = np.cumsum(change, dtype=np.int64) * width + items[lo:hi]  # (user within the slice, item)
        by_key = np.argsort(key, kind="stable")  # within a (user, item), the earliest row first
        sorted_key = key[by_key]
        first = np.ones(hi - lo, dtype=bool)
        first[1:] = sorted_key[1:] != sorted_key[:-1]
        keep[lo + by_key[first]] = True
        lo = hi
    return keep


@dataclass
class ProcessedLog:
    user_raw_ids: list  # kept users, natural order of raw ids
    item_raw_ids: list  # kept items, token order (natural order of raw ids)
    offsets: np.ndarray  # (num_users + 1,)
    item_tokens: np.ndarray  # (num_interactions,) int32 token ids
    timestamps: np.ndarray  # (num_interactions,) int64 seconds
    counts: dict = field(default_factory=dict)


def process_log(log: InteractionLog, *, user_k: int = 0, item_k: int = 0, keep_duplicates: bool = False,
                num_special: int = NUM_SPECIAL_TOKENS) -> ProcessedLog:
    """Orders, deduplicates, k-cores and tokenises an [`InteractionLog`] (see the module docstring)."""
    if len(log) == 0:
        raise ValueError("no interactions were read: check the input files and the rating threshold")
    users, items, timestamps = log.arrays()
    user_names = np.array(list(log.user_index), dtype=object)
    item_names = np.array(list(log.item_index), dtype=object)
    counts = {"interactions_read": int(len(users)), "distinct_users_read": len(log.user_index), "distinct_items_read": len(log.item_index)}
    # one sort gives the final order: users in the natural order of their raw ids, then time, then row order (both
    # sorts are stable); a log already in time order (most are) needs the sort by user only
    first_rank = np.empty(len(user_names), dtype=np.int32)
    first_rank[natural_order(user_names)] = np.arange(len(user_names), dtype=np.int32)
    ranks = first_rank[users]
    in_time_order = bool((timestamps[1:] >= timestamps[:-1]).all())
    order = np.argsort(ranks, kind="stable") if in_time_order else np.lexsort((timestamps, ranks))
    del ranks
    users, items, timestamps = users[order], items[order], timestamps[order]
    del order
    log.release_rows()
    if not keep_duplicates:
        keep_first = first_of_each_pair(users, items)
        counts["duplicates_removed"] = int(len(keep_first) - keep_first.sum())
        if counts["duplicates_removed"]:
            users, items, timestamps = users[keep_first], items[keep_first], timestamps[keep_first]
        del keep_first
    trace = []
    keep, rounds = iterative_k_core(users, items, user_k, item_k, trace)
    counts["k_core_rounds"] = rounds
    counts["removed_by_k_core"] = int((~keep).sum())
    users, items, timestamps = users[keep], items[keep], timestamps[keep]
    if len(users) == 0:
        steps = "; ".join(f"round {n}: {u:,} users and {i:,} items under the bound, {r:,} events removed"
                          for n, (u, i, r) in enumerate(trace, start=1))
        raise ValueError(f"nothing survives the {user_k}/{item_k}-core of {len(keep):,} events ({steps}): lower --user_k / --item_k")

    kept_users = np.flatnonzero(np.bincount(users, minlength=len(user_names)))
    kept_items = np.flatnonzero(np.bincount(items, minlength=len(item_names)))
    item_order = kept_items[natural_order(item_names[kept_items])]
    item_token = np.full(len(item_names), -1, dtype=np.int64)
    item_token[item_order] = np.arange(num_special, num_special + len(item_order))
    user_order = kept_users[natural_order(user_names[kept_users])]
    user_rank = np.full(len(user_names), -1, dtype=np.int64)
    user_rank[user_order] = np.arange(len(user_order))
    if (np.diff(user_rank[users]) < 0).any():  # k-core changed which order is natural (e.g. the last non-numeric id left)
        regroup = np.argsort(user_rank[users], kind="stable")  # stable: each user's chronological order stays
        users, items, timestamps = users[regroup], items[regroup], timestamps[regroup]
    lengths = np.bincount(user_rank[users], minlength=len(user_order))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return ProcessedLog(
        user_raw_ids=[str(user_names[u]) for u in user_order],
        item_raw_ids=[str(item_names[i]) for i in item_order],
        offsets=offsets,
        item_tokens=item_token[items].astype(np.int32),
        timestamps=timestamps.astype(np.int64),
        counts=counts,
    )


def length_quantiles(offsets: np.ndarray) -> dict:
    lengths = np.diff(offsets)
    qs = {f"p{int(q * 100)}": float(np.quantile(lengths, q)) for q in (0.1, 0.25, 0.5, 0.75, 0.9, 0.99)}
    return {"min": int(lengths.min()), "mean": float(lengths.mean()), "max": int(lengths.max()), **qs}


MARKER = "stats.json"  # a processed folder written by these scripts holds stats.json, sequences/ and tokenizer/


def is_processed_folder(path: str) -> bool:
    return all(os.path.exists(os.path.join(path, part)) for part in (MARKER, "sequences", "tokenizer"))


def check_output_dir(out_dir: str, inputs=(), overwrite: bool = False) -> str:
    """Refuses, before any work, an `--out` that would destroy something this program did not write: a file, a
    non-empty folder that is not a processed dataset (unless `overwrite`), or any folder that holds (or is) one of
    the `inputs` (never, even with `overwrite`). Removes stale temp folders of earlier killed runs. Returns the
    absolute path."""
    out_dir = os.path.abspath(out_dir)
    for source in inputs:
        if not source:
            continue
        source = os.path.abspath(source)
        if source == out_dir or source.startswith(out_dir + os.sep):
            raise ValueError(f"--out {out_dir!r} holds the input {source!r}: writing there would delete it; choose another --out")
    if os.path.isfile(out_dir):
        raise ValueError(f"--out {out_dir!r} is a file, not a folder: choose a folder path (nothing was written)")
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not is_processed_folder(out_dir) and not overwrite:
        raise ValueError(f"--out {out_dir!r} is a non-empty folder that is not a processed dataset: choose a new path, or pass "
                         "--overwrite to replace it (nothing was written)")
    clean_stale_temp_folders(out_dir)
    return out_dir


def _temp_prefix(out_dir: str) -> str:
    return os.path.join(os.path.dirname(out_dir), f".{os.path.basename(out_dir)}.tmp-")


def clean_stale_temp_folders(out_dir: str) -> list[str]:
    """Removes `.<out>.tmp-<pid>-*` folders beside `out_dir` whose writing process is gone (a killed run)."""
    removed = []
    prefix = _temp_prefix(out_dir)
    parent = os.path.dirname(out_dir)
    if not os.path.isdir(parent):
        return removed
    for name in os.listdir(parent):
        path = os.path.join(parent, name)
        if not path.startswith(prefix) or not os.path.isdir(path):
            continue
        pid = path[len(prefix):].split("-")[0]
        if pid.isdigit() and pid_alive(int(pid)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` exists on this machine (the owner check of temp folders, temp files and run locks)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_processed(out_dir: str, processed: ProcessedLog, item_rows: list[dict], parameters: dict, extra_stats: dict | None = None) -> dict:
    """Writes the processed-dataset folder atomically: everything goes to a temp folder beside `out_dir`, which is
    renamed into place only when complete; a previous `out_dir` stays intact until then. Returns the stats."""
    import datasets
    import pyarrow as pa

    from modeling_geniusrec.tokenization_items import ItemTokenizer

    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = f"{_temp_prefix(out_dir)}{os.getpid()}-{uuid.uuid4().hex[:8]}"  # the pid lets a later run tell a stale one
    os.makedirs(tmp)
    try:
        offsets = pa.array(processed.offsets.astype(np.int32) if processed.offsets[-1] < 2**31 else processed.offsets)
        list_type = pa.ListArray if offsets.type == pa.int32() else pa.LargeListArray
        table = pa.table(
            {
                "user_id": pa.array(processed.user_raw_ids, type=pa.string()),
                "item_ids": list_type.from_arrays(offsets, pa.array(processed.item_tokens, type=pa.int32())),
                "timestamps": list_type.from_arrays(offsets, pa.array(processed.timestamps, type=pa.int64())),
            }
        )
        datasets.disable_progress_bars()  # one line per dataset, not four bars
        datasets.Dataset(table).save_to_disk(os.path.join(tmp, "sequences"))
        datasets.Dataset.from_list(item_rows).save_to_disk(os.path.join(tmp, "items"))
        tokenizer = ItemTokenizer.from_raw_ids(processed.item_raw_ids)
        tokenizer.item_titles = {row["raw_id"]: row["title"] for row in item_rows if row.get("title") not in (None, "", row["raw_id"])}
        tokenizer.save_pretrained(os.path.join(tmp, "tokenizer"))
        stats = {
            "users": len(processed.user_raw_ids),
            "items": len(processed.item_raw_ids),
            "interactions": int(processed.offsets[-1]),
            "vocab_size": len(tokenizer),
            "sequence_length": length_quantiles(processed.offsets),
            "parameters": parameters,
            **processed.counts,
            **(extra_stats or {}),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        with open(os.path.join(tmp, "stats.json"), "w") as f:
            json.dump(stats, f, indent=2)
        backup = None
        if os.path.exists(out_dir):  # an earlier processed folder (or, with --overwrite, what the user allowed)
            backup = f"{tmp}.previous"
            os.rename(out_dir, backup)
        os.rename(tmp, out_dir)
        if backup:
            shutil.rmtree(backup, ignore_errors=True)
        return stats
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def print_stats(stats: dict, out_dir: str) -> None:
    print(
        f"wrote {out_dir}: {stats['users']:,} users, {stats['items']:,} items, {stats['interactions']:,} interactions "
        f"(median length {stats['sequence_length']['p50']:.0f})"
    )


__all__ = ["MalformedRows", "InteractionLog", "iterative_k_core", "process_log", "write_processed", "natural_order", "check_output_dir",
           "clean_stale_temp_folders", "is_processed_folder"]
