"""Evaluate a next-item checkpoint (or the popularity baseline) on a split view: full ranking, HR@K, NDCG@K, MRR.

    python -m train.evaluate --model runs/ml-1m-hstu --dataset data/ml-1m                 # test view, leave-one-out
    python -m train.evaluate --model runs/ml-1m-hstu --dataset data/ml-1m --split validation --output metrics.json
    python -m train.evaluate --baseline popularity --dataset data/ml-1m

Uses the same split module, collator and metrics as training, so it reproduces what `train.pretrain` reported.
"""

import math
import sys
from dataclasses import dataclass, field

from data_scripts.arguments import make_parser, parse_args, run_cli
from data_scripts.processed import NextItemDataset, load_processed, resolve_filter_history
from data_scripts.splits import SequenceStore, protocol_store
from train.evaluation.buckets import store_buckets
from train.evaluation.ranking import evaluate_next_item

from .evaluation.baselines import content_knn_metrics, item_user_counts, popularity_metrics
from .evaluation.results import format_table, provenance, write_json_atomic
from .runner import load_checkpoint, tune_cpu_allocator


def restrict_to_cold_targets(store, dataset, vocab_size: int, max_count: int) -> None:
    """Keeps the users of `dataset` whose (first) target item has at most `max_count` training interactions."""
    counts, _ = item_user_counts(store, dataset.protocol, dataset.holdout_length, vocab_size)
    keep = [i for i in range(len(dataset)) if counts[int(dataset[i]["target"])] <= max_count]
    if not keep:
        raise ValueError(f"no user of the {dataset.split} view has a target with <= {max_count} training interactions")
    dataset.select(keep)


def read_user_ids(path: str) -> set:
    """User ids from a preference-pairs folder (`user_id` column) or a text file (one id per line)."""
    import os

    if os.path.isdir(path):
        import datasets

        return set(datasets.load_from_disk(path)["user_id"])
    with open(path) as f:
        return {line.strip() for line in f if line.strip()}


def print_table(name: str, metrics: dict) -> None:
    keys = [k for k in metrics if isinstance(metrics[k], float) and not k.startswith("popularity_")][:12]
    print(format_table({name: metrics}, keys))


@dataclass
class EvaluateArguments:
    dataset: str = field(metadata={"help": "processed dataset folder"})
    model: str | None = field(default=None, metadata={"help": "checkpoint folder (train.pretrain output)"})
    baseline: str | None = field(default=None, metadata={"help": "evaluate a baseline instead of a checkpoint: popularity, or content_knn "
                                                                   "(cosine between the mean of the history's last 10 content vectors and "
                                                                   "each item; --content_embeddings)", "choices": ["popularity", "content_knn"]})
    content_embeddings: str = field(default="text-minilm.safetensors", metadata={"help": "content_knn: file under <dataset>/embeddings/"})
    content_preprocessing: str = field(default="whiten", metadata={"help": "content_knn: raw, center, whiten or shrink",
                                                                     "choices": ["raw", "center", "whiten", "shrink"]})
    split: str = field(default="test", metadata={"help": "which view to score (default test)", "choices": ["validation", "test"]})
    protocol: str = field(default="leave-one-out", metadata={"help": "split protocol (see data_scripts.splits)",
                                                             "choices": ["leave-one-out", "hstu-reference", "sessions", "cold-items"]})
    holdout_length: int = field(default=10, metadata={"help": "k of the sessions protocol: items held out per user for validation "
                                                                 "and again for test (formerly --session_length)"})
    max_length: int | None = field(default=None, metadata={"help": "history length (default: the model's max_position_embeddings)"})
    batch_size: int = field(default=256, metadata={"help": "users per forward pass"})
    filter_history: str = field(default="auto", metadata={
        "help": "items removed from rankings and banned from sessions: full (the user's whole history), window (the input window only, "
                "the HSTU reference's rule), none; auto = window under hstu-reference, else full",
        "choices": ["auto", "full", "window", "none"]})
    task: str = field(default="next-item", metadata={"help": "next-item ranking, generated-session metrics (GeniusRec's decoder, "
                                                             "or a stage-1 model's beam search), or both",
                                                     "choices": ["next-item", "sessions", "all"]})
    num_beams: int = field(default=10, metadata={"help": "beams for session generation"})
    stage1_baseline: str | None = field(default=None, metadata={"help": "with --task sessions: a stage-1 checkpoint whose top-k list is "
                                                                         "scored on the same users (hstu_* keys); a GeniusRec checkpoint "
                                                                         "(e.g. --model's own) gives its encoder's list"})
    decoding: str = field(default="beam", metadata={"help": "session decoding: beam (top beam), first_step (the first step's top-k), "
                                                            "beam_vote (all beams, Borda count), sample_vote (20 samples, Borda count), "
                                                            "mmr (all beams' items re-ranked by maximal marginal relevance on the ILD "
                                                            "vectors; --mmr_trade_off)",
                                                    "choices": ["beam", "first_step", "beam_vote", "sample_vote", "mmr"]})
    mmr_trade_off: float = field(default=1.0, metadata={"help": "with --decoding mmr: weight of relevance (the beams' Borda count) against "
                                                               "similarity to the items already picked, in [0, 1] (1: beam_vote)"})
    popularity_penalty: float = field(default=0.0, metadata={"help": "with --task sessions: subtract alpha * log(1 + training count) "
                                                                       "from every item's score in the model's decoding (0: off)"})
    first_step_weight: float = field(default=0.0, metadata={"help": "with --task sessions and a beam decoding of GeniusRec: add this weight "
                                                                     "times the first step's log-probabilities to every later step (0: plain "
                                                                     "beam search; large: the first step's list)"})
    encoder_query_weight: float = field(default=0.0, metadata={"help": "with --task sessions and GeniusRec: score items with the decoder "
                                                                           "state plus this weight times the encoder's next-item query, at "
                                                                           "every step (0: off)"})
    candidate_count: int | None = field(default=None, metadata={"help": "with --task sessions and a GeniusRec beam decoding: the two-stage "
                                                                        "decode, every step scoring only each user's N items retrieved "
                                                                        "by its first step (large catalogs; default: the whole catalog)"})
    alternatives: int = field(default=0, metadata={"help": "with --task sessions and GeniusRec: also generate this many sessions per user "
                                                          "(generate(num_return_sequences=N, shared_item_penalty=...)) and report the first "
                                                          "session's and the best one's recall and their item overlap, with and without the "
                                                          "penalty (0: off)"})
    shared_item_penalty: float = field(default=float("inf"), metadata={"help": "with --alternatives: logit penalty on the items of a "
                                                                                  "user's earlier sessions (inf: no shared item)"})
    rank_with: str = field(default="model", metadata={"help": "next item: rank with the model (GeniusRec: the decoder's first step) or, for "
                                                              "a GeniusRec checkpoint, with its encoder's next-item query",
                                                      "choices": ["model", "encoder"]})
    max_users: int | None = field(default=None, metadata={"help": "evaluate only the first N users of the view (quick looks)"})
    exclude_users: str | None = field(default=None, metadata={"help":
            "leave these users out: a preference-pairs folder (its user_id column) or a text file of user ids, one per "
                        "line (e.g. to choose DPO settings on users whose pairs were not trained)"})
    cold_items: int | None = field(default=None, metadata={"help":
            "keep only users whose target item has at most this many training interactions (cold-item table)"})
    output: str | None = field(default=None, metadata={"help": "write the metrics JSON here"})


def check_arguments(parser, args) -> None:
    """One line per bad flag (argparse's error: usage, the problem, exit 2) before any work."""
    if bool(args.model) == bool(args.baseline):
        parser.error("give exactly one of --model and --baseline")
    if args.batch_size < 1:
        parser.error(f"--batch_size must be >= 1, got {args.batch_size}")
    if args.max_users is not None and args.max_users < 1:
        parser.error(f"--max_users must be >= 1, got {args.max_users}")
    if args.alternatives < 0 or args.alternatives == 1:
        parser.error(f"--alternatives must be 0 (off) or >= 2 sessions per user, got {args.alternatives}")
    if args.max_length is not None and args.max_length < 1:
        parser.error(f"--max_length must be >= 1, got {args.max_length}")
    if args.candidate_count is not None and args.candidate_count < 1:
        parser.error(f"--candidate_count must be >= 1 (items retrieved per user), got {args.candidate_count}")
    if not 0.0 <= args.mmr_trade_off <= 1.0:
        parser.error(f"--mmr_trade_off must be in [0, 1], got {args.mmr_trade_off}")


def main(argv=None):
    parser = make_parser(EvaluateArguments, description=__doc__)
    (args,) = parse_args(parser, argv, aliases={"--no-filter-history": ["--filter_history", "none"]},
                         renamed={"session_length": "holdout_length"})
    check_arguments(parser, args)
    tune_cpu_allocator()  # inference: reuse large freed blocks (see its docstring)
    filter_history = resolve_filter_history(args.filter_history, args.protocol)
    sequences, items, tokenizer, stats = load_processed(args.dataset)
    store = protocol_store(SequenceStore.from_dataset(sequences), args.protocol, len(tokenizer), tokenizer.num_special_tokens)
    if args.model:
        model = load_checkpoint(args.model, tokenizer=tokenizer)
        if store.cold_items is not None:  # cold-items: the held-out items are scored as new items (see data_scripts.splits)
            model.reset_item_ids(store.cold_items)
        if args.alternatives and not getattr(model.config, "is_encoder_decoder", False):
            parser.error("--alternatives is a GeniusRec decoding (generate(shared_item_penalty=...)); this is a stage-1 checkpoint")
        encoder = getattr(model.config, "encoder_config", model.config)
        max_length = args.max_length or encoder.max_position_embeddings
    else:
        max_length = args.max_length or 200
    dataset = NextItemDataset(store, args.split, max_length, args.protocol, args.holdout_length)
    if args.cold_items is not None:
        restrict_to_cold_targets(store, dataset, len(tokenizer), args.cold_items)
    if args.exclude_users:
        excluded = read_user_ids(args.exclude_users)
        keep = [i for i, u in enumerate(dataset.users) if store.user_ids[int(u)] not in excluded]
        dataset.select(keep)
    if args.max_users:
        dataset.select(slice(0, args.max_users))
    metrics = {}
    if args.task in ("next-item", "all"):
        if args.model:
            buckets, description = store_buckets(store, args.protocol, args.holdout_length, len(tokenizer), tokenizer.num_special_tokens)
            metrics.update(evaluate_next_item(model, dataset, args.batch_size, filter_history, rank_with=args.rank_with, buckets=buckets),
                           popularity_buckets=description)
        elif args.baseline == "content_knn":
            from data_scripts.embedders import prepare_content_table
            from data_scripts.processed import load_item_embeddings

            table = prepare_content_table(load_item_embeddings(args.dataset, args.content_embeddings)[0], args.content_preprocessing)
            metrics.update(content_knn_metrics(table, dataset, filter_history=filter_history))
        else:
            metrics.update(popularity_metrics(store, dataset, len(tokenizer), filter_history=filter_history))
    if args.task in ("sessions", "all"):
        if not args.model:
            parser.error("--task sessions needs --model: a GeniusRec checkpoint (decoder sessions) or a stage-1 one (its beam search)")
        from .evaluation.sessions import session_table

        stage1 = load_checkpoint(args.stage1_baseline, tokenizer=tokenizer).eval() if args.stage1_baseline else None
        metrics.update(session_table(model, store, items, dataset, args.holdout_length, args.num_beams, filter_history=filter_history,
                                     decoding=args.decoding, stage1=stage1, popularity_penalty=args.popularity_penalty,
                                     first_step_weight=args.first_step_weight, encoder_query_weight=args.encoder_query_weight,
                                     mmr_trade_off=args.mmr_trade_off, candidate_count=args.candidate_count))
        metrics.update(decoding=args.decoding, popularity_penalty=args.popularity_penalty, first_step_weight=args.first_step_weight,
                       encoder_query_weight=args.encoder_query_weight, mmr_trade_off=args.mmr_trade_off, candidate_count=args.candidate_count)
        if args.alternatives:
            from .evaluation.sessions import alternative_sessions, alternatives_report

            for name, penalty in (("beams", None), ("alternatives", args.shared_item_penalty)):
                lists = alternative_sessions(model, dataset, args.holdout_length, args.alternatives, args.num_beams, shared_item_penalty=penalty,
                                             filter_history=filter_history)
                metrics.update({f"{name}_{key}": value for key, value in alternatives_report(lists, dataset, args.holdout_length).items()})
            metrics["shared_item_penalty"] = args.shared_item_penalty if math.isfinite(args.shared_item_penalty) else "inf"  # JSON has no inf
    print_table(args.model or args.baseline, metrics)
    if args.output:
        write_json_atomic(args.output, {
            "metrics": {args.split: metrics}, "protocol": args.protocol, "filter_history": filter_history, "model": args.model or args.baseline,
            "dataset": args.dataset, "users": len(dataset), "cold_items": args.cold_items, "excluded_users": args.exclude_users,
            **provenance("python -m train.evaluate", argv),
        })
    return metrics


if __name__ == "__main__":
    sys.exit(run_cli(main))
