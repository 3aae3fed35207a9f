"""DPO preference pairs from a stage-2 GeniusRec checkpoint and the train view only.

    python -m train.build_preference_pairs --model runs/ml-1m-geniusrec --dataset data/ml-1m --out data/ml-1m-pairs

For each pair user (a seeded random `--num_users` of the train view of `--protocol`; the others stay apart for
choosing reward weights and beta on their validation view), the history is the train sequence minus its last `k`
items, and those `k` real items (still training data: never validation or test) are the reference session. Candidates
are generated under the one time policy (the history's times and the request time, the reference's first event) with
the user's whole history before the cut banned. `--num_candidates`
sessions are generated (beam search, plus `--num_sampled` sampled ones), each scored by

    reward = w_accuracy * recall@k(session, real next k items)
           + w_novelty  * mean self-information of its items / log2(num_users)      (in [0, 1])
           + w_diversity * intra-list diversity (mean pairwise cosine distance of item text embeddings or genres)
           - w_popularity * mean share of training users who had each item

and the best candidate is paired with each of the `--pairs_per_user` worst ones (a ranking of several candidates as
pairs) whose reward is lower by `--margin` or more. With `--min_chosen_accuracy a` a user gives pairs only when the
best candidate's recall@k is at least `a`, and then only against candidates that are no more accurate (an
accuracy-gated reward: "accurate and diverse", never "diverse instead of accurate"). Candidates are decoded the way
the model is evaluated: `--first_step_weight` and `--encoder_query_weight` as in `train.evaluate`.
Output: a `datasets` dataset with `prompt` ("<history tokens> [SEP]"), `chosen`/`rejected` (" <tokens> [EOS]"),
`prompt_timestamps` (the history's times) and `next_timestamp` (the request time), the `reference` session, the
rewards and the user id: the string format TRL's DPOTrainer consumes with the item tokenizer, plus the times that
`train.dpo`'s collator passes to the packed view. `pairs_config.json` beside it lists the arguments.
"""

import json
import math
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from data_scripts.arguments import make_parser, parse_args, run_cli
from data_scripts.processed import NextItemCollator, excluded_items, load_processed
from data_scripts.splits import SequenceStore, split_users
from modeling_geniusrec import GeniusRecForSessionGeneration

from .evaluation.baselines import item_user_counts
from .evaluation.session_metrics import intra_list_diversity, novelty
from .evaluation.sessions import decoding_mix, item_feature_vectors, model_text_table
from .runner import load_checkpoint


def reward_terms(session, target, vectors, counts, num_users):
    """The four reward terms of a session (see the module docstring)."""
    k = len(target)
    return {
        "accuracy": len(set(session[:k]) & set(target)) / k,
        "novelty": novelty([session], counts, num_users) / math.log2(num_users),
        "diversity": intra_list_diversity([session], vectors),
        "popularity": float((counts[session] / num_users).mean()),
    }


def combine(terms, weights):
    return (weights["accuracy"] * terms["accuracy"] + weights["novelty"] * terms["novelty"]
            + weights["diversity"] * terms["diversity"] - weights["popularity"] * terms["popularity"])


def token_string(tokenizer, ids) -> str:
    return " ".join(tokenizer.convert_ids_to_tokens([int(i) for i in ids]))


def pair_users(store, protocol: str, holdout_length: int, k: int, num_users: int, seed: int = 42) -> list[tuple[int, int]]:
    """A seeded random choice of `num_users` train-view users long enough for a `k`-item reference session:
    `[(row index, train view end)]`, in row order. The other users are never in a pair."""
    users, bounds = split_users(store, "train", protocol, holdout_length)
    eligible = [(int(u), int(b[0])) for u, b in zip(users, bounds) if b[0] >= k + 2]
    order = np.random.default_rng(seed).permutation(len(eligible))[:num_users]
    return [eligible[i] for i in sorted(order)]


def reference_examples(store, users: list[tuple[int, int]], k: int, max_len: int) -> list[dict]:
    """Per pair user: the prompt history (at most `max_len` items ending `k` items before the train view's end, with
    times), the request time, the whole history before the cut (banned from candidates) and the reference session
    (the train view's last `k` items). Reads nothing at or after the train view's end."""
    examples = []
    for user, train_end in users:
        seq, ts = store.row(int(user))
        cut = train_end - k
        start = max(0, cut - max_len)
        examples.append({"user": user, "input_ids": seq[start:cut], "timestamps": ts[start:cut], "next_timestamp": ts[cut],
                         "seen_items": seq[:cut], "reference": seq[cut:train_end]})
    return examples


def decoding_options(args, rows_per_user: int) -> dict:
    """generate() options of the evaluated decoding (the first-step mix and the encoder query, [`decoding_mix`]), for
    `rows_per_user` beams or samples per user."""
    options, processors = decoding_mix(args.first_step_weight, args.encoder_query_weight, rows_per_user)
    return {**options, "logits_processor": processors} if processors else options


def select_pairs(scored: list[tuple[float, float, list[int]]], args) -> list[tuple[tuple, tuple]]:
    """(chosen, rejected) pairs of one user from `[(reward, accuracy, session)]`: the best candidate against each of the
    `pairs_per_user` worst ones whose reward is lower by `margin` or more; with `min_chosen_accuracy`, none unless the
    best candidate's accuracy reaches it, and only rejected candidates no more accurate than the chosen one."""
    ranked = sorted(scored, key=lambda x: -x[0])
    best = ranked[0]
    if args.min_chosen_accuracy and best[1] < args.min_chosen_accuracy:
        return []
    rejected = [c for c in sorted(ranked[1:], key=lambda x: x[0]) if best[0] - c[0] >= args.margin
                and (not args.min_chosen_accuracy or c[1] <= best[1])]
    return [(best, worse) for worse in rejected[: args.pairs_per_user]]


@torch.no_grad()
def build_pairs(model, store, items, tokenizer, args) -> list[dict]:
    k = args.items_per_session
    counts, num_users = item_user_counts(store, args.protocol, args.holdout_length, len(tokenizer))
    vectors = item_feature_vectors(items, len(tokenizer), model_text_table(model))
    weights = {"accuracy": args.w_accuracy, "novelty": args.w_novelty, "diversity": args.w_diversity, "popularity": args.w_popularity}
    max_len = min(args.max_length, model.config.encoder_config.max_position_embeddings)
    examples = reference_examples(store, pair_users(store, args.protocol, args.holdout_length, k, args.num_users, args.seed), k, max_len)
    collator, pairs = NextItemCollator(model.config.pad_token_id), []
    model.eval()
    for lo in tqdm(range(0, len(examples), args.batch_size), desc="preference pairs", disable=args.quiet):
        chunk = examples[lo : lo + args.batch_size]
        gen = dict(**collator.pad_histories(chunk), banned_item_ids=excluded_items(chunk, "full"),
                   max_new_tokens=k, min_new_tokens=k)
        beams = model.generate(**gen, num_beams=args.num_candidates, num_return_sequences=args.num_candidates,
                               **decoding_options(args, args.num_candidates))[:, 1 : k + 1]
        candidates = beams.view(len(chunk), args.num_candidates, k)
        if args.num_sampled:
            sampled = model.generate(**gen, do_sample=True, top_k=args.top_k, num_return_sequences=args.num_sampled,
                                     **decoding_options(args, args.num_sampled))[:, 1 : k + 1]
            candidates = torch.cat([candidates, sampled.view(len(chunk), args.num_sampled, k)], dim=1)
        for row, example in enumerate(chunk):
            target = example["reference"].tolist()
            scored = []
            for session in (c.tolist() for c in candidates[row]):
                terms = reward_terms(session, target, vectors, counts, num_users)
                scored.append((combine(terms, weights), terms["accuracy"], session))
            for best, worst in select_pairs(scored, args):
                pairs.append({
                    "prompt": token_string(tokenizer, example["input_ids"]) + " [SEP]",
                    "chosen": " " + token_string(tokenizer, best[2]) + " [EOS]",
                    "rejected": " " + token_string(tokenizer, worst[2]) + " [EOS]",
                    "prompt_timestamps": [int(t) for t in example["timestamps"]],
                    "next_timestamp": int(example["next_timestamp"]),
                    "reference": token_string(tokenizer, target),
                    "chosen_reward": best[0], "rejected_reward": worst[0], "user_id": store.user_ids[int(example["user"])],
                })
    return pairs


def check_out(out: str) -> str:
    """`out` as an absolute path; raises when it exists and is not a pairs folder this script wrote."""
    out = os.path.abspath(out.rstrip("/"))
    if os.path.exists(out) and not os.path.exists(os.path.join(out, "pairs_config.json")):
        raise FileExistsError(f"--out {out!r} exists and is not a preference-pairs folder written by this script: "
                              "choose a new path (nothing was written)")
    return out


def write_pairs_atomic(pairs: list[dict], out: str, config: dict) -> None:
    """Writes the pairs dataset to a fresh temp folder beside `out`, then renames it into place. Replaces `out` only
    when it is an earlier pairs folder (it holds `pairs_config.json`); any other existing path is refused."""
    import datasets

    out = check_out(out)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=parent)
    try:
        datasets.Dataset.from_list(pairs).save_to_disk(tmp)
        with open(os.path.join(tmp, "pairs_config.json"), "w") as f:
            json.dump(config, f, indent=2)
        if os.path.exists(out):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=parent)
            os.replace(out, os.path.join(old, "pairs"))
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class PairArguments:
    model: str = field(metadata={"help": "stage-2 GeniusRec checkpoint"})
    dataset: str = field(metadata={"help": "processed dataset folder"})
    out: str = field(metadata={"help": "output folder (a datasets dataset, written atomically)"})
    protocol: str = field(default="leave-one-out", metadata={"help": "whose train view the pairs come from (leave-one-out or sessions)"})
    holdout_length: int = field(default=10, metadata={"help": "k of the sessions protocol (its held-out sessions are never used)"})
    items_per_session: int = field(default=10, metadata={"help": "items per candidate session (and real items of the reference; "
                                                                    "formerly --session_length)"})
    num_users: int = field(default=1000, metadata={"help": "users to draw pairs for (a seeded random subset; keep the rest "
                                                               "apart to choose weights and beta on their validation view)"})
    num_candidates: int = field(default=8, metadata={"help": "beam-search candidates per user"})
    num_sampled: int = field(default=0, metadata={"help": "extra sampled candidates per user"})
    top_k: int = field(default=50, metadata={"help": "top-k of the sampled candidates"})
    w_accuracy: float = field(default=1.0, metadata={"help": "reward weight of recall@k against the real next items"})
    w_novelty: float = field(default=1.0, metadata={"help": "reward weight of normalised novelty"})
    w_diversity: float = field(default=1.0, metadata={"help": "reward weight of intra-list diversity"})
    w_popularity: float = field(default=1.0, metadata={"help": "penalty weight of the items' popularity share"})
    margin: float = field(default=0.05, metadata={"help": "minimum reward gap between chosen and rejected"})
    pairs_per_user: int = field(default=1, metadata={"help": "pairs per user: the best candidate against this many of the worst ones"})
    min_chosen_accuracy: float = field(default=0.0, metadata={"help": "accuracy gate: pairs only from users whose best candidate has at "
                                                                       "least this recall@k, against no-more-accurate candidates (0: off)"})
    first_step_weight: float = field(default=0.0, metadata={"help": "decode candidates with this first-step mix (as train.evaluate)"})
    encoder_query_weight: float = field(default=0.0, metadata={"help": "decode candidates with this encoder-query weight (as train.evaluate)"})
    max_length: int = field(default=50, metadata={"help": "history items in each prompt"})
    batch_size: int = field(default=64, metadata={"help": "users per generate() call"})
    seed: int = field(default=42, metadata={"help": "seed of the pair-user choice and of sampling"})
    quiet: bool = field(default=False, metadata={"help": "no progress bar"})


def main(argv=None):
    parser = make_parser(PairArguments, description=__doc__)
    (args,) = parse_args(parser, argv, renamed={"session_length": "items_per_session"})
    check_out(args.out)  # refuse before any work
    if args.pairs_per_user < 1:
        parser.error(f"--pairs_per_user must be >= 1, got {args.pairs_per_user}")
    torch.manual_seed(args.seed)
    model = load_checkpoint(args.model, ("geniusrec",), auto_class=GeniusRecForSessionGeneration)
    sequences, items, tokenizer, _ = load_processed(args.dataset)
    store = SequenceStore.from_dataset(sequences)
    pairs = build_pairs(model, store, items, tokenizer, args)
    if not pairs:
        raise ValueError("no pair passed the margin: lower --margin or add candidates")
    write_pairs_atomic(pairs, args.out, vars(args))
    print(f"wrote {len(pairs)} pairs to {args.out} (mean reward gap {np.mean([q['chosen_reward'] - q['rejected_reward'] for q in pairs]):.3f})")
    return pairs


if __name__ == "__main__":
    sys.exit(run_cli(main))
