"""No leakage, ever: every training example (stage 1, stage 2, streamed rows, preference pairs, popularity counts)
takes its inputs AND labels from the train view of the protocol only.

The synthetic store encodes (user, position) in every item id and every timestamp, so each token a dataset hands
out can be traced back to where it came from; hypothesis draws the users' lengths, the protocol's k and the
session length, and every dataset is read many times (stage 2 draws a new split point on every read).
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_scripts.processed import NextItemDataset, SessionTrainingDataset, streaming_train_examples
from data_scripts.splits import PROTOCOLS, SequenceStore, split_bounds
from train.build_preference_pairs import pair_users, reference_examples
from train.evaluation.sessions import item_user_counts

# protocols that cut each user's row by its length; cold-items also removes items and has its own property test
# (tests/test_content.py::test_cold_items_protocol_never_trains_on_a_cold_item)
ROW_PROTOCOLS = tuple(p for p in PROTOCOLS if p != "cold-items")
FIRST_ITEM = 4  # token ids below are special tokens (EOS = 2)
EOS = 2
TIME_STEP = 1000


def synthetic_store(lengths):
    """User u's item at position p is token `FIRST_ITEM + offset[u] + p`, at time `TIME_STEP * (offset[u] + p) + 1`."""
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = np.arange(offsets[-1], dtype=np.int64)
    store = SequenceStore(user_ids=[f"u{i}" for i in range(len(lengths))], offsets=offsets,
                          item_ids=(FIRST_ITEM + flat).astype(np.int32), timestamps=TIME_STEP * flat + 1)
    return store, offsets


def where(offsets, token=None, time=None):
    """(user, position) of an item token or of a timestamp."""
    flat = int(token) - FIRST_ITEM if token is not None else (int(time) - 1) // TIME_STEP
    user = int(np.searchsorted(offsets, flat, side="right") - 1)
    return user, flat - int(offsets[user])


def train_end(length, protocol, k):
    cut = split_bounds(length, "train", protocol, k)
    return None if cut is None else cut[0]


def assert_inside(offsets, user, end, tokens=(), times=(), what=""):
    for token in tokens:
        if int(token) == EOS:
            continue
        u, p = where(offsets, token=token)
        assert u == user and p < end, f"{what}: token of (user {u}, position {p}) for user {user} whose train view ends at {end}"
    for time in times:
        u, p = where(offsets, time=time)
        assert u == user and p < end, f"{what}: time of (user {u}, position {p}) for user {user} whose train view ends at {end}"


lengths_strategy = st.lists(st.integers(min_value=1, max_value=45), min_size=1, max_size=10)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lengths=lengths_strategy, k=st.sampled_from([1, 2, 5, 10]), target_length=st.sampled_from([1, 3, 10]),
       max_length=st.sampled_from([2, 7, 200]), seed=st.integers(0, 2**16))
def test_training_examples_never_read_at_or_beyond_the_train_view(lengths, k, target_length, max_length, seed):
    store, offsets = synthetic_store(lengths)
    np.random.seed(seed)
    for protocol in ROW_PROTOCOLS:
        ends = {u: train_end(n, protocol, k) for u, n in enumerate(lengths)}
        # stage 1: input_ids, labels, their times and the request time
        stage1 = NextItemDataset(store, "train", max_length, protocol, k)
        for i in range(len(stage1)):
            user, ex = int(stage1.users[i]), stage1[i]
            assert_inside(offsets, user, ends[user], [*ex["input_ids"], *ex["labels"]], [*ex["timestamps"], ex["next_timestamp"]],
                          f"stage 1 ({protocol})")
        # stage 2: a fresh split point on every read, 30 reads per user
        stage2 = SessionTrainingDataset(store, max_length, target_length, protocol, EOS, k, samples_per_user=30)
        for i in range(len(stage2)):
            user, ex = int(stage2.users[i % len(stage2.users)]), stage2[i]
            assert_inside(offsets, user, ends[user], [*ex["input_ids"], *ex["session_labels"]],
                          [*ex["timestamps"], ex["next_timestamp"]], f"stage 2 ({protocol})")
            labels = list(ex["session_labels"])
            # EOS only after a complete session; a session cut by the end of the train view has none
            assert (labels[-1] == EOS) == (len(labels) == target_length + 1)
        # preference pairs: prompt, its times, the request time, the banned history and the reference session
        for ex in reference_examples(store, pair_users(store, protocol, k, target_length, num_users=100, seed=seed), target_length, max_length):
            user = ex["user"]
            assert_inside(offsets, user, ends[user], [*ex["input_ids"], *ex["seen_items"], *ex["reference"]],
                          [*ex["timestamps"], ex["next_timestamp"]], f"preference pairs ({protocol})")
        # popularity / novelty counts (rewards, baselines): only train-view interactions count
        counts, _ = item_user_counts(store, protocol, k, FIRST_ITEM + int(offsets[-1]))
        for token in np.flatnonzero(counts):
            user, position = where(offsets, token=token)
            assert ends[user] is not None and position < ends[user], f"popularity counts item at (user {user}, position {position})"


@pytest.mark.parametrize("protocol", ROW_PROTOCOLS)
def test_streamed_training_rows_stay_inside_the_train_view(protocol):
    import datasets

    lengths = [1, 2, 3, 5, 12, 22, 23, 24, 40]
    store, offsets = synthetic_store(lengths)
    rows = [{"user_id": f"u{u}", "item_ids": store.row(u)[0].tolist(), "timestamps": store.row(u)[1].tolist()} for u in range(len(lengths))]
    stream = streaming_train_examples(datasets.Dataset.from_list(rows), max_length=6, protocol=protocol, holdout_length=10,
                                      num_shards=2, shuffle_buffer=0)
    seen = 0
    for ex in stream:
        user, _ = where(offsets, token=ex["input_ids"][0])
        end = train_end(lengths[user], protocol, 10)
        assert_inside(offsets, user, end, [*ex["input_ids"], *ex["labels"]], [*ex["timestamps"], ex["next_timestamp"]], "stream")
        seen += 1
    assert seen == sum(train_end(n, protocol, 10) is not None for n in lengths)


def test_the_check_catches_a_leak():
    """The property above can fail: a target read from the whole row (the old stage-2 bug) is caught."""
    store, offsets = synthetic_store([30])
    end = train_end(30, "leave-one-out", 10)
    leaked = store.row(0)[0][end - 3 : end + 7]  # a target that runs past the train view
    with pytest.raises(AssertionError, match="train view ends"):
        assert_inside(offsets, 0, end, leaked, what="stage 2")
