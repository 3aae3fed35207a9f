"""Print recommendations for given users of a processed dataset.

    python -m train.recommend --model runs/hstu --dataset data/ml-1m --users 1 2 3 --k 10
"""

import argparse

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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint folder (train.pretrain output)")
    p.add_argument("--dataset", required=True, help="processed dataset folder")
    p.add_argument("--users", nargs="*", default=None, help="raw user ids (default: the first --num-users test users)")
    p.add_argument("--num-users", type=int, default=3, help="how many users when --users is not given")
    p.add_argument("--k", type=int, default=10, help="recommendations per user")
    p.add_argument("--split", default="test", choices=["validation", "test"], help="which history to recommend from")
    p.add_argument("--max-length", type=int, default=None, help="history length (default: the model's max_position_embeddings)")
    args = p.parse_args(argv)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(args.model)
    sequences, items, tokenizer, _ = load_processed(args.dataset)
    store = SequenceStore.from_dataset(sequences)
    dataset = NextItemDataset(store, args.split, args.max_length or model.config.max_position_embeddings)
    print_next_item_recommendations(model, store, tokenizer, items, dataset, args.num_users, args.k, args.users)


if __name__ == "__main__":
    main()
