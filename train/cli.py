"""`geniusrec` console command: one subcommand per job, each the same as its `python -m` module.

    geniusrec interactions --events events.csv --items items.csv --out data/mine
    geniusrec check data/mine
    geniusrec prepare-movielens --variant ml-1m --out data/ml-1m
    geniusrec prepare-amazon --reviews Books.jsonl.gz --meta meta_Books.jsonl.gz --out data/books
    geniusrec embed --dataset data/ml-1m --text_model smollm2
    geniusrec pretrain --config train/configs/ml-1m-hstu.json --dataset data/ml-1m --output_dir runs/hstu
    geniusrec finetune --dataset data/ml-1m --encoder_path runs/hstu --output_dir runs/geniusrec
    geniusrec evaluate --model runs/hstu --dataset data/ml-1m
    geniusrec recommend --model runs/hstu --dataset data/ml-1m --users 1 2 3

`geniusrec <subcommand> --help` explains every flag of that job.
"""

import importlib
import sys

from data_scripts.arguments import run_cli

SUBCOMMANDS = {
    "interactions": ("data_scripts.interactions", "your own events (CSV / Parquet / JSON Lines / datasets) to a processed dataset folder"),
    "check": ("data_scripts.check", "validate a processed dataset folder against the data contract"),
    "make-synthetic-events": ("data_scripts.make_synthetic_events", "write a synthetic events log (benchmarks, tests)"),
    "prepare-movielens": ("data_scripts.movielens", "MovieLens to a processed dataset folder"),
    "prepare-amazon": ("data_scripts.amazon_reviews", "Amazon Reviews 2023 to a processed dataset folder"),
    "make-synthetic-amazon": ("data_scripts.make_synthetic_amazon", "write synthetic Amazon-format files for scale tests"),
    "embed": ("data_scripts.embed", "item text (TinyLlama, SmolLM2, MiniLM) and image (CLIP) embeddings"),
    "pretrain": ("train.pretrain", "stage 1: train HSTU / SASRec next-item models"),
    "finetune": ("train.finetune", "stage 2: fine-tune GeniusRec to generate sessions"),
    "pairs": ("train.build_preference_pairs", "DPO preference pairs from a stage-2 checkpoint (train view only)"),
    "dpo": ("train.dpo", "stage 3: TRL DPOTrainer (+ PEFT LoRA) toward novelty and diversity"),
    "pipeline": ("train.pipeline", "the whole chain (MovieLens-1M or --dataset DIR) in one command"),
    "evaluate": ("train.evaluate", "full-ranking metrics of a checkpoint or a baseline"),
    "recommend": ("train.recommend", "recommendations from whole histories: printed, or to a file for all users"),
    "serve": ("train.serve", "an HTTP endpoint over a checkpoint (FastAPI + uvicorn)"),
    "export": ("train.export", "torch.export of a stage-1 encoder (dynamic batch and length), checked against eager"),
}


def usage() -> str:
    lines = [__doc__.strip(), "", "subcommands:"]
    lines += [f"  {name:<22} {help_text}  (python -m {module})" for name, (module, help_text) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"geniusrec: unknown subcommand {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    sys.argv = [f"geniusrec {name}", *rest]
    return run_cli(module.main, rest)


if __name__ == "__main__":
    sys.exit(main())
