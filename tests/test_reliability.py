"""Failure behaviour: resume that resumes, outputs that never destroy what was there, stale temp folders cleaned."""

import os

import pytest

from data_scripts import movielens
from train import pretrain

from .fixtures import write_learnable_ml
from .test_pretrain import TINY


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("reliability")
    write_learnable_ml(root / "raw", users=40, items=40)
    movielens.main(["--raw_dir", str(root / "raw"), "--out", str(root / "data")])
    return root


def test_out_never_destroys_what_the_program_did_not_write(raw, tmp_path):
    unrelated = tmp_path / "notes"
    unrelated.mkdir()
    (unrelated / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a processed dataset"):
        movielens.main(["--raw_dir", str(raw / "raw"), "--out", str(unrelated)])
    assert (unrelated / "keep.txt").read_text() == "mine"
    # the raw-data folder itself: refused even with --overwrite, ratings kept
    ratings = sorted(os.listdir(raw / "raw"))
    for extra in ([], ["--overwrite"]):
        with pytest.raises(ValueError, match="holds the input|not a processed dataset"):
            movielens.main(["--raw_dir", str(raw / "raw"), "--out", str(raw / "raw"), *extra])
        assert sorted(os.listdir(raw / "raw")) == ratings
    a_file = tmp_path / "out.txt"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        movielens.main(["--raw_dir", str(raw / "raw"), "--out", str(a_file)])
    assert a_file.read_text() == "x"
    # --overwrite replaces an unrelated folder the user named; an earlier processed folder is replaced without it
    movielens.main(["--raw_dir", str(raw / "raw"), "--out", str(unrelated), "--overwrite"])
    movielens.main(["--raw_dir", str(raw / "raw"), "--out", str(unrelated)])
    assert (unrelated / "stats.json").exists() and not (unrelated / "keep.txt").exists()


def test_stale_temp_folders_of_killed_runs_are_removed(raw, tmp_path):
    out = tmp_path / "data"
    stale = tmp_path / ".data.tmp-999999999-deadbeef"  # a pid that does not exist: a killed run
    live = tmp_path / f".data.tmp-{os.getpid()}-cafe0000"  # a run in progress: kept
    stale.mkdir()
    live.mkdir()
    movielens.main(["--raw_dir", str(raw / "raw"), "--out", str(out)])
    assert not stale.exists() and live.exists() and (out / "stats.json").exists()


def test_pairs_out_never_deletes_a_dataset(raw):
    from train import build_preference_pairs

    before = sorted(os.listdir(raw / "data"))
    with pytest.raises(FileExistsError, match="not a preference-pairs folder"):
        build_preference_pairs.main(["--model", "unused", "--dataset", str(raw / "data"), "--out", str(raw / "data")])
    assert sorted(os.listdir(raw / "data")) == before


def test_pretrain_resumes_where_it_stopped(raw, tmp_path):
    """A run stopped after epoch 2 and resumed from its checkpoint ends exactly where an uninterrupted run ends. The
    resumed call uses another seed, so a resume that silently started over would give different weights."""
    common = ["--dataset", str(raw / "data"), "--num_train_epochs", "3", "--keep_checkpoints", "true", "--data_seed", "42",
              "--save_total_limit", "5", "--load_best_model_at_end", "false", *TINY]
    full = pretrain.main([*common, "--output_dir", str(tmp_path / "full")])
    checkpoints = sorted((tmp_path / "full").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert len(checkpoints) == 3
    resumed = pretrain.main([*common, "--output_dir", str(tmp_path / "resumed"), "--seed", "7",
                             "--resume_from_checkpoint", str(checkpoints[1])])
    assert resumed["resumed_from"] == str(checkpoints[1])
    for split in ("validation", "test"):
        for key, value in full["metrics"][split].items():
            if "@" not in key and key != "mrr":
                continue  # runtimes
            assert resumed["metrics"][split][key] == pytest.approx(value, abs=1e-6), (split, key)
    from safetensors.torch import load_file

    weights_full, weights_resumed = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "resumed" / "model.safetensors")
    for name, tensor in weights_full.items():
        assert (weights_resumed[name] - tensor).abs().max() < 1e-6, name  # the same final weights, not a seed-7 restart
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        pretrain.main([*common, "--output_dir", str(tmp_path / "empty"), "--resume_from_checkpoint", "true"])


def test_resume_auto_is_one_command_for_the_first_start_and_every_continuation(raw, tmp_path):
    import shutil

    common = ["--dataset", str(raw / "data"), "--num_train_epochs", "3", "--keep_checkpoints", "true", "--data_seed", "42",
              "--save_total_limit", "5", "--load_best_model_at_end", "false", *TINY, "--resume_from_checkpoint", "auto"]
    first = pretrain.main([*common, "--output_dir", str(tmp_path / "run")])
    assert first["resumed_from"] is None  # nothing to continue: a fresh start
    checkpoints = sorted((tmp_path / "run").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    shutil.rmtree(checkpoints[-1])  # as if killed after epoch 2
    (tmp_path / "run" / "model.safetensors").unlink()
    again = pretrain.main([*common, "--output_dir", str(tmp_path / "run")])
    assert again["resumed_from"] == str(checkpoints[1]) and again["epochs"] == 3
    assert again["metrics"]["test"]["ndcg@10"] == pytest.approx(first["metrics"]["test"]["ndcg@10"], abs=1e-6)
    done = [a if a != "true" else "false" for a in common]  # keep_checkpoints false: a finished run leaves no checkpoint
    pretrain.main([*done[:-2], "--output_dir", str(tmp_path / "done")])
    with pytest.raises(FileExistsError, match="finished run"):
        pretrain.main([*done, "--output_dir", str(tmp_path / "done")])


def test_resume_in_the_patience_window_stops_where_an_uninterrupted_run_stops(raw, tmp_path):
    """Early stopping's patience counter is training state: a run resumed from a checkpoint saved after the best
    epoch (counter > 0) must stop at the same epoch, with the same best epoch, as the uninterrupted run. Before the
    fix the counter restarted at 0 on every resumption, so the resumed run trained `counter` epochs longer."""
    common = ["--dataset", str(raw / "data"), "--num_train_epochs", "30", "--keep_checkpoints", "true", "--data_seed", "42",
              "--save_total_limit", "40", *TINY, "--early_stopping_patience", "3", "--learning_rate", "0.05"]
    full = pretrain.main([*common, "--output_dir", str(tmp_path / "full")])
    assert full["stopped_by"] == "early_stopping", "the fixture must stop early for this test to mean anything"
    best, last = full["best_epoch"], full["epochs"]
    assert last - best == 3
    checkpoints = sorted((tmp_path / "full").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    steps_per_epoch = int(checkpoints[0].name.split("-")[1])
    inside = tmp_path / "full" / f"checkpoint-{steps_per_epoch * int(best + 2)}"  # two epochs without a gain: counter 2
    assert inside.is_dir()
    resumed = pretrain.main([*common, "--output_dir", str(tmp_path / "resumed"), "--seed", "7", "--resume_from_checkpoint", str(inside)])
    assert resumed["epochs"] == last and resumed["best_epoch"] == best
    assert resumed["stopped_by"] == "early_stopping"
    assert resumed["metrics"]["test"]["ndcg@10"] == pytest.approx(full["metrics"]["test"]["ndcg@10"], abs=1e-6)
    # time covers the whole run across resumptions (issue 30): the checkpoint's clock carries on, not restarts
    import json

    before = max(e.get("elapsed_s", 0) for e in json.loads((inside / "trainer_state.json").read_text())["log_history"])
    assert before > 0
    assert resumed["wall_time_s"] >= before + resumed["segment_wall_time_s"] - 0.15  # both rounded to 0.1 s
    # wall_time_s is rounded to 0.1 s and seconds_per_epoch to 0.01 s, each from the unrounded total: that much apart
    assert resumed["seconds_per_epoch"] == pytest.approx(resumed["wall_time_s"] / resumed["epochs"], abs=0.05 / resumed["epochs"] + 0.0051)
    stamps = [e["elapsed_s"] for e in resumed["eval_history"] if "elapsed_s" in e]
    assert stamps == sorted(stamps) and stamps[-1] > before  # the resumed segment's evaluations continue the clock


def test_wrong_checkpoints_are_refused_with_a_fix(raw, tmp_path):
    import json
    import shutil

    from train import evaluate, finetune

    run = tmp_path / "hstu"
    pretrain.main(["--dataset", str(raw / "data"), "--output_dir", str(run), "--num_train_epochs", "1", *TINY])
    assert "catalog_fingerprint" in json.loads((run / "config.json").read_text())
    # model_type edited: the weights no longer match the config
    edited = tmp_path / "edited"
    shutil.copytree(run, edited)
    config = json.loads((edited / "config.json").read_text())
    config["model_type"] = "sasrec"
    (edited / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="weights do not match"):
        evaluate.main(["--model", str(edited), "--dataset", str(raw / "data")])
    # a dataset with another catalog
    other_raw = tmp_path / "other_raw"
    write_learnable_ml(other_raw, users=30, items=35)
    movielens.main(["--raw_dir", str(other_raw), "--out", str(tmp_path / "other")])
    with pytest.raises(ValueError, match="another item catalog|vocabulary of"):
        evaluate.main(["--model", str(run), "--dataset", str(tmp_path / "other")])
    # a GeniusRec checkpoint is not an encoder
    stage2 = tmp_path / "stage2"
    finetune.main(["--dataset", str(raw / "data"), "--encoder_path", str(run), "--output_dir", str(stage2), "--num_train_epochs", "1",
                   "--max_length", "20", "--disable_tqdm", "true", "--num_attention_heads", "2", "--intermediate_size", "16"])
    with pytest.raises(ValueError, match="'geniusrec' checkpoint; this command takes hstu"):
        finetune.main(["--dataset", str(raw / "data"), "--encoder_path", str(stage2), "--output_dir", str(tmp_path / "x")])
    with pytest.raises(ValueError, match="not a checkpoint folder"):
        evaluate.main(["--model", str(tmp_path), "--dataset", str(raw / "data")])


def test_recommend_names_unknown_users_and_serves_geniusrec(raw, tmp_path, capsys):
    from train import finetune, recommend

    run = tmp_path / "hstu"
    pretrain.main(["--dataset", str(raw / "data"), "--output_dir", str(run), "--num_train_epochs", "1", *TINY])
    with pytest.raises(ValueError, match="unknown user ids"):
        recommend.main(["--model", str(run), "--dataset", str(raw / "data"), "--users", "999999"])
    stage2 = tmp_path / "stage2"
    finetune.main(["--dataset", str(raw / "data"), "--encoder_path", str(run), "--output_dir", str(stage2), "--num_train_epochs", "1",
                   "--max_length", "20", "--disable_tqdm", "true", "--num_attention_heads", "2", "--intermediate_size", "16"])
    capsys.readouterr()
    recommend.main(["--model", str(stage2), "--dataset", str(raw / "data"), "--num_users", "2", "--k", "4"])
    full = capsys.readouterr().out
    assert full.count("  4. ") == 2
    recommend.main(["--model", str(stage2), "--dataset", str(raw / "data"), "--num_users", "2", "--k", "4", "--candidate_count", "14"])
    assert capsys.readouterr().out.count("  4. ") == 2  # the two-stage decode serves the same command
    with pytest.raises(SystemExit):
        recommend.main(["--model", str(run), "--dataset", str(raw / "data"), "--candidate_count", "14"])
    assert "--candidate_count is a GeniusRec decode" in capsys.readouterr().err


def test_model_entry_points_give_a_clear_error_or_a_correct_result():
    """Random shapes, dtypes, NaN/inf and out-of-range values: a ValueError naming the argument, or finite outputs."""
    import torch
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from modeling_geniusrec import GeniusRecConfig, GeniusRecForSessionGeneration, HSTUConfig, HSTUForNextItemPrediction

    vocab = 30
    config = HSTUConfig(vocab_size=vocab, hidden_size=8, qk_head_dim=4, v_head_dim=4, max_position_embeddings=10, num_negatives=8)
    torch.manual_seed(0)
    hstu = HSTUForNextItemPrediction(config).eval()
    genius = GeniusRecForSessionGeneration(GeniusRecConfig(encoder_config=config, num_attention_heads=2, intermediate_size=8,
                                                           max_session_length=4)).eval()

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.data())
    def check(data):
        b, n = data.draw(st.integers(0, 3)), data.draw(st.integers(0, 12))
        ids = torch.randint(-2, vocab + 3, (b, n)) if data.draw(st.booleans()) else torch.randint(4, vocab, (b, n))
        if data.draw(st.booleans()):
            ids = ids.float()
        times = data.draw(st.sampled_from(["ok", "none", "float_nan", "wrong_shape"]))
        ts = {"ok": torch.arange(b * n).view(b, n) * 60, "none": None, "float_nan": torch.full((b, n), float("nan")),
              "wrong_shape": torch.zeros(b, n + 1, dtype=torch.long)}[times]
        request = torch.full((b,), 10**6) if data.draw(st.booleans()) else None
        k = data.draw(st.integers(-1, vocab + 2))
        try:
            out = hstu(ids, timestamps=ts, next_timestamps=request)
        except ValueError:
            return
        assert torch.isfinite(out.user_embeddings).all()
        users = out.user_embeddings.clone()
        if data.draw(st.booleans()) and users.numel():
            users[0, 0] = float("nan")
        try:
            _, top = hstu.top_k_items(users, k, exclude=ids.long())
        except ValueError:
            pass
        else:
            assert top.shape == (b, k) and bool(((top >= 4) & (top < vocab)).all())
        labels = torch.randint(-1, vocab + 2, (b, 3)) if data.draw(st.booleans()) else torch.randint(4, vocab, (b, 3))
        try:
            loss = genius(input_ids=ids, timestamps=ts, next_timestamps=request, labels=labels).loss
        except ValueError:
            return
        assert torch.isfinite(loss)

    check()


def test_movielens_reader_fuzz_counts_or_names_the_file_and_line(tmp_path_factory):
    """Random bytes, random field types, extreme numbers, BOMs and CRLF in ratings.dat / movies.dat: the only outcomes
    are a processed folder with the bad rows counted, or a ValueError naming the file (and the first bad lines)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    good = [f"{u}::{i}::4::{978300000 + 60 * (u * 10 + i)}" for u in range(1, 9) for i in range(1, 9)]
    field_values = st.one_of(st.integers(-10**30, 10**30).map(str), st.sampled_from(["inf", "-inf", "nan", "1e20", "1e30", "true", "", " ",
                                                                                     "Toy Story (1995)"]),
                             st.text(max_size=8))
    bad_line = st.one_of(st.lists(field_values, min_size=1, max_size=6).map("::".join), st.binary(max_size=30).map(lambda b: b.decode("latin-1")))

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(bad_ratings=st.lists(bad_line, max_size=6), bad_movies=st.lists(bad_line, max_size=3), bom=st.booleans(), crlf=st.booleans(),
           tolerance=st.sampled_from(["0", "0.5"]))
    def check(bad_ratings, bad_movies, bom, crlf, tolerance):
        root = tmp_path_factory.mktemp("fuzz")
        end = "\r\n" if crlf else "\n"
        lines = good + [line.replace("\n", " ").replace("\r", " ") for line in bad_ratings]
        text = ("\ufeff" if bom else "") + end.join(lines) + end
        (root / "raw").mkdir()
        (root / "raw" / "ratings.dat").write_bytes(text.encode("latin-1", errors="replace") if not bom else text.encode("utf-8"))
        movies = [f"{i}::Movie {i} (1995)::Comedy" for i in range(1, 9)] + [line.replace("\n", " ").replace("\r", " ") for line in bad_movies]
        (root / "raw" / "movies.dat").write_bytes((end.join(movies) + end).encode("latin-1", errors="replace"))
        try:
            stats = movielens.main(["--raw_dir", str(root / "raw"), "--out", str(root / "out"), "--max_malformed_fraction", tolerance])
        except ValueError as err:
            assert str(root / "raw") in str(err) and ("line" in str(err) or "interaction" in str(err)), str(err)
            return
        assert stats["interactions"] >= 1 and stats["malformed_rows"] <= len(bad_ratings) + 1

    check()


def test_amazon_reader_fuzz_counts_or_names_the_file(tmp_path_factory):
    """Random field types (lists, ints, booleans, huge numbers) and broken lines in both Amazon files, a non-gzip
    `.gz` and a truncated one: counted as malformed, or a ValueError naming the file; never a deep traceback."""
    import gzip
    import json

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from data_scripts import amazon_reviews

    from .fixtures import write_amazon

    rows = [(f"u{u}", f"i{i}", 5.0, 1_600_000_000_000 + 1000 * (u * 10 + i)) for u in range(6) for i in range(6)]
    odd = st.one_of(st.none(), st.booleans(), st.integers(-10**40, 10**40), st.floats(allow_nan=True), st.text(max_size=5),
                    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
    review = st.fixed_dictionaries({"user_id": st.one_of(st.just("u1"), odd), "parent_asin": st.one_of(st.just("i1"), odd),
                                    "rating": st.one_of(st.just(5.0), odd), "timestamp": st.one_of(st.just(1_600_000_000_000), odd)})
    meta = st.fixed_dictionaries({"parent_asin": st.one_of(st.just("i2"), odd), "title": odd, "images": odd, "categories": odd,
                                  "features": odd})

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(reviews=st.lists(review, max_size=5), metas=st.lists(meta, max_size=4), bom=st.booleans())
    def check(reviews, metas, bom):
        root = tmp_path_factory.mktemp("amazon")
        write_amazon(root / "raw", rows, [f"i{i}" for i in range(6)], broken_lines=[json.dumps(r) for r in reviews] + ["{not json"])
        with gzip.open(root / "raw" / "meta_Books.jsonl.gz", "at") as f:
            for m in metas:
                f.write(json.dumps(m) + "\n")
        if bom:
            data = gzip.open(root / "raw" / "Books.jsonl.gz").read()
            with gzip.open(root / "raw" / "Books.jsonl.gz", "wb") as f:
                f.write(b"\xef\xbb\xbf" + data)
        args = ["--reviews", str(root / "raw" / "Books.jsonl.gz"), "--meta", str(root / "raw" / "meta_Books.jsonl.gz"), "--out",
                str(root / "out"), "--user_k", "1", "--item_k", "1", "--workers", "1", "--quiet", "--max_malformed_fraction", "0.5"]
        try:
            stats = amazon_reviews.main(args)
        except ValueError as err:
            assert "Books.jsonl.gz" in str(err), str(err)
            return
        assert stats["users"] >= 6 and stats["malformed_rows"] >= 1

    check()
    root = tmp_path_factory.mktemp("amazon-broken")
    write_amazon(root / "raw", rows, ["i1"])
    plain = root / "raw" / "plain.jsonl.gz"
    plain.write_text('{"user_id": "u"}\n')
    with pytest.raises(ValueError, match="plain.jsonl.gz: not a gzip file"):
        amazon_reviews.main(["--reviews", str(plain), "--out", str(root / "o1"), "--quiet"])
    truncated = root / "raw" / "cut.jsonl.gz"
    truncated.write_bytes((root / "raw" / "Books.jsonl.gz").read_bytes()[:-20])
    with pytest.raises(ValueError, match="cut.jsonl.gz: the file is truncated or corrupt"):
        amazon_reviews.main(["--reviews", str(truncated), "--out", str(root / "o2"), "--quiet", "--workers", "1"])


def test_finetune_and_dpo_resume_where_they_stopped(raw, tmp_path):
    """Stage 2 and stage 3, like stage 1: resumed from a mid-run checkpoint (with another seed, so a restart would
    show), they end with the same weights as an uninterrupted run."""
    from safetensors.torch import load_file

    from train import build_preference_pairs, dpo, finetune

    def same_weights(a, b):
        wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
        assert set(wa) == set(wb)
        for name, tensor in wa.items():
            assert (wb[name] - tensor).abs().max() < 1e-6, name

    stage1 = tmp_path / "hstu"
    pretrain.main(["--dataset", str(raw / "data"), "--output_dir", str(stage1), "--num_train_epochs", "1", *TINY])
    common = ["--dataset", str(raw / "data"), "--encoder_path", str(stage1), "--num_train_epochs", "3", "--max_length", "20",
              "--disable_tqdm", "true", "--num_attention_heads", "2", "--intermediate_size", "16", "--keep_checkpoints", "true",
              "--data_seed", "42", "--save_total_limit", "5", "--load_best_model_at_end", "false", "--dropout", "0.0"]
    finetune.main([*common, "--output_dir", str(tmp_path / "full")])
    checkpoints = sorted((tmp_path / "full").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    resumed = finetune.main([*common, "--output_dir", str(tmp_path / "resumed"), "--seed", "7", "--resume_from_checkpoint", str(checkpoints[1])])
    assert resumed["resumed_from"] == str(checkpoints[1])
    same_weights(tmp_path / "full", tmp_path / "resumed")

    build_preference_pairs.main(["--model", str(tmp_path / "full"), "--dataset", str(raw / "data"), "--out", str(tmp_path / "pairs"),
                                 "--items_per_session", "3", "--num_candidates", "3", "--margin", "0.0", "--max_length", "10", "--quiet"])
    args = ["--model", str(tmp_path / "full"), "--pairs", str(tmp_path / "pairs"), "--max_steps", "4", "--per_device_train_batch_size", "8",
            "--learning_rate", "0.01", "--save_strategy", "steps", "--save_steps", "2", "--disable_tqdm", "true", "--data_seed", "42",
            "--use_peft", "true", "--lora_r", "4", "--keep_checkpoints", "true"]  # LoRA's init depends on the seed: a restart would show
    dpo.main([*args, "--output_dir", str(tmp_path / "dpo-full")])
    dpo.main([*args, "--output_dir", str(tmp_path / "dpo-resumed"), "--seed", "7",
              "--resume_from_checkpoint", str(tmp_path / "dpo-full" / "checkpoint-2")])
    same_weights(tmp_path / "dpo-full" / "merged", tmp_path / "dpo-resumed" / "merged")
    # without --keep_checkpoints a successful run leaves no pickled resume state behind
    dpo.main([*args[:-2], "--output_dir", str(tmp_path / "dpo-clean")])
    left = sorted(p.name for p in (tmp_path / "dpo-clean").iterdir())
    assert not [name for name in left if name.startswith("checkpoint-") or name.endswith((".pt", ".pth", ".bin"))], left
    assert "merged" in left and "dpo_summary.json" in left


def test_resume_skips_a_checkpoint_cut_short(raw, tmp_path):
    """A save cut short (disk full, killed) leaves a checkpoint folder without trainer_state.json or with a truncated
    weights file: `--resume_from_checkpoint true` skips it with a note and resumes from the newest complete one;
    naming it directly is refused with the reason."""
    import shutil

    from train.runner import checkpoint_problem

    common = ["--dataset", str(raw / "data"), "--num_train_epochs", "2", "--keep_checkpoints", "true", "--save_total_limit", "5",
              "--load_best_model_at_end", "false", *TINY]
    pretrain.main([*common, "--output_dir", str(tmp_path / "run")])
    checkpoints = sorted((tmp_path / "run").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    good = checkpoints[-1]
    broken = tmp_path / "run" / f"checkpoint-{int(good.name.split('-')[1]) * 10}"
    shutil.copytree(good, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    assert "truncated" in checkpoint_problem(str(broken))
    no_state = tmp_path / "run" / f"checkpoint-{int(good.name.split('-')[1]) * 20}"
    shutil.copytree(good, no_state)
    (no_state / "trainer_state.json").unlink()
    assert checkpoint_problem(str(no_state)) == "no trainer_state.json" and checkpoint_problem(str(good)) is None
    resumed = pretrain.main([*common, "--output_dir", str(tmp_path / "run"), "--num_train_epochs", "3", "--resume_from_checkpoint", "true"])
    assert resumed["resumed_from"] == str(good)
    with pytest.raises(ValueError, match="truncated or unreadable"):
        pretrain.main([*common, "--output_dir", str(tmp_path / "other"), "--resume_from_checkpoint", str(broken)])


def test_a_second_run_on_the_same_output_dir_refuses_at_start(raw, tmp_path):
    """A lock file (pid, host, command) in --output_dir: a live owner makes a second run refuse at once, naming it; a
    lock whose process has ended is stale and replaced; the lock is gone after the run."""
    import json
    import socket

    out = tmp_path / "run"
    out.mkdir()
    lock = out / ".geniusrec.lock"
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "2026-12-05 10:00:00", "command": "python -m train.x"}))
    args = ["--dataset", str(raw / "data"), "--output_dir", str(out), "--num_train_epochs", "1", *TINY]
    with pytest.raises(FileExistsError, match=f"in use by another run \\(pid {os.getpid()}"):
        pretrain.main(args)
    assert lock.exists() and not list(out.glob("checkpoint-*"))  # the other run's lock and folder untouched
    lock.write_text(json.dumps({"pid": 999999999, "host": socket.gethostname(), "started": "x", "command": "y"}))  # ended
    pretrain.main(args)
    assert not lock.exists() and (out / "model.safetensors").exists()


def test_results_writes_leave_no_temp_file(tmp_path):
    """write_json_atomic removes its temp file when the write fails, and the temp files of killed writers (their pid
    gone) at the next write; the target keeps its old content on failure."""
    from train.evaluation.results import write_json_atomic

    target = tmp_path / "out.json"
    write_json_atomic(str(target), {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(str(target), {"a": object()})  # JSON cannot hold it: fails halfway through the write
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"] and target.read_text().strip().startswith("{")
    stale = tmp_path / ".out.json.999999999.abc.tmp"
    stale.write_text("{")
    other = tmp_path / "notes.tmp"  # not ours: kept
    other.write_text("mine")
    write_json_atomic(str(target), {"a": 2})
    assert not stale.exists() and other.exists()


def test_joining_recommendation_parts_leaves_no_temp_file_when_a_part_is_missing(tmp_path):
    """train.recommend joins its part files through the same atomic write as every results file: a failure halfway
    (here a part gone) leaves neither a half output nor a temp file, whatever the format."""
    from train.recommend import join_parts, rows_of, write_table

    first = tmp_path / "part-00000.jsonl"
    first.write_text('{"user_id": "1"}\n')
    for name in ("out.jsonl", "out.parquet"):
        if name.endswith(".parquet"):
            write_table(rows_of([]), str(tmp_path / "part-00000.parquet"))
            first = tmp_path / "part-00000.parquet"
        with pytest.raises(FileNotFoundError):
            join_parts([str(first), str(tmp_path / f"gone{first.suffix}")], str(tmp_path / name))
        assert not (tmp_path / name).exists() and not list(tmp_path.glob(f".{name}.*"))


def test_bad_training_values_are_one_line_errors(raw, tmp_path, capsys):
    for flag, value in (("--per_device_train_batch_size", "0"), ("--learning_rate", "-1"), ("--num_train_epochs", "0")):
        with pytest.raises(SystemExit):
            pretrain.main(["--dataset", str(raw / "data"), "--output_dir", str(tmp_path), *TINY, flag, value])
        assert flag in capsys.readouterr().err


def test_a_bad_label_is_named_as_a_label():
    import torch

    from modeling_geniusrec import GeniusRecConfig, GeniusRecForSessionGeneration, HSTUConfig

    model = GeniusRecForSessionGeneration(GeniusRecConfig(encoder_config=HSTUConfig(vocab_size=20, hidden_size=8, qk_head_dim=4, v_head_dim=4,
                                                                                     max_position_embeddings=6, use_time_bias=False)))
    with pytest.raises(ValueError, match="^labels must be item token ids"):
        model(input_ids=torch.tensor([[5, 6, 7]]), labels=torch.tensor([[8, -5, 2]]))


def test_a_user_mistake_is_one_line_and_a_bug_keeps_its_traceback(raw, tmp_path, capsys):
    """Every entry point runs under run_cli: a mistake ends in `error: ...` (exit code 2), --debug shows the
    traceback; a real command line goes through the same path."""
    import subprocess
    import sys

    from data_scripts.arguments import run_cli
    from train import evaluate

    assert run_cli(evaluate.main, ["--model", str(tmp_path / "nothing"), "--dataset", str(raw / "data")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "not a checkpoint folder" in err[0]
    with pytest.raises(ValueError):
        run_cli(evaluate.main, ["--model", str(tmp_path / "nothing"), "--dataset", str(raw / "data"), "--debug"])

    def bug(argv):
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        run_cli(bug, [])
    broken = tmp_path / "ckpt"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "hst')
    assert run_cli(evaluate.main, ["--model", str(broken), "--dataset", str(raw / "data")]) == 2
    assert f"{broken / 'config.json'}: not valid JSON" in capsys.readouterr().err
    done = subprocess.run([sys.executable, "-m", "train.evaluate", "--model", str(tmp_path / "nothing"), "--dataset", str(raw / "data")],
                          capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stderr.strip().startswith("error: ")


def test_content_tables_are_tied_to_their_catalog(raw, tmp_path, capsys):
    """An embeddings file of another catalog (other row count, or another fingerprint) or a truncated one is refused
    by every reader with a message naming the file and the fix."""
    import shutil

    import torch
    from safetensors.torch import save_file

    from data_scripts.arguments import run_cli
    from data_scripts.processed import load_item_embeddings, load_processed
    from train import evaluate

    data = tmp_path / "data"
    shutil.copytree(raw / "data", data)
    vocab = len(load_processed(str(data))[2])
    (data / "embeddings").mkdir(exist_ok=True)
    save_file({"embeddings": torch.randn(vocab + 7, 8)}, str(data / "embeddings" / "wrong-rows.safetensors"))
    save_file({"embeddings": torch.randn(vocab, 8)}, str(data / "embeddings" / "other.safetensors"), metadata={"catalog_fingerprint": "0123abcd"})
    (data / "embeddings" / "cut.safetensors").write_bytes(b"\x10\x00\x00")
    with pytest.raises(ValueError, match=f"has {vocab + 7} rows but .* has {vocab} tokens"):
        load_item_embeddings(str(data), "wrong-rows.safetensors")
    with pytest.raises(ValueError, match="another item catalog"):
        load_item_embeddings(str(data), "other.safetensors")
    with pytest.raises(ValueError, match="cut.safetensors: truncated"):
        load_item_embeddings(str(data), "cut.safetensors")
    assert run_cli(evaluate.main, ["--baseline", "content_knn", "--content_embeddings", "wrong-rows.safetensors", "--dataset", str(data)]) == 2
    assert "wrong-rows.safetensors has" in capsys.readouterr().err


def test_more_mistakes_are_named():
    """From trying mistakes as a new user: a negative --num_negatives failed deep in torch, a missing local text model
    path with transformers' hub-id message."""
    from data_scripts.embedders import load_text_model
    from modeling_geniusrec import HSTUConfig

    with pytest.raises(ValueError, match="num_negatives must be >= 1"):
        HSTUConfig(num_negatives=-5)
    HSTUConfig(num_negatives=0, loss_type="full_softmax")  # unused by the full softmax: fine
    with pytest.raises(FileNotFoundError, match="text model '/no/such/model' not found"):
        load_text_model("/no/such/model")


def test_flag_typos_and_bad_counts_are_refused(raw, capsys):
    """argparse's prefix matching took --num_beam for --num_beams; --max_users -3 silently scored all but 3 users."""
    from train import evaluate

    for argv, message in ((["--num_beam", "5"], "unrecognized arguments: --num_beam"), (["--max_users", "-3"], "--max_users must be >= 1"),
                          (["--alternatives", "1"], "--alternatives must be 0")):
        with pytest.raises(SystemExit):
            evaluate.main(["--baseline", "popularity", "--dataset", str(raw / "data"), *argv])
        assert message in capsys.readouterr().err


def test_a_checkpoint_with_nan_weights_is_named(raw, tmp_path):
    """It used to be reported as bad targets, far from the cause."""
    from safetensors.torch import load_file, save_file

    from train.runner import load_checkpoint

    pretrain.main(["--dataset", str(raw / "data"), "--output_dir", str(tmp_path / "run"), "--num_train_epochs", "1", *TINY])
    weights = load_file(tmp_path / "run" / "model.safetensors")
    name = sorted(weights)[0]
    weights[name][0] = float("nan")
    save_file(weights, str(tmp_path / "run" / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="hold NaN or infinite values"):
        load_checkpoint(str(tmp_path / "run"))


def test_resume_auto_recovers_from_a_kill_during_the_first_save(raw, tmp_path, monkeypatch):
    """Killed while writing the first checkpoint: the folder holds only a checkpoint without trainer_state.json. The
    same `auto` command must start over (with a note) and finish; before, it skipped the checkpoint and exited, so a
    scheduler repeating the command failed forever."""
    from transformers import Trainer

    args = ["--dataset", str(raw / "data"), "--num_train_epochs", "2", "--output_dir", str(tmp_path / "run"), *TINY,
            "--resume_from_checkpoint", "auto"]
    real = Trainer._save_optimizer_and_scheduler

    def killed(self, output_dir):
        real(self, output_dir)
        raise KeyboardInterrupt  # after the weights and optimizer, before trainer_state.json: a save cut short

    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", killed)
    with pytest.raises(KeyboardInterrupt):
        pretrain.main(args)
    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", real)
    cut = list((tmp_path / "run").glob("checkpoint-*"))
    assert len(cut) == 1 and not (cut[0] / "trainer_state.json").exists() and (cut[0] / "model.safetensors").exists()
    done = pretrain.main(args)
    assert done["resumed_from"] is None and done["epochs"] == 2
    assert (tmp_path / "run" / "model.safetensors").exists()


def test_resume_refuses_another_runs_checkpoint_before_loading_it(raw, tmp_path, monkeypatch):
    """A folder holding an HSTU run's checkpoints: a SASRec command, the same command on another dataset, and the same
    command with another hidden size are each refused in one line naming what the folder holds and what the command
    asks, before the Trainer loads any weight (it loads non-strictly); the matching command still resumes."""
    from transformers import Trainer

    other = tmp_path / "other"
    write_learnable_ml(other / "raw", users=30, items=25)
    movielens.main(["--raw_dir", str(other / "raw"), "--out", str(other / "data")])
    common = [*TINY, "--num_train_epochs", "1", "--keep_checkpoints", "true", "--output_dir", str(tmp_path / "run"),
              "--resume_from_checkpoint", "auto"]
    pretrain.main(["--dataset", str(raw / "data"), *common])
    assert list((tmp_path / "run").glob("checkpoint-*"))

    def never(self, *a, **k):
        raise AssertionError("a checkpoint of another run was loaded")

    monkeypatch.setattr(Trainer, "_load_from_checkpoint", never)
    cases = [(["--dataset", str(raw / "data"), "--model_type", "sasrec"], "holds a hstu run .* trains a sasrec run.*another model type"),
             (["--dataset", str(other / "data")], "another dataset \\(catalog fingerprint\\)"),
             (["--dataset", str(raw / "data"), "--hidden_size", "24"], "another config shape \\(hidden_size 16 vs 24")]
    for extra, message in cases:
        with pytest.raises(ValueError, match=message):
            pretrain.main([*common, *extra, "--num_train_epochs", "2"])
    monkeypatch.undo()
    again = pretrain.main(["--dataset", str(raw / "data"), *common, "--num_train_epochs", "2"])
    assert again["resumed_from"] and again["epochs"] == 2
