"""History in, items out: the one function behind `train.recommend`, the `next-items` pipeline and `train.serve`.

    >>> recommend(model, tokenizer, [{"items": ["Toy Story (1995)", "Heat (1995)"], "timestamps": [978300760, 978301968]}], k=10)
    [{"items": [{"item_id": "...", "title": "...", "score": 7.1}, ...], "notes": []}]

A history is a user's raw item ids in chronological order, with optional `timestamps` (int seconds, one per item) and
`request_time` (the time of the recommendation, seconds). The documented defaults, since every model reads time:
without `timestamps`, every event and the request sit at one instant (the time bias sees zero gaps); without
`request_time`, the request is at the latest event's time.

What comes back: a stage-1 model (HSTU, SASRec) ranks the catalog (`session=False`, the top-k list); GeniusRec generates
the next session by beam search (`session=True`, its default) or ranks with its decoder's first step
(`session=False`). `score` is the model's logit for the item (top-k: its ranking score; a session: the decoder's
logit for the item at its position). Alternatives (`num_return_sequences > 1`, GeniusRec sessions) share no item.

The rule for exhausted catalogs, the same on every path: an item the history holds, a special token or an item
already in the list is never returned. When fewer unseen items remain than `k`, the list or session is shorter
(possibly empty) and `notes` says so (a `RecommendationWarning` is issued once per call too). Unknown item ids follow
`unknown`: `"error"` (a `ValueError` naming them) or `"drop"` (left out, named in `notes`). A history longer than the
model's window keeps its latest events as input (`truncate=True`, every event still banned) or is refused.
"""

import warnings

import torch

from .scoring import scale_scores


class RecommendationWarning(UserWarning):
    """Fewer items than asked for could be returned (the user has seen nearly the whole catalog)."""


def model_window(model) -> int:
    """The longest history the model reads (its encoder's `max_position_embeddings`)."""
    config = getattr(model.config, "encoder_config", model.config)
    return int(config.max_position_embeddings)


def parse_history(history, index: int) -> dict:
    """A history as a dict `{"items", "timestamps", "request_time", "user_id"}` from a dict or a plain list of ids.

    `tokens` (token ids of the model's vocabulary, e.g. a processed dataset's row) may stand in for `items`: they skip
    the raw-id lookup; `timestamps` then may be an array too."""
    if isinstance(history, dict) and "tokens" in history:
        return parse_token_history(history, index)
    if isinstance(history, dict):
        unexpected = set(history) - {"items", "timestamps", "request_time", "user_id"}
        if unexpected:
            raise ValueError(f"history {index}: unknown fields {sorted(unexpected)}; a history has items, timestamps (optional), "
                             "request_time (optional), user_id (optional)")
        if "items" not in history:
            raise ValueError(f"history {index}: no 'items' (the raw item ids, oldest first)")
        out = dict(history)
    elif isinstance(history, (list, tuple)):
        out = {"items": list(history)}
    else:
        raise ValueError(f"history {index}: expected a list of raw item ids or a dict with 'items', got {type(history).__name__}")
    items = out["items"]
    if not isinstance(items, (list, tuple)) or not items:
        raise ValueError(f"history {index}: 'items' must be a non-empty list of raw item ids")
    if not all(isinstance(i, (str, int)) and not isinstance(i, bool) for i in items):
        raise ValueError(f"history {index}: every item id must be a string (or an integer)")
    out["items"] = [str(i) for i in items]
    times = out.get("timestamps")
    if times is not None:
        if not isinstance(times, (list, tuple)) or len(times) != len(items):
            raise ValueError(f"history {index}: 'timestamps' must be a list with one time per item ({len(items)}), got "
                             f"{len(times) if isinstance(times, (list, tuple)) else type(times).__name__}")
        if not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < 2**62 for t in times):
            raise ValueError(f"history {index}: timestamps must be integer seconds since 1970 (>= 0)")
        if any(b < a for a, b in zip(times, times[1:])):
            raise ValueError(f"history {index}: timestamps must be in chronological order (oldest first)")
    request = out.get("request_time")
    if request is not None:
        if not isinstance(request, int) or isinstance(request, bool) or request < 0:
            raise ValueError(f"history {index}: request_time must be integer seconds since 1970 (>= 0)")
        if times and request < times[-1]:
            raise ValueError(f"history {index}: request_time {request} is before the latest event ({times[-1]})")
    return out


def parse_token_history(history: dict, index: int) -> dict:
    """A history given as token ids (`tokens`) with optional `timestamps`, `request_time`, `user_id`."""
    import numpy as np

    unexpected = set(history) - {"tokens", "timestamps", "request_time", "user_id"}
    if unexpected:
        raise ValueError(f"history {index}: unknown fields {sorted(unexpected)} beside 'tokens'")
    tokens = np.asarray(history["tokens"], dtype=np.int64).reshape(-1)
    if not len(tokens):
        raise ValueError(f"history {index}: 'tokens' is empty")
    times = history.get("timestamps")
    times = np.zeros(len(tokens), dtype=np.int64) if times is None else np.asarray(times, dtype=np.int64).reshape(-1)
    if len(times) != len(tokens) or (times < 0).any() or (np.diff(times) < 0).any():
        raise ValueError(f"history {index}: 'timestamps' must be one non-negative time per token, in chronological order")
    return {**history, "tokens": tokens, "timestamps": times}


def raw_ids(tokenizer) -> list:
    """The raw ids of the tokenizer's items in token order (index = token id - num_special_tokens), built once per
    tokenizer size."""
    cached = getattr(tokenizer, "_raw_ids_cache", None)
    if cached is None or cached[0] != len(tokenizer):
        cached = (len(tokenizer), tokenizer.decode_items(list(range(tokenizer.num_special_tokens, len(tokenizer)))))
        tokenizer._raw_ids_cache = cached
    return cached[1]


def raw_index(tokenizer) -> dict:
    """`{raw item id: token id}` of the tokenizer's items, built once per tokenizer size (a history's lookups are then
    one dict access per item, no escaping)."""
    cached = getattr(tokenizer, "_raw_index_cache", None)
    if cached is None or cached[0] != len(tokenizer):
        first = tokenizer.num_special_tokens
        cached = (len(tokenizer), {raw: token for token, raw in enumerate(raw_ids(tokenizer), start=first)})
        tokenizer._raw_index_cache = cached
    return cached[1]


def encode_history(tokenizer, history: dict, index: int, unknown: str, window: int, truncate: bool) -> tuple[dict, list[str]]:
    """Token ids and times of one parsed history: `({"input_ids", "timestamps", "next_timestamp", "banned"}, notes)`;
    a `ValueError` when no item of it is in the catalog (or, under `unknown="error"`, any is not)."""
    notes = []
    if "tokens" in history:
        ids, times = history["tokens"], history["timestamps"]
        if (ids < tokenizer.num_special_tokens).any() or (ids >= len(tokenizer)).any():
            raise ValueError(f"history {index}: token ids outside the catalog's items [{tokenizer.num_special_tokens}, {len(tokenizer)})")
        return _window(ids.tolist(), times.tolist(), history, index, window, truncate, notes, say_cut=False)
    known = raw_index(tokenizer)
    ids, times, missing = [], [], []
    raw_times = history.get("timestamps")
    for position, raw in enumerate(history["items"]):
        token = known.get(raw)
        if token is None:
            missing.append(raw)
            continue
        ids.append(token)
        times.append(raw_times[position] if raw_times is not None else 0)
    if missing:
        if unknown == "error":
            raise ValueError(f"history {index}: {len(missing)} item id(s) not in the model's catalog, e.g. {missing[:3]}; pass "
                             "unknown='drop' to leave them out")
        notes.append(f"{len(missing)} unknown item id(s) left out: {missing[:3]}")
    if not ids:
        raise ValueError(f"history {index}: no item of the history is in the model's catalog")
    return _window(ids, times, history, index, window, truncate, notes)


def _window(ids: list, times: list, history: dict, index: int, window: int, truncate: bool, notes: list, say_cut: bool = True):
    """The model's input (the latest `window` events), the request time and the banned items (all of them)."""
    if len(ids) > window:
        if not truncate:
            raise ValueError(f"history {index} has {len(ids)} items, more than the model reads ({window}); send the latest {window}")
        if say_cut:
            notes.append(f"history of {len(ids)} items: the model reads the latest {window}, every item stays excluded")
    request = history.get("request_time")
    request = request if request is not None else times[-1]
    return {"input_ids": ids[-window:], "timestamps": times[-window:], "next_timestamp": request, "banned": sorted(set(ids))}, notes


def pad_batch(rows: list[dict], pad_token_id: int, device) -> dict:
    """Right-padded `input_ids`, `attention_mask`, `timestamps` `(B, N)`, `next_timestamps` `(B,)`, `banned` `(B, S)`."""
    width, banned_width = max(len(r["input_ids"]) for r in rows), max(len(r["banned"]) for r in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    timestamps = torch.zeros((len(rows), width), dtype=torch.long)
    banned = torch.full((len(rows), banned_width), pad_token_id, dtype=torch.long)
    for row, r in enumerate(rows):
        input_ids[row, : len(r["input_ids"])] = torch.tensor(r["input_ids"])
        timestamps[row, : len(r["timestamps"])] = torch.tensor(r["timestamps"])
        banned[row, : len(r["banned"])] = torch.tensor(r["banned"])
    batch = {"input_ids": input_ids, "attention_mask": input_ids != pad_token_id, "timestamps": timestamps,
             "next_timestamps": torch.tensor([int(r["next_timestamp"]) for r in rows]), "banned": banned}
    return {key: value.to(device) for key, value in batch.items()}


def next_item_queries(model, batch: dict) -> torch.Tensor:
    """The `(B, D)` states that rank the next item: the encoder's last state for stage-1 models, the decoder's first
    step (after `[SEP]`) for GeniusRec, so that GeniusRec's numbers are its own and not the encoder's."""
    inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "timestamps", "next_timestamps")}
    if getattr(model.config, "is_encoder_decoder", False):
        start = torch.full((inputs["input_ids"].shape[0], 1), model.config.decoder_start_token_id, device=inputs["input_ids"].device)
        return model(**inputs, decoder_input_ids=start).last_hidden_state[:, 0]
    return model(**inputs).user_embeddings


def session_scores(model, batch: dict, sessions: torch.Tensor, item_matrix: torch.Tensor | None = None) -> torch.Tensor:
    """`(B, L)` the decoder's logit for each session item at its position (teacher-forced over the session).
    `item_matrix`: `model.item_vectors()` `(vocab_size, D)` when the caller has it already (computed here otherwise)."""
    inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "timestamps", "next_timestamps")}
    start = torch.full((sessions.shape[0], 1), model.config.decoder_start_token_id, device=sessions.device)
    states = model(**inputs, decoder_input_ids=torch.cat([start, sessions[:, :-1]], dim=1)).last_hidden_state  # (B, L, D)
    matrix = model.item_vectors(0, model.config.vocab_size) if item_matrix is None else item_matrix
    vectors = matrix[sessions]  # (B, L, D)
    return scale_scores((states * vectors).sum(-1), model.config)


def list_lengths(model, rows: list[dict], notes: list[list], k: int, warn: bool) -> list[int]:
    """The rule for exhausted catalogs: each history's list is `k` items or as many unseen items as remain (a note per
    short one, and one `RecommendationWarning` per call)."""
    lengths = []
    for row, note in zip(rows, notes):
        length = max(min(k, _eligible(model, row)), 0)
        if length < k:
            note.append(f"only {length} items of the catalog are not in the history: returning {length} instead of {k}")
        lengths.append(length)
    if warn and any(n < k for n in lengths):
        short = sum(n < k for n in lengths)
        warnings.warn(f"{short} of {len(rows)} histories leave fewer than k={k} unseen items: their lists are shorter (see 'notes')",
                      RecommendationWarning, stacklevel=3)
    return lengths


def _eligible(model, row: dict) -> int:
    return model.config.vocab_size - model.config.num_special_tokens - len(row["banned"])


@torch.no_grad()
def recommend(model, tokenizer, histories: list, k: int = 10, session: bool | None = None, unknown: str = "error",
              num_beams: int = 10, num_return_sequences: int = 1, candidate_count: int | None = None, truncate: bool = True,
              warn: bool = True, queries=None, batch_size: int | None = None) -> list[dict]:
    """Recommendations for each history (see the module docstring).

    Args:
        model: a stage-1 model (`HSTUForNextItemPrediction`, `SASRecForNextItemPrediction`) or
            `GeniusRecForSessionGeneration`, in eval mode.
        tokenizer: the checkpoint's `ItemTokenizer` (its `item_titles` give the titles).
        histories: a list of histories: lists of raw item ids, or dicts `{"items", "timestamps", "request_time", "user_id"}`.
        k: items per list or session (1 .. catalog size).
        session: generate a session (GeniusRec only; its default) rather than rank the top-k.
        unknown: `"error"` or `"drop"` for item ids the catalog lacks.
        num_beams, num_return_sequences, candidate_count: GeniusRec's beam search, alternative sessions (sharing no
            item) and two-stage decode (`generate()`'s arguments).
        truncate: a history longer than the model's window keeps its latest events (True) or is refused (False).
        queries: for the top-k path, a function of the padded batch returning the `(B, D)` user states in place of
            [`next_item_queries`] (e.g. an exported encoder, `modeling_geniusrec.export`).
    Returns:
        One dict per history: `items` (a list of `{"item_id", "title", "score"}`, best first or in session order),
        `alternatives` (lists like `items`, when `num_return_sequences > 1`), `notes` (what was dropped or cut short),
        and `user_id` when the history named one.
    """
    is_seq2seq = getattr(model.config, "is_encoder_decoder", False)
    num_items = model.config.vocab_size - model.config.num_special_tokens
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= num_items:
        raise ValueError(f"k must be an integer in [1, {num_items}] (the catalog's items), got {k!r}")
    if unknown not in ("error", "drop"):
        raise ValueError(f"unknown must be 'error' or 'drop', got {unknown!r}")
    session = is_seq2seq if session is None else bool(session)
    if session and not is_seq2seq:
        raise ValueError("session=True needs a GeniusRec checkpoint; a stage-1 model (HSTU, SASRec) returns its top-k list (session=False)")
    if num_return_sequences != 1 and not session:
        raise ValueError("num_return_sequences > 1 gives alternative sessions: pass session=True with a GeniusRec checkpoint")
    window = model_window(model)
    parsed = [parse_history(h, i) for i, h in enumerate(histories)]
    encoded = [encode_history(tokenizer, h, i, unknown, window, truncate) for i, h in enumerate(parsed)]
    rows, notes = [e[0] for e in encoded], [e[1] for e in encoded]
    lengths = list_lengths(model, rows, notes, k, warn)
    device = next(model.parameters()).device
    results = [{"items": [], "notes": note} for note in notes]
    groups = {}
    for index, length in enumerate(lengths):
        if length > 0:
            groups.setdefault(length, []).append(index)
    batches, batch_size = [], batch_size or (128 if session else 64)
    item_matrix = model.item_vectors(0, model.config.vocab_size) if session and groups else None  # the session scores' items: once
    for length, members in groups.items():  # within a group, histories of similar length share a batch: little padding
        members = sorted(members, key=lambda i: len(rows[i]["input_ids"]))
        batches += [(length, members[lo : lo + batch_size]) for lo in range(0, len(members), batch_size)]
    for length, members in batches:
        batch = pad_batch([rows[i] for i in members], model.config.pad_token_id, device)
        eligible = min(_eligible(model, rows[i]) for i in members)
        count = max(1, min(num_return_sequences, eligible // length))  # alternatives share no item: each needs `length` of its own
        if count < num_return_sequences:
            for i in members:
                notes[i].append(f"{count} alternative session(s) of {length} unseen items fit, not {num_return_sequences}")
        if session:
            lists = _sessions(model, batch, length, num_beams, count, candidate_count, eligible, item_matrix)
        else:
            states = next_item_queries(model, batch) if queries is None else queries(batch)
            scores, ids = model.top_k_items(states, length, exclude=batch["banned"])
            lists = [[list(zip(ids[r].tolist(), scores[r].tolist()))] for r in range(len(members))]
        for index, alternatives in zip(members, lists):
            decoded = _decode_all(tokenizer, alternatives, set(rows[index]["banned"]))
            results[index]["items"] = decoded[0]
            if num_return_sequences > 1:
                results[index]["alternatives"] = decoded[1:]
    for result, history in zip(results, parsed):
        if history.get("user_id") is not None:
            result["user_id"] = history["user_id"]
    return results


def _sessions(model, batch, length, num_beams, num_return_sequences, candidate_count, eligible, item_matrix):
    """GeniusRec's generated sessions: per row, `num_return_sequences` lists of `(token id, score)`."""
    beams = max(1, min(num_beams, eligible))
    alternatives = num_return_sequences > 1
    use_candidates = candidate_count is not None and beams >= 2 and candidate_count >= length + beams
    out = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], timestamps=batch["timestamps"],
                         next_timestamps=batch["next_timestamps"], banned_item_ids=batch["banned"], num_beams=beams,
                         num_return_sequences=num_return_sequences, max_new_tokens=length, min_new_tokens=length,
                         shared_item_penalty=float("inf") if alternatives else None,
                         candidate_count=min(candidate_count, model.config.vocab_size - model.config.num_special_tokens)
                         if use_candidates else None)
    sessions = out[:, 1 : length + 1]
    repeat = {k: v.repeat_interleave(num_return_sequences, dim=0) for k, v in batch.items()}
    scores = session_scores(model, repeat, sessions, item_matrix)
    lists = []
    for row in range(batch["input_ids"].shape[0]):
        lists.append([list(zip(sessions[r].tolist(), scores[r].tolist()))
                      for r in range(row * num_return_sequences, (row + 1) * num_return_sequences)])
    return lists


def _decode_all(tokenizer, alternatives, banned: set) -> list[list[dict]]:
    """Each list of `(token id, score)` pairs -> `{"item_id", "title", "score"}` dicts. The last guard of the rule: a
    special token, a banned (seen) item, an item already returned to this user (in this list or an earlier
    alternative) or a score of -inf (nothing eligible was left) is never returned."""
    first, titles, used, out = tokenizer.num_special_tokens, getattr(tokenizer, "item_titles", {}) or {}, set(banned), []
    raw_of = raw_ids(tokenizer)
    for pairs in alternatives:
        kept = []
        for token, score in pairs:
            if token >= first and token not in used and score != float("-inf"):
                kept.append((token, score))
                used.add(token)
        raw = [raw_of[t - first] for t, _ in kept]
        out.append([{"item_id": r, "title": titles.get(r, r), "score": round(float(s), 6)} for r, (_, s) in zip(raw, kept)])
    return out


__all__ = ["recommend", "parse_history", "next_item_queries", "session_scores", "RecommendationWarning", "model_window"]
