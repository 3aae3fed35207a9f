"""The README's usage snippet runs as written (paths pointed at a tiny local model)."""

import os
import re

import torch

from modeling_geniusrec import HSTUConfig, HSTUForNextItemPrediction, ItemTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_checkpoints(root):
    """What `make quickstart` leaves under runs/quickstart, in miniature: an HSTU and a GeniusRec folder (random tiny
    weights) with a MovieLens-like vocabulary carrying titles, saved the way training saves them."""
    from modeling_geniusrec import GeniusRecConfig, GeniusRecForSessionGeneration

    raw = ["Toy Story (1995)", "Heat (1995)"] + [f"Movie {i} (2000)" for i in range(30)]
    tokenizer = ItemTokenizer.from_raw_ids(raw)
    tokenizer.item_titles = {r: r for r in raw}
    torch.manual_seed(0)
    encoder = HSTUConfig(vocab_size=len(tokenizer), hidden_size=16, qk_head_dim=8, v_head_dim=8, num_attention_heads=2,
                         max_position_embeddings=20)
    models = {"hstu": HSTUForNextItemPrediction(encoder),
              "geniusrec": GeniusRecForSessionGeneration(GeniusRecConfig(encoder_config=encoder, intermediate_size=32, max_session_length=10))}
    for name, model in models.items():
        model.save_pretrained(root / "runs" / "quickstart" / name)
        tokenizer.save_pretrained(root / "runs" / "quickstart" / name)


def test_readme_python_blocks_run_as_written(tmp_path, monkeypatch, capsys):
    """Every ```python block of README.md, run as written in a folder holding the quick start's checkpoint paths."""
    readme = open(os.path.join(ROOT, "README.md")).read()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert len(blocks) >= 4
    tiny_checkpoints(tmp_path)
    monkeypatch.chdir(tmp_path)
    for number, block in enumerate(blocks, start=1):
        exec(compile(block, f"README.md python block {number}", "exec"), {})
    out = capsys.readouterr().out
    assert "'item_id'" in out and "'title'" in out and "Movie" in out
    assert (tmp_path / "runs" / "grown" / "config.json").exists()


def write_own_data(folder, users=60, items=30):
    """Files shaped like README "Your own data": string ids, ISO times, an items table with title and category."""
    import datetime
    import random

    rng = random.Random(0)
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    with open(folder / "items.csv", "w") as f:
        f.write("item_id,title,category\n" + "".join(f"sku-{i},Product {i},{['shoes', 'hats', 'books'][i % 3]}\n" for i in range(items)))
    with open(folder / "events.csv", "w") as f:
        f.write("user_id,item_id,timestamp\n")
        for u in range(1, users + 1):
            first, t = rng.randrange(items), start + datetime.timedelta(days=u)
            for k in range(rng.randint(8, 14)):
                t += datetime.timedelta(minutes=rng.randint(1, 90))
                f.write(f"u{u},sku-{(first + 3 * k) % items},{t.strftime('%Y-%m-%dT%H:%M:%SZ')}\n")


def test_readme_own_data_commands_run_as_written(tmp_path, monkeypatch, capsys):
    """The four command lines of README "Your own data" (`geniusrec <job> ...`), each run in-process through the
    subcommand's module `main` (the same parser as the console command), in a folder holding such an events.csv /
    items.csv."""
    import importlib
    import shlex

    from train.cli import SUBCOMMANDS

    readme = open(os.path.join(ROOT, "README.md")).read()
    block = re.search(r"## Your own data\n.*?```bash\n(.*?)```", readme, re.S).group(1)
    write_own_data(tmp_path)
    monkeypatch.chdir(tmp_path)
    lines = [line for line in block.strip().splitlines() if line.strip()]
    assert len(lines) <= 10
    text_model = "minilm" if "--text_model minilm" in block else None
    for line in lines:
        words = shlex.split(line)
        assert words[0] == "geniusrec" and words[1] in SUBCOMMANDS, line
        argv = words[2:]
        if text_model and os.environ.get("GENIUSREC_SLOW") != "1":  # the MiniLM wheel is a download: tests use a tiny text model
            argv = [tiny_text_model(tmp_path) if a == text_model else a for a in argv]
        importlib.import_module(SUBCOMMANDS[words[1]][0]).main(argv)
    out = capsys.readouterr().out
    assert "ok: data/mine" in out and "GeniusRec session" in out and "Product" in out and "user u1" in out


def tiny_text_model(tmp_path):
    """A tiny random BERT saved locally (what the embedder loads through AutoModel, like MiniLM)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    folder = tmp_path / "tiny-text-model"
    if not folder.exists():
        words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + [w for i in range(30) for w in ("Product", str(i))][:40] + ["shoes", "hats", "books", "."]
        vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
        tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(folder)
        BertModel(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=32)).save_pretrained(folder)
    return str(folder)
