"""The item cold-start table: every model and baseline on the cold-items protocol's test users, in one file.

    python -m benchmarks.cold_items --dataset data/ml-1m --hstu runs/cold-hstu --hstu_text runs/cold-hstu-text \
        --geniusrec runs/cold-geniusrec --geniusrec_text runs/cold-geniusrec-text \
        --content_embeddings text-minilm.safetensors --output benchmarks/results/ml-1m-cold-items.json

The protocol (`data_scripts.splits`, `--protocol cold-items`): a fixed, seeded 10% of the items never appear in any
training or validation input or label; the test users are those whose test target is such an item, ranked against
the whole catalog with their whole (warm) history filtered. Every checkpoint must have been trained under that
protocol (`train.pretrain` / `train.finetune --protocol cold-items`); its cold items are scored as new items
(`model.reset_item_ids`). Baselines: popularity (cold items have no training users: it can only guess) and the
content-only kNN ranker over the same text table the content models read. Writes `metrics.test.<model>` with
hr@10, ndcg@10, hr@50, ndcg@50, mrr per model.
"""

import argparse

from data_scripts.embedders import prepare_content_table
from data_scripts.processed import NextItemDataset, load_item_embeddings, load_processed
from data_scripts.splits import COLD_ITEM_SEED, COLD_ITEM_SHARE, SequenceStore, protocol_store
from train.evaluation.baselines import content_knn_metrics, popularity_metrics
from train.evaluation.ranking import evaluate_next_item
from train.evaluation.results import format_table, provenance, write_json_atomic
from train.runner import load_checkpoint

KEYS = ("hr@10", "ndcg@10", "hr@50", "ndcg@50", "mrr")
MODELS = ("hstu", "hstu_text", "geniusrec", "geniusrec_text")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="data/ml-1m", help="processed dataset folder")
    for name in MODELS:
        p.add_argument(f"--{name}", default=None, help=f"{name} checkpoint trained with --protocol cold-items (optional)")
    p.add_argument("--content_embeddings", default="text-minilm.safetensors", help="text table of the content kNN baseline")
    p.add_argument("--content_preprocessing", default="whiten", choices=["raw", "center", "whiten", "shrink"],
                   help="preprocessing of the kNN baseline's table")
    p.add_argument("--max_length", type=int, default=200, help="history length of the kNN baseline and the views")
    p.add_argument("--output", default=None, help="results JSON")
    args = p.parse_args(argv)
    sequences, _, tokenizer, _ = load_processed(args.dataset)
    store = protocol_store(SequenceStore.from_dataset(sequences), "cold-items", len(tokenizer), tokenizer.num_special_tokens)
    test = NextItemDataset(store, "test", args.max_length, "cold-items")
    rows = {"popularity": popularity_metrics(store, test, len(tokenizer))}
    table = prepare_content_table(load_item_embeddings(args.dataset, args.content_embeddings)[0], args.content_preprocessing)
    rows["content_knn"] = content_knn_metrics(table, test)
    checkpoints = {}
    for name in MODELS:
        path = getattr(args, name)
        if not path:
            continue
        model = load_checkpoint(path, tokenizer=tokenizer)
        model.reset_item_ids(store.cold_items)  # never seen in training: scored as new items
        view = NextItemDataset(store, "test", min(args.max_length, getattr(model.config, "encoder_config", model.config).max_position_embeddings),
                               "cold-items")
        rows[name] = evaluate_next_item(model, view, progress=False)
        checkpoints[name] = path
    rows = {name: {k: round(v, 5) for k, v in metrics.items() if k in KEYS} for name, metrics in rows.items()}
    print(f"cold-items test: {len(test)} users whose target is one of the {len(store.cold_items)} cold items")
    print(format_table(rows, KEYS, name_width=16))
    out = {"metrics": {"test": rows}, "protocol": "cold-items", "test_users": len(test), "cold_items": len(store.cold_items),
           "cold_item_share": COLD_ITEM_SHARE, "cold_item_seed": COLD_ITEM_SEED, "checkpoints": checkpoints,
           "content_knn": {"embeddings": args.content_embeddings, "preprocessing": args.content_preprocessing},
           **provenance("python -m benchmarks.cold_items", argv)}
    if args.output:
        write_json_atomic(args.output, out)
    return out


if __name__ == "__main__":
    main()
