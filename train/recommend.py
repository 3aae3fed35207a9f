"""Print recommendations for given users of a processed dataset.

    python -m train.recommend --model runs/hstu --dataset data/ml-1m --users 1 2 3 --k 10
"""

from dataclasses import dataclass, field

from data_scripts.arguments import make_parser, parse_args
from data_scripts.processed import NextItemDataset, load_processed
from data_scripts.splits import SequenceStore

from .evaluation.sessions import next_item_top_k


def print_next_item_recommendations(model, store, tokenizer, items, dataset, num_users=3, k=10, users=None):
    titles = items["title"]
    positions = {int(u): i for i, u in enumerate(dataset.users)}
    wanted = [store.user_ids.index(u) for u in users] if users else [int(u) for u in dataset.users[:num_users]]
    missing = [store.user_ids[u] for u in wanted if u not in positions]
    if missing:
        raise ValueError(f"users {missing} have no row in the {dataset.split} view (too short a history)")
    ids = next_item_top_k(model, [dataset[positions[u]] for u in wanted], k)
    for user, row in zip(wanted, ids):
        example = dataset[positions[user]]
        recent = [titles[int(t) - 4] for t in example["input_ids"][-3:]]
        print(f"\nuser {store.user_ids[user]}  (last watched: {'; '.join(recent)})")
        for rank, token in enumerate(row.tolist(), start=1):
            print(f"  {rank:2d}. {titles[token - 4]}   [{tokenizer.decode_items([token])[0]}]")


@dataclass
class RecommendArguments:
    model: str = field(metadata={"help": "checkpoint folder (train.pretrain output)"})
    dataset: str = field(metadata={"help": "processed dataset folder"})
    users: list[str] | None = field(default=None, metadata={"help": "raw user ids (default: the first --num_users test users)", "nargs": "*"})
    num_users: int = field(default=3, metadata={"help": "how many users when --users is not given"})
    k: int = field(default=10, metadata={"help": "recommendations per user"})
    split: str = field(default="test", metadata={"help": "which history to recommend from", "choices": ["validation", "test"]})
    max_length: int | None = field(default=None, metadata={"help": "history length (default: the model's max_position_embeddings)"})


def main(argv=None):
    parser = make_parser(RecommendArguments, description=__doc__)
    (args,) = parse_args(parser, argv)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(args.model)
    sequences, items, tokenizer, _ = load_processed(args.dataset)
    store = SequenceStore.from_dataset(sequences)
    dataset = NextItemDataset(store, args.split, args.max_length or model.config.max_position_embeddings)
    print_next_item_recommendations(model, store, tokenizer, items, dataset, args.num_users, args.k, args.users)


if __name__ == "__main__":
    main()
