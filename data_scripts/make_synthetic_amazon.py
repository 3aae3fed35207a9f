"""Writes a synthetic Amazon Reviews 2023 pair of files (reviews + metadata) for scale tests.

    python -m data_scripts.make_synthetic_amazon --rows 5000000 --out /tmp/synthetic

Users and items are drawn head-heavy (power laws over the id ranges) so that a 5-core keeps a realistic share; lines carry the same
fields as the real files (including review text), so parsing cost is comparable.
"""

import gzip
import json
import os
import sys
from dataclasses import dataclass, field

import numpy as np

from .arguments import make_parser, parse_args, run_cli


@dataclass
class SyntheticAmazonArguments:
    out: str = field(metadata={"help": "folder for Synthetic.jsonl.gz and meta_Synthetic.jsonl.gz"})
    rows: int = field(default=5_000_000, metadata={"help": "number of reviews (default 5,000,000)"})
    users: int | None = field(default=None, metadata={"help":
            "user id range (default 0.35 x rows, the ratio of Books 2023: 10.3M users / 29.5M reviews)"})
    items: int | None = field(default=None, metadata={"help": "item id range (default 0.15 x rows, Books 2023: 4.4M items)"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    malformed_every: int = field(default=0, metadata={"help": "write a broken line every N rows (0: none)"})


def main(argv=None):
    parser = make_parser(SyntheticAmazonArguments, description=__doc__)
    (args,) = parse_args(parser, argv)
    rng = np.random.default_rng(args.seed)
    num_users, num_items = args.users or max(int(args.rows * 0.35), 1), args.items or max(int(args.rows * 0.15), 1)
    os.makedirs(args.out, exist_ok=True)
    chunk = 500_000
    with gzip.open(os.path.join(args.out, "Synthetic.jsonl.gz"), "wt", compresslevel=1) as f:
        for lo in range(0, args.rows, chunk):
            n = min(chunk, args.rows - lo)
            users = (num_users * rng.random(n) ** 2.5).astype(np.int64)  # head-heavy activity, bounded
            items = (num_items * rng.random(n) ** 3).astype(np.int64)  # head-heavy popularity
            ratings = rng.integers(1, 6, n)
            times = 1_500_000_000_000 + rng.integers(0, 200_000_000_000, n)
            lines = []
            for k in range(n):
                if args.malformed_every and (lo + k) % args.malformed_every == 0:
                    lines.append('{"user_id": "broken", \n')
                    continue
                lines.append(
                    f'{{"rating": {ratings[k]}.0, "title": "Review title", "text": "A synthetic review text of typical '
                    f'length that mentions the product and how it was used.", "images": [], "asin": "B{items[k]:09d}", '
                    f'"parent_asin": "P{items[k]:09d}", "user_id": "U{users[k]:012d}", "timestamp": {times[k]}, '
                    f'"helpful_vote": 0, "verified_purchase": true}}\n'
                )
            f.write("".join(lines))
    with gzip.open(os.path.join(args.out, "meta_Synthetic.jsonl.gz"), "wt", compresslevel=1) as f:
        for item in range(num_items):
            f.write(json.dumps({
                "main_category": "Books", "title": f"Synthetic book {item}", "features": ["Paperback"],
                "description": [f"Description of book {item}."], "categories": ["Books", f"Genre {item % 17}"],
                "images": [{"large": f"https://example.invalid/{item}.jpg"}], "parent_asin": f"P{item:09d}",
            }) + "\n")
    print(f"wrote {args.rows:,} reviews ({num_users:,} users, {num_items:,} items) to {args.out}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
