"""The whole chain in one command: prepare MovieLens (or take your processed folder), embed item texts, pretrain HSTU,
fine-tune GeniusRec, evaluate, and print recommendation sessions with item titles and a metrics table.

    python -m train.pipeline                      # MovieLens-1M offline, about 5 minutes on 2 CPU cores
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
    if args.dataset:
        check_folder(args.dataset)  # a folder built by hand: name its first violation before any training
    elif not os.path.exists(os.path.join(data, "stats.json")):
        movielens.main(["--variant", args.variant, "--out", data] + (["--raw_dir", args.raw_dir] if args.raw_dir else []))
    use_text = args.text_model != "none"
    if use_text and not os.path.exists(os.path.join(data, "embeddings", "text.safetensors")):
        embed.main(["--dataset", data, "--text_model", args.text_model, "--normalize", "--quiet"])
    size = ["--hidden_size", "16", "--qk_head_dim", "8", "--v_head_dim", "8", "--max_length", "20"] if args.fast else ["--max_length", "100"]
    common = ["--disable_tqdm", str(args.fast).lower(), "--per_device_train_batch_size", "32" if args.fast else "128", "--seed", str(args.seed)]
    if not os.path.exists(os.path.join(stage1, "results.json")):
        pretrain.main(["--dataset", data, "--output_dir", stage1, "--num_train_epochs", str(args.pretrain_epochs),
                       "--negatives_sharing", "batch", "--num_negatives", "32" if args.fast else "512", *size, *common])
    if not os.path.exists(os.path.join(stage2, "results.json")):
        # the benchmark's stage-2 recipe (train/configs/ml-1m-geniusrec.json): frozen encoder, next item weighted;
        # text enters through the expert only (content-aware output vectors cost accuracy on ML-1M: BENCHMARKS.md)
        finetune.main(["--dataset", data, "--encoder_path", stage1, "--output_dir", stage2, "--num_train_epochs", str(args.finetune_epochs),
                       "--max_length", "20" if args.fast else "100", "--use_text_embeddings", str(use_text).lower(),
                       "--freeze_encoder", "true", "--next_item_loss_weight", "5", "--learning_rate", "5e-4", "--content_output", "false", *common])
    folders = (("HSTU (stage 1)", stage1), ("GeniusRec (decoder)", stage2))
    results = {name: json.load(open(os.path.join(folder, "results.json")))["metrics"]["test"] for name, folder in folders}
    print("\ntest users, leave-one-out, full ranking over all items, the whole history filtered")
    print(format_table(results, ["hr@10", "ndcg@10", "hr@50", "ndcg@50", "mrr"], name_width=22))
    print_sessions(stage2, data, args.num_users, args.items_per_session)
    return results


@torch.no_grad()
def print_sessions(checkpoint: str, data: str, num_users: int, length: int) -> None:
    """The generated next session of the first `num_users` users, from their whole history (what `train.recommend`
    and the `next-items` pipeline return), with titles."""
    from modeling_geniusrec.recommendation import recommend

    from .recommend import dataset_histories

    model = GeniusRecForSessionGeneration.from_pretrained(checkpoint).eval()
    tokenizer = load_processed(data)[2]
    histories = dataset_histories(data, tokenizer, "full", None)[:num_users]
    for history, result in zip(histories, recommend(model, tokenizer, histories, k=length, num_beams=5)):
        recent = "; ".join(tokenizer.titles_of([int(t) for t in history["tokens"][-3:]]))
        print(f"\nuser {history['user_id']} (recently: {recent})\n  next session: " + " -> ".join(i["title"] for i in result["items"]))


@dataclass
class PipelineArguments:
    work_dir: str = field(default="runs/pipeline", metadata={"help": "where data and checkpoints go"})
    dataset: str | None = field(default=None, metadata={"help": "a processed dataset folder (python -m data_scripts.interactions) "
                                                                "instead of MovieLens; its item embeddings go to <dataset>/embeddings/"})
    variant: str = field(default="ml-1m", metadata={"help": "MovieLens variant (default ml-1m, offline), when no --dataset"})
    raw_dir: str | None = field(default=None, metadata={"help": "official MovieLens files instead of the offline copy"})
    text_model: str = field(default="minilm", metadata={"help": "text embedder: minilm / smollm2 (offline), a model id or path, or none"})
    pretrain_epochs: int = field(default=10, metadata={"help": "HSTU epochs (default 10)"})
    finetune_epochs: int = field(default=3, metadata={"help": "GeniusRec epochs (default 3)"})
    items_per_session: int = field(default=10, metadata={"help": "items per generated (printed) session (formerly --session_length)"})
    num_users: int = field(default=3, metadata={"help": "users whose sessions are printed"})
    seed: int = field(default=42, metadata={"help": "random seed"})
    fast: bool = field(default=False, metadata={"help": "tiny model sizes for a smoke run (tests)"})


def main(argv=None):
    parser = make_parser(PipelineArguments, description=__doc__)
    (args,) = parse_args(parser, argv, renamed={"session_length": "items_per_session"})
    return run(args)


if __name__ == "__main__":
    sys.exit(run_cli(main))
