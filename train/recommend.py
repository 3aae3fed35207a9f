"""Print recommendations for given users of a processed dataset.

    python -m train.recommend --model runs/hstu --dataset data/ml-1m --users 1 2 3 --k 10
"""

import sys
from dataclasses import dataclass, field

from data_scripts.arguments import make_parser, parse_args, run_cli
from data_scripts.processed import NextItemCollator, NextItemDataset, excluded_items, load_processed
from data_scripts.splits import SequenceStore
from modeling_geniusrec.tokenization_items import NUM_SPECIAL_TOKENS

from .evaluation.sessions import next_item_top_k
from .runner import load_checkpoint, tune_cpu_allocator


def print_next_item_recommendations(model, store, tokenizer, items, dataset, num_users=3, k=10, users=None, num_beams=10,
                                    candidate_count=None):
    """Prints each user's top-k next items (stage-1 models) or generated k-item session (GeniusRec, beam search; with
    `candidate_count`, the two-stage decode), with titles; the user's whole history is never recommended."""
    titles, first = items["title"], NUM_SPECIAL_TOKENS  # token id -> items row: id - NUM_SPECIAL_TOKENS
    positions = {int(u): i for i, u in enumerate(dataset.users)}
    index = {raw: row for row, raw in enumerate(store.user_ids)}
    unknown = [u for u in users or [] if u not in index]
    if unknown:
        raise ValueError(f"unknown user ids {unknown[:5]} (not in this dataset; ids are the raw ids of the source file, e.g. "
                         f"{store.user_ids[:3]})")
    wanted = [index[u] for u in users] if users else [int(u) for u in dataset.users[:num_users]]
    missing = [store.user_ids[u] for u in wanted if u not in positions]
    if missing:
        raise ValueError(f"users {missing} have no row in the {dataset.split} view (too short a history)")
    examples = [dataset[positions[u]] for u in wanted]
    if getattr(model.config, "is_encoder_decoder", False):
        batch = NextItemCollator(model.config.pad_token_id).pad_histories(examples)
        out = model.generate(**batch, banned_item_ids=excluded_items(examples, "full"), num_beams=num_beams,
                             max_new_tokens=k, min_new_tokens=k, candidate_count=candidate_count)
        ids = out[:, 1 : k + 1]
    else:
        ids = next_item_top_k(model, examples, k)
    for user, row, example in zip(wanted, ids, examples):
        recent = [titles[int(t) - first] for t in example["input_ids"][-3:]]
        print(f"\nuser {store.user_ids[user]}  (last watched: {'; '.join(recent)})")
        for rank, token in enumerate(row.tolist(), start=1):
            print(f"  {rank:2d}. {titles[token - first]}   [{tokenizer.decode_items([token])[0]}]")


@dataclass
class RecommendArguments:
    model: str = field(metadata={"help": "checkpoint folder (train.pretrain output)"})
    dataset: str = field(metadata={"help": "processed dataset folder"})
    users: list[str] | None = field(default=None, metadata={"help": "raw user ids (default: the first --num_users test users)", "nargs": "*"})
    num_users: int = field(default=3, metadata={"help": "how many users when --users is not given"})
    k: int = field(default=10, metadata={"help": "recommendations per user"})
    split: str = field(default="test", metadata={"help": "which history to recommend from", "choices": ["validation", "test"]})
    max_length: int | None = field(default=None, metadata={"help": "history length (default: the model's max_position_embeddings)"})
    candidate_count: int | None = field(default=None, metadata={"help": "GeniusRec: the two-stage decode for large catalogs, every step "
                                                                        "scoring only each user's N items retrieved by its first step "
                                                                        "(default: the whole catalog)"})


def main(argv=None):
    parser = make_parser(RecommendArguments, description=__doc__)
    (args,) = parse_args(parser, argv)
    if args.k < 1:
        parser.error(f"--k must be >= 1, got {args.k}")
    if args.candidate_count is not None and args.candidate_count < 1:
        parser.error(f"--candidate_count must be >= 1 (items retrieved per user), got {args.candidate_count}")
    tune_cpu_allocator()  # inference: reuse large freed blocks (see its docstring)
    sequences, items, tokenizer, _ = load_processed(args.dataset)
    model = load_checkpoint(args.model, tokenizer=tokenizer).eval()
    store = SequenceStore.from_dataset(sequences)
    encoder = getattr(model.config, "encoder_config", model.config)
    dataset = NextItemDataset(store, args.split, args.max_length or encoder.max_position_embeddings)
    if args.candidate_count and not getattr(model.config, "is_encoder_decoder", False):
        parser.error("--candidate_count is a GeniusRec decode (a stage-1 checkpoint ranks the whole catalog in chunks already)")
    print_next_item_recommendations(model, store, tokenizer, items, dataset, args.num_users, args.k, args.users,
                                    candidate_count=args.candidate_count)


if __name__ == "__main__":
    sys.exit(run_cli(main))
