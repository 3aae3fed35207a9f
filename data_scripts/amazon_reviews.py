"""Amazon Reviews 2023 (`<Category>.jsonl.gz` + `meta_<Category>.jsonl.gz`) -> a GeniusRec processed-dataset folder.

    python -m data_scripts.amazon_reviews --reviews Books.jsonl.gz --meta meta_Books.jsonl.gz --out data/books

Streams both files line by line (gzip or plain): memory grows with the kept users, items and interactions
(16 bytes per review plus the interned ids), never with the file. Reviews: `user_id`, `parent_asin`, `rating`,
`timestamp` (milliseconds, stored as seconds). Items are keyed by `parent_asin`; their text is "Title: ...;
Features: ...; Description: ...; Categories: a > b" cut to `--max_text_chars`; `image` is the first large image
URL. Defaults: 5-core (users and items), duplicates collapsed, no rating threshold. Malformed lines are counted
with their line numbers; items without metadata get the fallback text "Item <parent_asin>" and are counted.

Measured on the synthetic generator (data_scripts.make_synthetic_amazon): see BENCHMARKS.md.
"""

import gzip
import os
import sys
import time
from array import array
from dataclasses import dataclass, field

try:
    import orjson

    loads = orjson.loads
    JSONError = orjson.JSONDecodeError
except ImportError:  # pragma: no cover - orjson is a dependency, json is the fallback
    import json

    loads = json.loads
    JSONError = json.JSONDecodeError

from tqdm.auto import tqdm

from modeling_geniusrec.tokenization_items import NUM_SPECIAL_TOKENS

from .arguments import make_parser, parse_args, run_cli
from .preprocessing import InteractionLog, MalformedRows, check_output_dir, print_stats, process_log, write_processed


def open_lines(path: str):
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path!r} not found: expected an Amazon Reviews 2023 file such as Books.jsonl.gz (reviews) or "
            "meta_Books.jsonl.gz (metadata) from https://amazon-reviews-2023.github.io/"
        )
    if path.endswith(".gz"):
        with open(path, "rb") as f:
            if f.read(2) != b"\x1f\x8b":
                raise ValueError(f"{path}: not a gzip file (the name ends in .gz); decompress it or rename it without .gz")
        return gzip.open(path, "rb")
    return open(path, "rb")


def iter_blocks(path: str, desc: str, progress: bool, block_size: int = 1 << 22):
    """Yields `(first_line_number, [line bytes, ...])` per block of the file (lines never split across blocks)."""
    bar = tqdm(desc=desc, unit=" rows", disable=not progress, mininterval=2)
    number, rest = 1, b""
    with open_lines(path) as f:
        while True:
            try:
                block = f.read(block_size)
            except (EOFError, OSError, gzip.BadGzipFile) as err:  # truncated or corrupt gzip stream
                raise ValueError(f"{path}: the file is truncated or corrupt after line {number} ({err}); download it again") from err
            if not block:
                break
            lines = (rest + block).split(b"\n")
            rest = lines.pop()
            yield number, lines
            number += len(lines)
            bar.update(len(lines))
    if rest:
        yield number, [rest]
    bar.close()


def iter_lines(path: str, desc: str, progress: bool):
    """Yields `(line_number, line bytes)` (block reads: much faster than readline on gzip)."""
    for first, lines in iter_blocks(path, desc, progress):
        for offset, line in enumerate(lines):
            yield first + offset, line


MAX_TIMESTAMP_MS = 2**62  # anything larger (1e30, inf) cannot be an event time


def parse_block(job):
    """Worker: parses one block; ids are interned locally, so only each block's distinct ids cross processes."""
    first, lines, min_rating = job
    users, items, local_users, local_items = {}, {}, array("i"), array("i")
    times, bad, total = array("q"), [], 0
    for offset, line in enumerate(lines):
        if not line.strip():
            continue
        total += 1
        try:
            if first + offset == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]  # a byte-order mark on the first line
            row = loads(line)
            user, item, raw_time = row["user_id"], row["parent_asin"], row["timestamp"]
            if not isinstance(user, str) or not isinstance(item, str) or not user or not item:
                raise TypeError("user_id and parent_asin must be non-empty strings")
            if isinstance(raw_time, bool) or not isinstance(raw_time, (int, float)) or not 0 <= raw_time < MAX_TIMESTAMP_MS:
                raise ValueError(f"timestamp {raw_time!r} is not a time in milliseconds")
            timestamp = int(raw_time) // 1000
            if min_rating is not None and float(row["rating"]) < min_rating:
                continue
        except (JSONError, KeyError, TypeError, ValueError, OverflowError) as err:
            bad.append((first + offset, f"{err.__class__.__name__}: {line[:60]!r}"))
            continue
        u = users.get(user)
        if u is None:
            u = users[user] = len(users)
        i = items.get(item)
        if i is None:
            i = items[item] = len(items)
        local_users.append(u)
        local_items.append(i)
        times.append(timestamp)
    return list(users), local_users, list(items), local_items, times, bad, total


def _reader_worker(conn, inherited) -> None:
    """A reader worker's loop: parses each block it is sent and sends the result back, until it is sent None or its
    pipe closes. SIGINT is ignored (Ctrl-C belongs to the main process, which kills the workers); the pipe ends of the
    main process it inherited are closed, so that it sees the end of its own pipe when the main process is gone."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for other in inherited:
        other.close()
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        try:
            result = ("ok", parse_block(job))
        except Exception as err:  # noqa: BLE001 - sent back and raised by the main process, with the block's line
            result = ("error", f"{err.__class__.__name__}: {err}")
        conn.send(result)


def _start_workers(count: int, procs: list, conns: list) -> bool:
    """Forks `count` reader workers into `procs`, with the main process's end of each one's pipe in `conns` (filled as
    they start, so that the caller stops those that started if a later one fails). Returns whether a Ctrl-C came
    while they forked: SIGINT is only recorded meanwhile (a worker inherits that harmless handler until its first
    step ignores SIGINT), and the caller raises it once it can stop them (ignoring it instead lost it)."""
    import multiprocessing
    import signal

    context, deferred = multiprocessing.get_context("fork"), []

    def record(signum, frame):
        deferred.append(signum)

    previous = signal.signal(signal.SIGINT, record)
    try:
        for _ in range(count):
            mine, theirs = context.Pipe()
            conns.append(mine)
            procs.append(context.Process(target=_reader_worker, args=(theirs, list(conns)), daemon=True))
            procs[-1].start()
            theirs.close()
    finally:
        signal.signal(signal.SIGINT, previous)
    return bool(deferred)


def _parallel_results(jobs, procs: list, conns: list):
    """The parsed blocks of `jobs`, in file order. Block n goes to worker n mod W, which holds one block at a time
    (a second one sent before its result is read could leave both sides blocked on full pipes): this process reads
    and decompresses the next block while the workers parse. No helper thread: stopping is kill and join, which
    cannot hang (multiprocessing.Pool's terminate() could, joining its task thread stuck writing a 4 MB block into
    a pipe nobody read any more)."""
    import collections

    jobs, busy = iter(jobs), collections.deque()
    for index, conn in enumerate(conns):
        job = next(jobs, None)
        if job is None:
            break
        conn.send(job)
        busy.append((index, job[0]))
    while busy:
        index, first = busy.popleft()
        job = next(jobs, None)
        try:
            status, value = conns[index].recv()
        except EOFError:
            procs[index].join(1)
            raise RuntimeError(f"a reader worker ended (exit code {procs[index].exitcode}) while parsing the block from line "
                               f"{first}; --workers 1 parses in this process and shows the error") from None
        if status == "error":
            raise RuntimeError(f"parsing the block from line {first} failed in a reader worker: {value}")
        if job is not None:
            conns[index].send(job)
            busy.append((index, job[0]))
        yield value


def _stop_workers(procs: list, conns: list, clean: bool) -> None:
    """Ends the reader workers: asked to finish when the reading completed (`clean`), killed otherwise."""
    import contextlib

    for proc, conn in zip(procs, conns):
        if clean and proc.is_alive():
            with contextlib.suppress(OSError):  # a worker that ended meanwhile has closed its end
                conn.send(None)
        conn.close()
    for proc in procs:
        if clean:
            proc.join(10)
        if proc.is_alive():
            proc.kill()
        proc.join()


def read_reviews(path: str, log: InteractionLog, bad: MalformedRows, min_rating=None, progress=True, workers: int = 1) -> None:
    """Streams the reviews into `log`. Blocks are parsed by `parse_block`, in this process (`workers=1`) or in
    `workers` forked processes while this one decompresses and merges; merging is in file order, so ids and row order
    are the same either way. Ctrl-C or an error kills the workers and leaves no process behind."""
    import numpy as np

    jobs = ((first, lines, min_rating) for first, lines in iter_blocks(path, "reviews", progress))

    def merge(result) -> None:
        user_keys, users, item_keys, items, times, block_bad, total = result
        bad.total += total
        for number, reason in block_bad:
            bad.add(number, reason)
        if not len(users):
            return
        to_global_user = np.fromiter((log.user_index.setdefault(k, len(log.user_index)) for k in user_keys), np.int32, len(user_keys))
        to_global_item = np.fromiter((log.item_index.setdefault(k, len(log.item_index)) for k in item_keys), np.int32, len(item_keys))
        log.users.frombytes(to_global_user[np.frombuffer(users, np.int32)].tobytes())
        log.items.frombytes(to_global_item[np.frombuffer(items, np.int32)].tobytes())
        log.timestamps.extend(times)

    procs, conns, clean = [], [], False
    try:
        if workers > 1 and _start_workers(workers, procs, conns):
            raise KeyboardInterrupt  # a Ctrl-C while the workers forked, raised where they are stopped
        for result in _parallel_results(jobs, procs, conns) if procs else map(parse_block, jobs):
            merge(result)
        clean = True
    finally:
        _stop_workers(procs, conns, clean)


def join_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(str(v) for v in value if v)
    return str(value)


def item_row(meta: dict, max_chars: int) -> dict:
    title = join_text(meta.get("title")).strip()
    parts = [f"Title: {title}"] if title else []
    for key, label in (("features", "Features"), ("description", "Description")):
        text = join_text(meta.get(key)).strip()
        if text:
            parts.append(f"{label}: {text}")
    categories = meta.get("categories") or []
    if not isinstance(categories, list):  # a stray string or number: one category, never a character list
        categories = [categories]
    if categories:
        parts.append("Categories: " + " > ".join(str(c) for c in categories))
    images = meta.get("images") or []
    if not isinstance(images, list):  # e.g. an int: no usable image
        images = []
    image = next((img.get("large") or img.get("hi_res") or img.get("thumb") for img in images if isinstance(img, dict)), None)
    image = image if isinstance(image, str) else None
    return {
        "title": title,
        "text": "; ".join(parts)[:max_chars],
        "image": image,
        "categories": [str(c) for c in categories],
        "main_category": join_text(meta.get("main_category")),
        "store": join_text(meta.get("store")),
    }


def read_meta(path: str, wanted: set, max_chars: int, bad: MalformedRows, progress=True) -> dict:
    """Metadata rows of the kept items only (`parent_asin` -> item row)."""
    found = {}
    for number, line in iter_lines(path, "metadata", progress):
        if not line.strip():
            continue
        bad.total += 1
        try:
            meta = loads(line)
            asin = meta["parent_asin"]
            if not isinstance(asin, str):
                raise TypeError(f"parent_asin must be a string, got {type(asin).__name__}")
            if asin in wanted and asin not in found:
                found[asin] = item_row(meta, max_chars)
        except (JSONError, KeyError, TypeError, ValueError, AttributeError) as err:
            bad.add(number, f"{err.__class__.__name__}: {line[:60]!r}")
            continue
    return found


def build(args) -> dict:
    check_output_dir(args.out, [args.reviews, args.meta], args.overwrite)  # refuse before any work
    start = time.time()
    log = InteractionLog()
    bad_reviews = MalformedRows(args.reviews, args.max_malformed_fraction)
    read_reviews(args.reviews, log, bad_reviews, args.min_rating, not args.quiet, args.workers)
    bad_reviews.check()
    read_seconds = time.time() - start
    processed = process_log(log, user_k=args.user_k, item_k=args.item_k, keep_duplicates=args.keep_duplicates)
    del log
    process_seconds = time.time() - start - read_seconds
    meta, bad_meta = {}, None
    if args.meta:
        bad_meta = MalformedRows(args.meta, args.max_malformed_fraction)
        meta = read_meta(args.meta, set(processed.item_raw_ids), args.max_text_chars, bad_meta, progress=not args.quiet)
        bad_meta.check()
    rows, missing = [], 0
    for token_id, asin in enumerate(processed.item_raw_ids, start=NUM_SPECIAL_TOKENS):
        info = meta.get(asin)
        if info is None:
            missing += 1
            info = {"title": "", "text": f"Item {asin}", "image": None, "categories": [], "main_category": "", "store": ""}
        rows.append({"id": token_id, "raw_id": asin, **info})
    parameters = {k: v for k, v in vars(args).items() if k not in ("out", "quiet")}
    extra = {
        "source": os.path.basename(args.reviews),
        "items_without_metadata": missing,
        **bad_reviews.summary(),
        "metadata_malformed_rows": bad_meta.count if bad_meta else 0,
        "seconds_reading_reviews": round(read_seconds, 1),
        "seconds_ordering_and_k_core": round(process_seconds, 1),
        "seconds_metadata": round(time.time() - start - read_seconds - process_seconds, 1),
    }
    stats = write_processed(args.out, processed, rows, parameters, extra)
    stats["seconds"] = round(time.time() - start, 1)
    print_stats(stats, args.out)
    if missing:
        print(f"  {missing:,} items had no metadata and got the fallback text 'Item <parent_asin>'")
    return stats


@dataclass
class AmazonReviewsArguments:
    reviews: str = field(metadata={"help": "reviews file, e.g. Books.jsonl.gz (gzip or plain JSON lines)"})
    out: str = field(metadata={"help": "output folder, written atomically (replaced only when complete); an existing folder is "
                                       "replaced only if it is an earlier processed dataset (see --overwrite)"})
    overwrite: bool = field(default=False, metadata={"help": "replace a non-empty --out folder that is not a processed dataset "
                                                            "(a folder holding the inputs is refused even then)"})
    meta: str | None = field(default=None, metadata={"help": "metadata file, e.g. meta_Books.jsonl.gz (optional: fallback texts without it)"})
    min_rating: float | None = field(default=None, metadata={"help": "keep reviews with rating >= this (default: all)"})
    user_k: int = field(default=5, metadata={"help": "iterative k-core: minimum reviews per user (default 5)"})
    item_k: int = field(default=5, metadata={"help": "iterative k-core: minimum reviews per item (default 5)"})
    keep_duplicates: bool = field(default=False, metadata={"help": "keep repeated (user, item) reviews instead of the earliest only"})
    max_text_chars: int = field(default=1000, metadata={"help": "cut item texts to this many characters (default 1000)"})
    max_malformed_fraction: float = field(default=0.01, metadata={"help":
            "fail when more than this fraction of lines is malformed; below it they are skipped and counted (default 0.01)"})
    workers: int = field(default=min(2, os.cpu_count() or 1), metadata={"help":
            "processes that parse the reviews (default: up to 2; 1 parses in the main process)"})
    quiet: bool = field(default=False, metadata={"help": "no progress bars"})


def main(argv=None):
    parser = make_parser(AmazonReviewsArguments, description=__doc__)
    (args,) = parse_args(parser, argv)
    return build(args)



if __name__ == "__main__":
    sys.exit(run_cli(main))
