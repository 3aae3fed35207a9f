"""Which item-content setting helps stage 1: embedders x preprocessing x adapter, chosen on validation.

    python -m benchmarks.content_ablation --dataset data/ml-1m --embedders minilm smollm2 --epochs 10 --max_length 50

For each embedder (a file `<dataset>/embeddings/text-<embedder>.safetensors`, made by `python -m data_scripts.embed
--dataset data/ml-1m --text_model <embedder> --output_name text-<embedder>.safetensors`), this script
- scores the content-only kNN ranker on the validation view for every preprocessing (raw, center, whiten, shrink);
- trains the HSTU config (`train/configs/ml-1m-hstu.json`) at a small setting (`--max_length`, `--epochs`, the same
  seed) with the text table in the item vectors, once per variant, and an ID-only run beside them.
Settings are compared on validation only (`--evaluate_test false`: the test split is never read). One results file
per embedder: `<output_prefix>-<embedder>.json` with every variant's best validation metrics and curve.
"""

import argparse
import os

from data_scripts.embedders import CONTENT_PREPROCESSING, prepare_content_table
from data_scripts.processed import NextItemDataset, load_item_embeddings, load_processed
from data_scripts.splits import SequenceStore
from train import pretrain
from train.evaluation.baselines import content_knn_metrics
from train.evaluation.results import provenance, write_json_atomic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = {  # name: extra train.pretrain flags (the text file is added for every variant but id_only)
    "id_only": [],
    "raw": ["--content_preprocessing", "raw"],
    "center": ["--content_preprocessing", "center"],
    "whiten": ["--content_preprocessing", "whiten"],
    "shrink": ["--content_preprocessing", "shrink", "--content_shrink", "1.0"],
    "whiten_mlp": ["--content_preprocessing", "whiten", "--content_adapter", "mlp"],
    "whiten_id_dropout": ["--content_preprocessing", "whiten", "--item_id_dropout", "0.1"],
    "pca_init": ["--item_id_init", "{file}", "--no_content"],  # ID only, the ID table initialised from the text's principal components
    "whiten_mlp_pca_init": ["--content_preprocessing", "whiten", "--content_adapter", "mlp", "--item_id_init", "{file}"],
}
KEYS = ("hr@10", "ndcg@10", "hr@50", "ndcg@50")


def run_variant(args, name: str, embedder: str | None) -> dict:
    file = f"text-{embedder}.safetensors"
    extra = [flag.format(file=file) for flag in VARIANTS[name] if flag != "--no_content"]
    flags = [] if name == "id_only" or "--no_content" in VARIANTS[name] else ["--text_embeddings", file]
    out_dir = os.path.join(args.output_dir, name if name == "id_only" else f"{embedder}-{name}")
    results = pretrain.main(["--config", args.config, "--dataset", args.dataset, "--output_dir", out_dir, "--max_length", str(args.max_length),
                             "--num_train_epochs", str(args.epochs), "--evaluate_test", "false", "--early_stopping_patience", "1000",
                             "--seed", str(args.seed), "--disable_tqdm", "true", "--report_to", "none", *flags, *extra])
    history = results["eval_history"]
    best = max(history, key=lambda h: h["eval_ndcg@10"])
    return {"best_epoch": best["epoch"], "validation": {k: round(best[f"eval_{k}"], 5) for k in KEYS},
            "seconds_per_epoch": results["seconds_per_epoch"], "flags": flags + extra, "commit": results["commit"],
            "curve": [round(h["eval_ndcg@10"], 5) for h in history]}


def earlier_rows(path: str | None, args) -> dict:
    """The variants an earlier call wrote to `path` with the same setting (else none)."""
    import json

    if not path or not os.path.exists(path):
        return {}
    with open(path) as f:
        earlier = json.load(f)
    same = earlier.get("setting", {}) == {"max_length": args.max_length, "epochs": args.epochs, "seed": args.seed,
                                           "config": os.path.relpath(args.config, ROOT)}
    if not same:
        raise SystemExit(f"{path} holds a different setting ({earlier.get('setting')}): use another --output_prefix")
    commands = earlier.get("commands", [earlier.get("command")])
    args.earlier_commands = [c for c in commands if c]
    return dict(earlier.get("hstu_validation", {}))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="data/ml-1m", help="processed ML-1M folder with embeddings/text-<embedder>.safetensors")
    p.add_argument("--config", default=os.path.join(ROOT, "train", "configs", "ml-1m-hstu.json"), help="stage-1 config")
    p.add_argument("--embedders", nargs="+", default=["minilm", "smollm2"], help="text-<name>.safetensors files to compare")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), help="training variants per embedder")
    p.add_argument("--epochs", type=int, default=10, help="epochs per training run (the same for every variant)")
    p.add_argument("--max_length", type=int, default=50, help="history length of the small setting")
    p.add_argument("--seed", type=int, default=42, help="seed of every run")
    p.add_argument("--output_dir", default="runs/content-ablation", help="runs go to <output_dir>/<embedder>-<variant>")
    p.add_argument("--output_prefix", default=None, help="results files <prefix>-<embedder>.json (default: print only)")
    args = p.parse_args(argv)
    sequences, _, tokenizer, _ = load_processed(args.dataset)
    validation = NextItemDataset(SequenceStore.from_dataset(sequences), "validation", args.max_length)
    id_only = run_variant(args, "id_only", None) if "id_only" in args.variants else None
    for embedder in args.embedders:
        raw_table, meta = load_item_embeddings(args.dataset, f"text-{embedder}.safetensors")
        knn = {mode: {k: round(v, 5) for k, v in content_knn_metrics(prepare_content_table(raw_table, mode), validation).items() if k in KEYS}
               for mode in CONTENT_PREPROCESSING}
        print(embedder, "content kNN (validation):", knn, flush=True)
        path = f"{args.output_prefix}-{embedder}.json" if args.output_prefix else None
        rows = earlier_rows(path, args)  # a later call adds variants to the same table (same setting only)
        if id_only:
            rows["id_only"] = id_only
        for name in args.variants:
            if name != "id_only":
                rows[name] = run_variant(args, name, embedder)
                print(embedder, name, rows[name]["validation"], flush=True)
        trained = {n: r for n, r in rows.items() if n != "id_only"}
        winner = max(trained, key=lambda n: trained[n]["validation"]["ndcg@10"]) if trained else None
        out = {"embedder": embedder, "embedding_file": f"text-{embedder}.safetensors", "embedding_model": meta.get("model"),
               "dimension": raw_table.shape[1], "content_knn_validation": knn, "hstu_validation": rows, "winner_on_validation": winner,
               "setting": {"max_length": args.max_length, "epochs": args.epochs, "seed": args.seed, "config": os.path.relpath(args.config, ROOT)},
               **provenance("python -m benchmarks.content_ablation", argv)}
        out["commands"] = getattr(args, "earlier_commands", []) + [out["command"]]  # every call that added rows
        if path:
            write_json_atomic(path, out)
        print(embedder, "winner on validation:", winner, flush=True)


if __name__ == "__main__":
    main()
