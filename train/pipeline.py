"""The whole chain in one command: prepare MovieLens (or take your processed folder), embed item texts, pretrain HSTU,
fine-tune GeniusRec, evaluate, and print what each stage is for: the next-item table (ranking with the encoder, the
decoder's first step), list vs generated session on the test users (sessions protocol), and for a few users the
encoder's top-10 list beside GeniusRec's session and its alternatives, with titles.

    python -m train.pipeline                      # MovieLens-1M offline, under 3 minutes on 2 CPU cores (short recipes)
    python -m train.pipeline --dataset data/mine --work_dir runs/mine   # any processed folder (data_scripts.interactions)
    python -m train.pipeline --fast --raw_dir tests_fixture/ --text_model none   # seconds: a smoke run

Each step is skipped when its output exists (delete the folder under --work_dir to redo it).
"""

import json
import os
import sys
from dataclasses import dataclass, field

import torch

from data_scripts import embed, movielens
from data_scripts.arguments import make_parser, parse_args, run_cli
from data_scripts.check import check_folder
from data_scripts.processed import load_processed
from modeling_geniusrec import GeniusRecForSessionGeneration

from . import finetune, pretrain
from .evaluation.results import format_table


def run(args) -> dict:
    data = args.dataset or os.path.join(args.work_dir, "data")
    stage1, stage2 = os.path.join(args.work_dir, "hstu"), os.path.join(args.work_dir, "geniusrec")
    protocol = args.protocol or ("leave-one-out" if args.dataset else "sessions")
    step("1/4 data", None if args.dataset else os.path.join(data, "stats.json"))
    if args.dataset:
        check_folder(args.dataset)  # a folder built by hand: name its first violation before any training
    elif not os.path.exists(os.path.join(data, "stats.json")):
        movielens.main(["--variant", args.variant, "--out", data] + (["--raw_dir", args.raw_dir] if args.raw_dir else []))
    use_text = args.text_model != "none"
    if use_text and not os.path.exists(os.path.join(data, "embeddings", "text.safetensors")):
        embed.main(["--dataset", data, "--text_model", args.text_model, "--normalize", "--quiet"])
    size = ["--hidden_size", "16", "--qk_head_dim", "8", "--v_head_dim", "8", "--max_length", "20"] if args.fast else ["--max_length", "100"]
    common = ["--disable_tqdm", str(args.fast).lower(), "--seed", str(args.seed), "--protocol", protocol,
              *(["--max_eval_users", str(args.max_eval_users)] if args.max_eval_users else [])]
    step(f"2/4 stage 1: the HSTU encoder, {args.pretrain_epochs} epochs ({protocol} split)", os.path.join(stage1, "results.json"))
    if not os.path.exists(os.path.join(stage1, "results.json")):
        # the per-position recipe of BENCHMARKS.md "Stage 1" (128 sampled negatives at every position, batch 16), shortened
        pretrain.main(["--dataset", data, "--output_dir", stage1, "--num_train_epochs", str(args.pretrain_epochs),
                       "--negatives_sharing", "position", "--num_negatives", "32" if args.fast else "128",
                       "--per_device_train_batch_size", "32" if args.fast else "16", *size, *common], summary=False)
    step(f"3/4 stage 2: the GeniusRec decoder, {args.finetune_epochs} epoch(s), encoder frozen", os.path.join(stage2, "results.json"))
    if not os.path.exists(os.path.join(stage2, "results.json")):
        # the benchmark's stage-2 recipe (train/configs/ml-1m-geniusrec.json): frozen encoder, next item weighted;
        # text enters through the expert only (content-aware output vectors cost accuracy on ML-1M: BENCHMARKS.md);
        # under the sessions protocol, the session recipe of BENCHMARKS.md "Sessions" (multi-label loss x3; the
        # decoder's first step and the encoder's query mixed into every step of the beam search)
        sessions = ["--session_set_loss_weight", "3", "--stage1_baseline", stage1, "--first_step_weight", "1",
                    "--encoder_query_weight", "2"] if protocol == "sessions" else []
        finetune.main(["--dataset", data, "--encoder_path", stage1, "--output_dir", stage2, "--num_train_epochs", str(args.finetune_epochs),
                       "--max_length", "20" if args.fast else "100", "--use_text_embeddings", str(use_text).lower(),
                       "--freeze_encoder", "true", "--next_item_loss_weight", "5", "--learning_rate", "5e-4", "--content_output", "false",
                       "--per_device_train_batch_size", "32" if args.fast else "128", *sessions, *common], summary=False)
    step("4/4 what each stage is for", None)
    runs = {name: json.load(open(os.path.join(folder, "results.json"))) for name, folder in (("encoder", stage1), ("geniusrec", stage2))}
    results = {name: run["metrics"]["test"] for name, run in runs.items()}
    evaluated = runs["geniusrec"].get("evaluated_users", {}).get("test")
    print_tables(results, protocol, f"{evaluated:,} sampled test users" if evaluated == args.max_eval_users else "test users")
    print_examples(stage1, stage2, data, args.num_users, args.items_per_session, args.alternatives)
    return results


def step(title: str, output: str | None) -> None:
    """A stage header; a stage whose `output` (the file it writes last) exists is skipped, and the header says so."""
    done = output is not None and os.path.exists(output)
    print(f"\n== {title}" + (f": {os.path.dirname(output)} exists, skipped" if done else ""), flush=True)


def print_tables(results: dict, protocol: str, users: str = "test users", k: int = 10) -> None:
    """The next-item table (what each model is for, labelled) and, under the sessions protocol, list vs session."""
    target = "the first of the 10 held-out items" if protocol == "sessions" else "the held-out last item"
    print(f"\nNext item ({target}), {users}, full ranking over all items, the whole history filtered:")
    print(format_table({"ranking with the encoder (HSTU)": results["encoder"], "GeniusRec decoder's first step": results["geniusrec"]},
                       ["hr@10", "ndcg@10", "hr@50", "mrr"], name_width=32))
    if protocol != "sessions":
        print("(session metrics: the sessions protocol, the default on MovieLens; --protocol sessions)")
        return
    g = results["geniusrec"]
    rows = {f"encoder's top-{k} list": {m: g.get(f"hstu_{m}") for m in SESSION_KEYS},
            "GeniusRec generated session": {m: g.get(m) for m in SESSION_KEYS},
            f"popularity top-{k}": {m: g.get(f"popularity_{m}") for m in SESSION_KEYS}}
    print(f"\nNext {k} items of each of the {users} (the sessions protocol), list vs generated session:")
    print(format_table(rows, list(SESSION_KEYS), name_width=32))


SESSION_KEYS = ("session_recall@10", "session_ndcg@10", "ild", "coverage")


@torch.no_grad()
def print_examples(stage1: str, stage2: str, data: str, num_users: int, k: int, alternatives: int) -> None:
    """For the first `num_users` users, from their whole history (what `train.recommend` and the `next-items`
    pipeline return): the encoder's top-k list beside GeniusRec's generated session and its alternatives (sessions
    sharing no item), with titles, one column each."""
    from transformers import AutoModelForCausalLM

    from modeling_geniusrec.recommendation import recommend

    from .recommend import dataset_histories

    encoder = AutoModelForCausalLM.from_pretrained(stage1).eval()
    model = GeniusRecForSessionGeneration.from_pretrained(stage2).eval()
    tokenizer = load_processed(data)[2]
    histories = dataset_histories(data, tokenizer, "full", None)[:num_users]
    lists = recommend(encoder, tokenizer, histories, k=k, warn=False)
    sessions = recommend(model, tokenizer, histories, k=k, num_beams=max(5, alternatives + 1), num_return_sequences=alternatives + 1, warn=False)
    for history, ranked, generated in zip(histories, lists, sessions):
        recent = "; ".join(tokenizer.titles_of([int(t) for t in history["tokens"][-3:]]))
        columns = {f"encoder top-{k}": ranked["items"], "GeniusRec session": generated["items"]}
        columns.update({f"alternative {i}": alt for i, alt in enumerate(generated.get("alternatives", []), start=1)})
        print(f"\nuser {history['user_id']}, {len(history['tokens'])} items seen, recently: {recent}")
        print(("    " + "".join(f"{name:<{TITLE_WIDTH + 2}}" for name in columns)).rstrip())
        for row in range(k):
            cells = [items[row]["title"] if row < len(items) else "" for items in columns.values()]
            print((f"{row + 1:>2}  " + "".join(f"{short(cell):<{TITLE_WIDTH + 2}}" for cell in cells)).rstrip())


TITLE_WIDTH = 20


def short(title: str, width: int = TITLE_WIDTH) -> str:
    """A title cut to `width` characters (an ellipsis marks the cut)."""
    return title if len(title) <= width else title[: width - 1] + "…"


@dataclass
class PipelineArguments:
    work_dir: str = field(default="runs/pipeline", metadata={"help": "where data and checkpoints go"})
    dataset: str | None = field(default=None, metadata={"help": "a processed dataset folder (python -m data_scripts.interactions) "
                                                                "instead of MovieLens; its item embeddings go to <dataset>/embeddings/"})
    variant: str = field(default="ml-1m", metadata={"help": "MovieLens variant (default ml-1m, offline), when no --dataset"})
    raw_dir: str | None = field(default=None, metadata={"help": "official MovieLens files instead of the offline copy"})
    text_model: str = field(default="minilm", metadata={"help": "text embedder: minilm / smollm2 (offline), a model id or path, or none"})
    pretrain_epochs: int = field(default=2, metadata={"help": "HSTU epochs (the benchmark recipe runs about 50: BENCHMARKS.md)"})
    finetune_epochs: int = field(default=1, metadata={"help": "GeniusRec epochs (the benchmark's session recipe runs 10)"})
    max_eval_users: int | None = field(default=1000, metadata={"help": "validate and test on a seeded sample of this many users (the tables "
                                                                       "say so); 0 for every user"})
    protocol: str | None = field(default=None, metadata={"help": "split: sessions (each test user's next 10 items held out: next-item "
                                                                  "and list-vs-session tables; the default on MovieLens) or leave-one-out "
                                                                  "(the default with --dataset, whose users may be too short for sessions)",
                                                          "choices": ["sessions", "leave-one-out"]})
    items_per_session: int = field(default=10, metadata={"help": "items per printed list and session (formerly --session_length)"})
    alternatives: int = field(default=3, metadata={"help": "alternative sessions printed beside each user's session (sharing no item)"})
    num_users: int = field(default=2, metadata={"help": "users whose lists and sessions are printed"})
    seed: int = field(default=42, metadata={"help": "random seed"})
    fast: bool = field(default=False, metadata={"help": "tiny model sizes for a smoke run (tests)"})


def main(argv=None):
    parser = make_parser(PipelineArguments, description=__doc__)
    (args,) = parse_args(parser, argv, renamed={"session_length": "items_per_session"})
    return run(args)


if __name__ == "__main__":
    sys.exit(run_cli(main))
