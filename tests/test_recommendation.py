"""Recommendations out: the shared function (whole history, new users, the exhausted-catalog rule), train.recommend's
files (formats, resume, 2 processes), the `next-items` pipeline (in process and without the package installed) and the
self-contained checkpoint folder (tokenizer with titles, card, pipeline code)."""

import json
import os
import shutil
import subprocess
import sys
import warnings

import pyarrow.parquet as pq
import pytest
import torch

from data_scripts import movielens
from data_scripts.processed import load_processed
from data_scripts.splits import SequenceStore
from modeling_geniusrec import RecommendationWarning, recommend
from train import finetune, pretrain
from train import recommend as recommend_cli

from .fixtures import write_learnable_ml
from .test_distributed import run as run_command
from .test_pretrain import TINY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A learnable dataset (each user walks i -> i+1), an HSTU trained on it and a GeniusRec fine-tuned from it."""
    root = tmp_path_factory.mktemp("recommend")
    write_learnable_ml(root / "raw", users=40, items=40)
    movielens.main(["--raw_dir", str(root / "raw"), "--out", str(root / "data")])
    pretrain.main(["--dataset", str(root / "data"), "--output_dir", str(root / "hstu"), "--num_train_epochs", "8", *TINY])
    finetune.main(["--dataset", str(root / "data"), "--encoder_path", str(root / "hstu"), "--output_dir", str(root / "geniusrec"),
                   "--num_train_epochs", "1", "--max_length", "20", "--disable_tqdm", "true", "--num_attention_heads", "2",
                   "--intermediate_size", "16"])
    return root


def load(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def whole_histories(root):
    sequences, _, tokenizer, _ = load_processed(str(root / "data"))
    store = SequenceStore.from_dataset(sequences)
    return {store.user_ids[u]: tokenizer.decode_items(store.row(u)[0].tolist()) for u in range(len(store.user_ids))}


def test_batch_file_recommends_from_the_whole_history_and_bans_all_of_it(runs, tmp_path):
    """The latest event is excluded too: on this data the model's favourite is the item after the test view's last
    one, i.e. the user's latest item, which the old test-view command returned for most users."""
    histories = whole_histories(runs)
    for model in ("hstu", "geniusrec"):
        out = tmp_path / f"{model}.parquet"
        recommend_cli.main(["--model", str(runs / model), "--dataset", str(runs / "data"), "--all_users", "--output", str(out), "--k", "5",
                            "--quiet"])
        table = pq.read_table(out).to_pylist()
        assert len(table) == 5 * len(histories) and set(table[0]) == {"user_id", "rank", "item_id", "title", "score"}
        for row in table:
            assert row["item_id"] not in histories[row["user_id"]], (model, row)
        assert table[0]["title"].startswith("Movie ") and table[0]["rank"] == 1
    test_view = tmp_path / "test-view.parquet"
    recommend_cli.main(["--model", str(runs / "hstu"), "--dataset", str(runs / "data"), "--all_users", "--output", str(test_view),
                        "--history_view", "test", "--k", "5", "--quiet"])
    last_returned = sum(r["item_id"] == histories[r["user_id"]][-1] for r in pq.read_table(test_view).to_pylist())
    assert last_returned > len(histories) // 2  # what the old default did: the user's latest item comes back


def test_new_users_formats_and_a_refused_overwrite(runs, tmp_path, capsys):
    histories = whole_histories(runs)
    raw_ids = [histories[u][0] for u in list(histories)[:1]] + ["3", "4"]
    lines = [{"user_id": "new-1", "items": raw_ids, "timestamps": [1000, 1100, 1200]}, {"user_id": "new-2", "items": ["10"]}]
    (tmp_path / "new.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    for ext in (".jsonl", ".csv", ".parquet"):
        out = tmp_path / f"recs{ext}"
        recommend_cli.main(["--model", str(runs / "hstu"), "--histories", str(tmp_path / "new.jsonl"), "--output", str(out), "--k", "3",
                            "--quiet"])
        if ext == ".jsonl":
            rows = [json.loads(line) for line in out.read_text().splitlines()]
        elif ext == ".csv":
            import pyarrow.csv as pcsv

            rows = pcsv.read_csv(out).to_pylist()
        else:
            rows = pq.read_table(out).to_pylist()
        assert [(r["user_id"], r["rank"]) for r in rows] == [("new-1", 1), ("new-1", 2), ("new-1", 3), ("new-2", 1), ("new-2", 2), ("new-2", 3)]
        assert not {str(r["item_id"]) for r in rows if r["user_id"] == "new-1"} & set(raw_ids)
    with pytest.raises(SystemExit):
        recommend_cli.main(["--model", str(runs / "hstu"), "--histories", str(tmp_path / "new.jsonl"), "--output", str(tmp_path / "recs.jsonl")])
    assert "exists: pass --overwrite" in capsys.readouterr().err


def test_output_resumes_by_chunk_after_a_kill(runs, tmp_path, monkeypatch):
    args = ["--model", str(runs / "hstu"), "--dataset", str(runs / "data"), "--all_users", "--k", "4", "--chunk_size", "8", "--quiet"]
    recommend_cli.main(args + ["--output", str(tmp_path / "whole.parquet")])
    calls = []
    real = recommend_cli.write_table

    def dies_on_the_third_chunk(table, path):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real(table, path)

    monkeypatch.setattr(recommend_cli, "write_table", dies_on_the_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        recommend_cli.main(args + ["--output", str(tmp_path / "recs.parquet")])
    assert not (tmp_path / "recs.parquet").exists()
    monkeypatch.setattr(recommend_cli, "write_table", real)
    summary = recommend_cli.main(args + ["--output", str(tmp_path / "recs.parquet")])
    assert summary["chunks_resumed"] == 2 and summary["chunks_written"] == 3
    assert pq.read_table(tmp_path / "recs.parquet").equals(pq.read_table(tmp_path / "whole.parquet"))
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".parts")]


def test_two_processes_split_the_users_and_write_the_same_file(runs, tmp_path):
    base = ["--model", str(runs / "hstu"), "--dataset", str(runs / "data"), "--all_users", "--k", "4", "--chunk_size", "8", "--quiet"]
    recommend_cli.main(base + ["--output", str(tmp_path / "one.parquet")])
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", os.path.join(ROOT, "train", "accelerate", "cpu_ddp.yaml"),
           "--num_processes", "2", "-m", "train.recommend", *base, "--output", str(tmp_path / "two.parquet")]
    result = run_command(cmd, tmp_path)
    assert "by 2 processes" in result.stdout
    assert pq.read_table(tmp_path / "two.parquet").equals(pq.read_table(tmp_path / "one.parquet"))


# ---- the exhausted-catalog rule, one function for every path --------------------------------------------------------------


@pytest.mark.parametrize("folder,options", [("hstu", {}), ("geniusrec", {}), ("geniusrec", {"candidate_count": 40}),
                                            ("geniusrec", {"session": False})])
def test_a_user_who_has_seen_all_but_three_items_gets_three(runs, folder, options):
    model, tokenizer = load(runs / folder)
    catalog = tokenizer.decode_items(list(range(4, len(tokenizer))))
    seen, unseen = catalog[:-3], set(catalog[-3:])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = recommend(model, tokenizer, [{"items": seen}], k=10, **options)[0]
    assert {i["item_id"] for i in result["items"]} == unseen and len(result["items"]) == 3
    assert "only 3 items" in result["notes"][-1] and any(issubclass(w.category, RecommendationWarning) for w in caught)
    nothing = recommend(model, tokenizer, [{"items": catalog}], k=5, warn=False, **options)[0]
    assert nothing["items"] == [] and "only 0 items" in nothing["notes"][-1]


def test_unknown_items_and_bad_histories_get_one_line(runs):
    model, tokenizer = load(runs / "hstu")
    with pytest.raises(ValueError, match="not in the model's catalog, e.g. \\['nope'\\]"):
        recommend(model, tokenizer, [["1", "nope"]])
    kept = recommend(model, tokenizer, [["1", "nope"]], unknown="drop")[0]
    assert "unknown item id(s) left out: ['nope']" in kept["notes"][0] and len(kept["items"]) == 10
    for history, pattern in (([], "non-empty list"), ({"items": ["1", "2"], "timestamps": [5]}, "one time per item"),
                             ({"items": ["1", "2"], "timestamps": [9, 5]}, "chronological"), ({"items": ["1"], "when": 3}, "unknown fields")):
        with pytest.raises(ValueError, match=pattern):
            recommend(model, tokenizer, [history])
    with pytest.raises(ValueError, match="more than the model reads"):
        recommend(model, tokenizer, [[str(i) for i in range(1, 40)]], truncate=False)
    with pytest.raises(ValueError, match="k must be"):
        recommend(model, tokenizer, [["1"]], k=0)


def test_alternatives_share_no_item_and_never_the_history(runs):
    model, tokenizer = load(runs / "geniusrec")
    result = recommend(model, tokenizer, [["1", "2", "3"]], k=4, num_return_sequences=3)[0]
    lists = [result["items"], *result["alternatives"]]
    ids = [i["item_id"] for items in lists for i in items]
    assert len(lists) == 3 and len(ids) == 12 == len(set(ids)) and not {"1", "2", "3"} & set(ids)


# ---- the pipeline and the self-contained folder -------------------------------------------------------------------------


def test_pipeline_in_process_matches_the_function_and_the_folder_is_self_contained(runs):
    from transformers import AutoTokenizer, pipeline

    for folder in ("hstu", "geniusrec"):
        path = str(runs / folder)
        assert {"item_titles.json", "pipeline_next_items.py", "recommendation.py", "README.md"} <= set(os.listdir(path))
        tokenizer = AutoTokenizer.from_pretrained(path)
        assert tokenizer.item_titles["1"] == "Movie 1 (2000)" or tokenizer.item_titles["1"].startswith("Movie 1")
        recommender = pipeline("next-items", model=path, trust_remote_code=True)
        one = recommender(["1", "2", "3"], k=4)
        model, tokenizer = load(path)
        assert one == recommend(model, tokenizer, [["1", "2", "3"]], k=4)[0]["items"]
        assert [r["item_id"] for r in one] and all(set(r) == {"item_id", "title", "score"} for r in one)
        batch = recommender([["1", "2", "3"], {"items": ["5"], "timestamps": [100]}], k=4)
        assert [r["item_id"] for r in batch[0]] == [r["item_id"] for r in one] and len(batch[1]) == 4  # scores: padding moves the 7th digit
        assert [r["score"] for r in batch[0]] == pytest.approx([r["score"] for r in one], abs=1e-4)
        card = open(os.path.join(path, "README.md")).read()
        assert card.startswith("---\n") and "library_name: transformers" in card and "model-index:" in card
        assert "trust_remote_code=True" in card and "timestamps" in card


def test_card_snippet_runs_as_written(runs, monkeypatch, capsys):
    import re

    for folder in ("hstu", "geniusrec"):
        card = open(runs / folder / "README.md").read()
        snippet = re.search(r"```python\n(.*?)```", card, re.S).group(1)
        monkeypatch.chdir(runs / folder / "..")
        exec(compile(snippet, f"{folder}/README.md", "exec"), {})
        assert "'item_id'" in capsys.readouterr().out


def test_folder_alone_runs_the_pipeline_without_the_package(runs, tmp_path):
    """A copy of the folder, a clean interpreter (`-I -S`) whose path holds only the dependencies' site-packages: the
    package cannot be imported, and the pipeline returns the same items as in process."""
    import site

    from transformers import pipeline

    for folder in ("hstu", "geniusrec"):
        copy = tmp_path / f"{folder}-copy"
        shutil.copytree(runs / folder, copy)
        expected = pipeline("next-items", model=str(copy), trust_remote_code=True)(["1", "2", "3"], k=4)
        script = (f"import sys; sys.path[:0] = {site.getsitepackages()!r}\n"
                  "try:\n    import modeling_geniusrec\n    raise SystemExit('the package is importable')\nexcept ImportError:\n    pass\n"
                  "import json\nfrom transformers import pipeline\n"
                  f"r = pipeline('next-items', model={str(copy)!r}, trust_remote_code=True)\n"
                  "print(json.dumps(r(['1', '2', '3'], k=4)))\n")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
        env["HF_MODULES_CACHE"] = str(tmp_path / "modules")
        result = subprocess.run([sys.executable, "-I", "-S", "-c", script], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        assert json.loads(result.stdout.strip().splitlines()[-1]) == json.loads(json.dumps(expected))
        torch.manual_seed(0)


def test_load_test_is_bounded_and_answers_every_request(runs, tmp_path):
    """benchmarks.serve_load: the server on loopback in its own process, stopped at the end; every request answered (or
    the run cut at --timeout, reporting what was answered)."""
    from benchmarks import serve_load

    rows = serve_load.main(["--model", str(runs / "hstu"), "--dataset", str(runs / "data"), "--requests", "40", "--concurrency", "4",
                            "--batch_wait_ms", "0", "2", "--output", str(tmp_path / "load.json")])
    assert [r["requests"] for r in rows] == [40, 40] and all(r["errors"] == 0 and not r["stopped_by_timeout"] for r in rows)
    cut = serve_load.main(["--model", str(runs / "hstu"), "--dataset", str(runs / "data"), "--requests", "4000", "--concurrency", "2",
                           "--batch_wait_ms", "0", "--timeout", "1"])[0]
    assert cut["stopped_by_timeout"] and 0 < cut["requests"] < 4000
    assert json.loads((tmp_path / "load.json").read_text())["rows"][1]["model_calls"] <= 40
