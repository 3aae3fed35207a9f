"""Recommendations from a checkpoint: printed for a few users, or written to a file for all of them.

    python -m train.recommend --model runs/hstu --dataset data/ml-1m --users 1 2 3           # print, with titles
    python -m train.recommend --model runs/hstu --dataset data/ml-1m --all_users --output recs.parquet
    python -m train.recommend --model runs/geniusrec --histories new_users.jsonl --output recs.jsonl   # users not in the data
    accelerate launch --config_file train/accelerate/cpu_ddp.yaml -m train.recommend --model runs/hstu --dataset data/ml-1m \\
        --all_users --output recs.parquet                                                    # users split across processes

Each user is served from their **whole** history (every event excluded from the recommendations, the latest
included, the request at the latest event's time); `--history_view validation|test` recommends from the protocol's
views instead (the request at the target's time), for analysis. `--histories FILE`: JSON Lines, one
`{"user_id": ..., "items": [raw ids, oldest first], "timestamps": [...]}` per line (timestamps optional). Stage-1
checkpoints (HSTU, SASRec) give their top-k list; GeniusRec its generated session (`--session false`: its first
step's top-k; `--candidate_count N`: the two-stage decode). Everything goes through
`modeling_geniusrec.recommendation.recommend`, the function the `next-items` pipeline and `train.serve` call.

`--output` (.parquet, .jsonl or .csv) gets one row per user and rank: `user_id`, `rank`, `item_id` (the raw id),
`title`, `score`. Users are decoded in chunks of `--chunk_size`; each chunk is written atomically to
`.<output>.parts/` and a rerun of the same command skips the chunks already there (resume after a kill); the parts
are joined into `--output` at the end and removed. Under `accelerate launch`, process r takes chunks r, r + n, ...
and writes its own parts; the main process joins them. An existing `--output` is replaced only with `--overwrite`.
"""

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field

from data_scripts.arguments import make_parser, parse_args, run_cli
from modeling_geniusrec.recommendation import recommend

from .evaluation.results import atomic_path
from .runner import load_checkpoint, tune_cpu_allocator

FORMATS = (".parquet", ".jsonl", ".csv")
COLUMNS = ("user_id", "rank", "item_id", "title", "score")


def dataset_histories(dataset_dir: str, tokenizer, view: str, users: list[str] | None) -> list[dict]:
    """Histories of a processed dataset's users (as token ids), from their whole history (`full`) or a protocol view."""
    from data_scripts.processed import load_processed
    from data_scripts.splits import SequenceStore, split_users

    sequences, _, data_tokenizer, _ = load_processed(dataset_dir)
    if data_tokenizer.catalog_fingerprint() != tokenizer.catalog_fingerprint():
        raise ValueError(f"{dataset_dir!r} has another item catalog than the model's tokenizer: recommend with the dataset the model "
                         "was trained on")
    store = SequenceStore.from_dataset(sequences)
    index = {raw: row for row, raw in enumerate(store.user_ids)}
    unknown = [u for u in users or [] if u not in index]
    if unknown:
        raise ValueError(f"unknown user ids {unknown[:5]} (not in {dataset_dir}; ids are the raw ids of the source, e.g. {store.user_ids[:3]})")
    rows = [index[u] for u in users] if users else list(range(len(store.user_ids)))
    ends = {}
    if view != "full":
        view_users, bounds = split_users(store, view, "leave-one-out")
        ends = {int(u): int(b[0]) for u, b in zip(view_users, bounds)}
        missing = [store.user_ids[r] for r in rows if r not in ends]
        if users and missing:
            raise ValueError(f"users {missing[:5]} have no row in the {view} view (too short a history)")
        rows = [r for r in rows if r in ends]
    out = []
    for row in rows:
        items, times = store.row(row)
        end = ends.get(row, len(items))
        history = {"user_id": store.user_ids[row], "tokens": items[:end], "timestamps": times[:end]}  # token ids: no raw-id round trip
        if end < len(items):
            history["request_time"] = int(times[end])  # the protocol's request time: the target's
        out.append(history)
    return out


def read_histories(path: str) -> list[dict]:
    """`--histories` JSON Lines: one object per line with `items` (and optional `user_id`, `timestamps`)."""
    histories = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as error:
                raise ValueError(f"{path}: line {number} is not JSON ({error})") from None
            if not isinstance(row, dict) or "items" not in row:
                raise ValueError(f"{path}: line {number}: expected an object with 'items' (raw ids) and optional 'user_id', 'timestamps'")
            row.setdefault("user_id", str(number))
            histories.append(row)
    if not histories:
        raise ValueError(f"{path}: no histories")
    return histories


def rows_of(results: list[dict]):
    """The output table (Arrow): one row per user and rank, columns `COLUMNS`."""
    import pyarrow as pa

    table = {c: [] for c in COLUMNS}
    for result in results:
        for rank, item in enumerate(result["items"], start=1):
            table["user_id"].append(str(result.get("user_id")))
            table["rank"].append(rank)
            table["item_id"].append(item["item_id"])
            table["title"].append(item["title"])
            table["score"].append(item["score"])
    types = {"user_id": pa.string(), "rank": pa.int32(), "item_id": pa.string(), "title": pa.string(), "score": pa.float32()}
    return pa.table({c: pa.array(table[c], types[c]) for c in COLUMNS})


def write_table(table, path: str) -> None:
    """Writes an Arrow `table` to `path` (format from its extension) through a temp file renamed into place."""
    with atomic_path(path) as tmp:
        if path.endswith(".parquet"):
            import pyarrow.parquet as pq

            pq.write_table(table, tmp)
        elif path.endswith(".csv"):
            import pyarrow.csv as pcsv

            pcsv.write_csv(table, tmp)
        else:
            with open(tmp, "w", encoding="utf-8") as f:
                for row in table.to_pylist():
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")


def join_parts(parts: list[str], output: str) -> None:
    """Concatenates the part files (in order) into `output`, written atomically."""
    import pyarrow as pa

    if output.endswith(".jsonl"):  # lines: concatenated as text
        with atomic_path(output) as tmp, open(tmp, "w", encoding="utf-8") as out:
            for part in parts:
                with open(part, encoding="utf-8") as f:
                    shutil.copyfileobj(f, out)
        return
    if output.endswith(".parquet"):
        import pyarrow.parquet as pq

        table = pa.concat_tables([pq.read_table(p) for p in parts])
    else:
        import pyarrow.csv as pcsv

        schema = rows_of([]).schema  # read back with the written types (ids stay text)
        table = pa.concat_tables([pcsv.read_csv(p, convert_options=pcsv.ConvertOptions(column_types=schema)) for p in parts])
    write_table(table, output)


def manifest_of(args, count: int) -> dict:
    return {"model": os.path.abspath(args.model), "dataset": os.path.abspath(args.dataset) if args.dataset else None,
            "histories": os.path.abspath(args.histories) if args.histories else None, "users": count, "k": args.k,
            "history_view": args.history_view, "session": args.session, "num_beams": args.num_beams, "chunk_size": args.chunk_size,
            "candidate_count": args.candidate_count}


def parts_path(output: str) -> str:
    """`.<output>.parts/` beside the output: where the chunks are written before they are joined."""
    return os.path.join(os.path.dirname(os.path.abspath(output)), f".{os.path.basename(output)}.parts")


def parts_folder(output: str, manifest: dict, overwrite: bool) -> str:
    """[`parts_path`], holding this command's manifest: a folder left by the same command is resumed; one of another
    command is refused (or, with `--overwrite`, started afresh)."""
    folder = parts_path(output)
    marker = os.path.join(folder, "manifest.json")
    if os.path.isdir(folder):
        previous = json.load(open(marker)) if os.path.exists(marker) else None
        if previous != manifest:
            if not overwrite:
                raise ValueError(f"{folder} holds the parts of another recommend command (or none of ours): pass --overwrite to start "
                                 "afresh, or rerun the command that wrote it to resume")
            shutil.rmtree(folder)
    os.makedirs(folder, exist_ok=True)
    with open(marker, "w") as f:
        json.dump(manifest, f)
    return folder


def write_all(model, tokenizer, histories: list[dict], args, rank: int = 0, world: int = 1, barrier=None) -> dict:
    """Recommends every history in chunks, each chunk's rows to its own part file; joins them into `--output`."""
    from tqdm.auto import tqdm

    manifest = manifest_of(args, len(histories))
    if rank == 0:
        parts_folder(args.output, manifest, args.overwrite)
    if barrier:
        barrier()
    folder = parts_path(args.output)
    ext = os.path.splitext(args.output)[1]
    chunks = list(range(0, len(histories), args.chunk_size))
    parts = [os.path.join(folder, f"part-{i:05d}{ext}") for i in range(len(chunks))]
    mine = [i for i in range(len(chunks)) if i % world == rank]
    done = skipped = 0
    short = []  # (user, note) of the histories whose lists came back shorter than k: said once, after the run
    start = time.time()
    for i in tqdm(mine, desc=f"recommending (process {rank})" if world > 1 else "recommending", unit=" chunks", disable=args.quiet):
        if os.path.exists(parts[i]):
            skipped += 1
            continue
        results = recommend(model, tokenizer, histories[chunks[i] : chunks[i] + args.chunk_size], **decoding(args), warn=False)
        short += [(r.get("user_id"), r["notes"][-1]) for r in results if len(r["items"]) < args.k and r["notes"]]
        write_table(rows_of(results), parts[i])
        done += 1
    if barrier:
        barrier()
    if rank == 0:
        join_parts(parts, args.output)
        shutil.rmtree(folder, ignore_errors=True)
    return {"users": len(histories), "chunks_written": done, "chunks_resumed": skipped, "seconds": round(time.time() - start, 2),
            "short_lists": len(short), "short_example": short[0] if short else None}


def decoding(args) -> dict:
    return {"k": args.k, "session": args.session, "unknown": args.unknown, "num_beams": args.num_beams,
            "candidate_count": args.candidate_count, "truncate": True}


def print_recommendations(model, tokenizer, histories: list[dict], args) -> list[dict]:
    results = recommend(model, tokenizer, histories, **decoding(args))
    for history, result in zip(histories, results):
        recent = "; ".join(tokenizer.titles_of([int(t) for t in history["tokens"][-3:]]) if "tokens" in history else
                           [(tokenizer.item_titles or {}).get(i, i) for i in history["items"][-3:]])
        print(f"\nuser {history.get('user_id')}  (last: {recent})")
        for rank, item in enumerate(result["items"], start=1):
            print(f"  {rank:2d}. {item['title']}   [{item['item_id']}]  {item['score']:.3f}")
        for note in result["notes"]:
            print(f"  note: {note}")
    return results


def print_recommendations_for(model, tokenizer, dataset_dir: str, num_users: int, k: int = 10) -> list[dict]:
    """Prints the recommendations of the first `num_users` users of a dataset, from their whole history."""
    import argparse

    histories = dataset_histories(dataset_dir, tokenizer, "full", None)[:num_users]
    options = argparse.Namespace(k=k, session=None, unknown="error", num_beams=10, candidate_count=None)
    return print_recommendations(model.eval(), tokenizer, histories, options)


@dataclass
class RecommendArguments:
    model: str = field(metadata={"help": "checkpoint folder (train.pretrain / train.finetune / train.dpo output)"})
    dataset: str | None = field(default=None, metadata={"help": "processed dataset folder whose users to recommend for"})
    users: list[str] | None = field(default=None, metadata={"help": "raw user ids of --dataset (default: the first --num_users)", "nargs": "*"})
    all_users: bool = field(default=False, metadata={"help": "every user of --dataset (needs --output)"})
    histories: str | None = field(default=None, metadata={"help": "JSON Lines of histories of users not in a dataset: "
                                                                  '{"user_id": ..., "items": [raw ids], "timestamps": [...]}'})
    output: str | None = field(default=None, metadata={"help": "write the recommendations to this .parquet / .jsonl / .csv file "
                                                              "(default: print them)"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing --output file (and parts of another command)"})
    num_users: int = field(default=3, metadata={"help": "how many users are printed when neither --users nor --all_users is given"})
    k: int = field(default=10, metadata={"help": "items per user (a GeniusRec session's length)"})
    history_view: str = field(default="full", metadata={"help": "recommend from the whole history (full), or from the protocol's "
                                                                "validation / test view (analysis)",
                                                        "choices": ["full", "validation", "test"]})
    session: bool | None = field(default=None, metadata={"help": "GeniusRec: generate a session (default) or rank with the first "
                                                                 "step (false); stage-1 models rank"})
    num_beams: int = field(default=10, metadata={"help": "GeniusRec's beam width"})
    candidate_count: int | None = field(default=None, metadata={"help": "GeniusRec: the two-stage decode, every step scoring each "
                                                                        "user's N items retrieved by its first step (default: the "
                                                                        "whole catalog)"})
    unknown: str = field(default="error", metadata={"help": "--histories items not in the catalog: error or drop",
                                                    "choices": ["error", "drop"]})
    chunk_size: int = field(default=512, metadata={"help": "users per model call and per part file"})
    quiet: bool = field(default=False, metadata={"help": "no progress bar"})


def main(argv=None):
    parser = make_parser(RecommendArguments, description=__doc__)
    (args,) = parse_args(parser, argv)
    if args.k < 1:
        parser.error(f"--k must be >= 1, got {args.k}")
    if args.chunk_size < 1:
        parser.error(f"--chunk_size must be >= 1, got {args.chunk_size}")
    if args.candidate_count is not None and args.candidate_count < 1:
        parser.error(f"--candidate_count must be >= 1 (items retrieved per user), got {args.candidate_count}")
    if bool(args.dataset) == bool(args.histories):
        parser.error("pass --dataset DIR (its users) or --histories FILE (users not in a dataset)")
    if args.all_users and not args.output:
        parser.error("--all_users writes a file: add --output recs.parquet (or .jsonl / .csv)")
    if args.output and os.path.splitext(args.output)[1] not in FORMATS:
        parser.error(f"--output must end in {', '.join(FORMATS)}, got {args.output!r}")
    if args.output and os.path.isdir(args.output):
        parser.error(f"--output {args.output!r} is a folder: name a file")
    if args.output and os.path.exists(args.output) and not args.overwrite:
        parser.error(f"--output {args.output!r} exists: pass --overwrite to replace it")
    tune_cpu_allocator()  # inference: reuse large freed blocks (see its docstring)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model) if os.path.exists(os.path.join(args.model, "tokenizer.json")) else None
    if tokenizer is None:
        if not args.dataset:
            raise ValueError(f"{args.model!r} holds no tokenizer (train it with this version, or pass --dataset)")
        from data_scripts.processed import load_processed

        tokenizer = load_processed(args.dataset)[2]
    model = load_checkpoint(args.model, tokenizer=tokenizer).eval()
    is_seq2seq = getattr(model.config, "is_encoder_decoder", False)
    if args.session and not is_seq2seq:
        parser.error("--session true needs a GeniusRec checkpoint (a stage-1 model ranks: drop --session)")
    if args.candidate_count and not is_seq2seq:
        parser.error("--candidate_count is a GeniusRec decode (a stage-1 checkpoint ranks the whole catalog in chunks already)")
    if args.histories:
        histories = read_histories(args.histories)
    else:
        wanted = args.users if args.users or args.all_users or args.output else None
        histories = dataset_histories(args.dataset, tokenizer, args.history_view, wanted)
        if not (args.users or args.all_users or args.output):
            histories = histories[: args.num_users]
    if not args.output:
        return print_recommendations(model, tokenizer, histories, args)
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())  # on CPU, `accelerate launch` processes join through gloo
    summary = write_all(model, tokenizer, histories, args, state.process_index, state.num_processes,
                        barrier=state.wait_for_everyone if state.num_processes > 1 else None)
    if state.is_main_process:
        print(f"wrote {args.output}: {summary['users']:,} users x up to {args.k} items in {summary['seconds']:.1f} s"
              + (f" by {state.num_processes} processes" if state.num_processes > 1 else "")
              + (f" ({summary['chunks_resumed']} chunks resumed)" if summary["chunks_resumed"] else ""))
    if summary["short_lists"]:  # per process: each says what its own chunks held
        user, note = summary["short_example"]
        print(f"note: {summary['short_lists']:,} users have fewer than k={args.k} unseen items left: their lists are shorter "
              f"(fewer rows in the file), e.g. user {user}: {note}", file=sys.stderr)
    return summary


if __name__ == "__main__":
    sys.exit(run_cli(main))
