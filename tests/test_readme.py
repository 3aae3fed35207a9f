"""The README's usage snippet runs as written (paths pointed at a tiny local model)."""

import os
import re

import torch

from modeling_geniusrec import HSTUConfig, HSTUForNextItemPrediction, ItemTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_usage_snippet_runs(tmp_path):
    readme = open(os.path.join(ROOT, "README.md")).read()
    snippet = re.search(r"## Usage\n\n```python\n(.*?)```", readme, re.S).group(1)
    tokenizer = ItemTokenizer.from_raw_ids(["Toy Story (1995)", "Heat (1995)"] + [f"Movie {i}" for i in range(20)])
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    torch.manual_seed(0)
    HSTUForNextItemPrediction(HSTUConfig(vocab_size=len(tokenizer), hidden_size=16, qk_head_dim=8, v_head_dim=8)).save_pretrained(tmp_path / "model")
    snippet = snippet.replace('"runs/ml-1m-hstu"', repr(str(tmp_path / "model"))).replace('"data/ml-1m/tokenizer"', repr(str(tmp_path / "tokenizer")))
    namespace = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    assert namespace["top"].shape == (1, 10)
    assert not {"Toy Story (1995)", "Heat (1995)"} & set(tokenizer.decode_items(namespace["top"][0].tolist()))
