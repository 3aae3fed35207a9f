"""Session evaluation (leave-k-out): generate each test user's next session and score it, with baselines.

Used by `train.finetune` (after training) and `train.evaluate --task sessions`.
"""

import math

import numpy as np
import torch
from tqdm.auto import tqdm

from data_scripts.processed import NextItemCollator, NextItemDataset, SessionCollator, excluded_items
from modeling_geniusrec.generation import FirstStepMixLogitsProcessor, ItemBiasLogitsProcessor
from modeling_geniusrec.tokenization_items import NUM_SPECIAL_TOKENS

from .baselines import item_user_counts, popularity_lists
from .ranking import query_states
from .session_metrics import beyond_accuracy, session_accuracy, validity


def _batches(dataset, batch_size, desc, progress=True):
    for lo in tqdm(range(0, len(dataset), batch_size), desc=desc, disable=not progress):
        yield [dataset[i] for i in range(lo, min(lo + batch_size, len(dataset)))]


DECODINGS = ("beam", "first_step", "beam_vote", "sample_vote", "mmr")


def voted_pool(candidates: list[list[int]]) -> tuple[list[int], dict]:
    """The items of several ranked lists (best list first), ordered by a Borda count: each occurrence at position p of
    a list of length L adds `L - p` points, ties broken by first appearance. Returns `(items in that order, points)`."""
    points, first = {}, {}
    for lst in candidates:
        for pos, item in enumerate(lst):
            points[item] = points.get(item, 0) + len(lst) - pos
            first.setdefault(item, len(first))
    return sorted(points, key=lambda item: (-points[item], first[item])), points


def vote(candidates: list[list[int]], k: int) -> list[int]:
    """Aggregates several ranked item lists (best list first) into one of `k` items: the first `k` of [`voted_pool`]."""
    return voted_pool(candidates)[0][:k]


def mmr(candidates: list[list[int]], k: int, item_vectors: torch.Tensor, trade_off: float) -> list[int]:
    """Maximal marginal relevance over the items of several ranked lists (best list first): relevance is the [`vote`]
    Borda count scaled to [0, 1]; items are picked greedily by `trade_off * relevance - (1 - trade_off) * max cosine
    similarity to the items already picked`, with `item_vectors` `(vocab_size, dim)` (the vectors ILD is measured on).
    `trade_off` 1 is [`vote`]; lower values trade relevance for intra-list diversity."""
    if not 0.0 <= trade_off <= 1.0:
        raise ValueError(f"the MMR trade-off must be in [0, 1], got {trade_off}")
    pool, points = voted_pool(candidates)  # vote's order breaks ties
    relevance = torch.tensor([points[item] for item in pool], dtype=torch.float64)
    relevance = relevance / relevance.max()
    vectors = torch.nn.functional.normalize(item_vectors[torch.as_tensor(pool)].double(), dim=-1)
    similarity = vectors @ vectors.T
    closest = torch.full((len(pool),), float("-inf"), dtype=torch.float64)  # max similarity to the picked items
    picked, free = [], torch.ones(len(pool), dtype=torch.bool)
    for _ in range(min(k, len(pool))):
        penalty = torch.where(torch.isinf(closest), torch.zeros_like(closest), closest)
        score = (trade_off * relevance - (1.0 - trade_off) * penalty).masked_fill(~free, float("-inf"))
        best = int(torch.argmax(score))  # the first maximum: ties go to the higher-voted item
        picked.append(pool[best])
        free[best] = False
        closest = torch.maximum(closest, similarity[best])
    return picked


def decoding_mix(first_step_weight: float, encoder_query_weight: float, rows_per_user: int) -> tuple[dict, list]:
    """GeniusRec's `generate()` options for the first-step mix and the encoder query: `({"encoder_query_weight": w}
    or {}, [FirstStepMixLogitsProcessor] or [])`, for `rows_per_user` beams or samples per user (0 weights: nothing)."""
    options = {"encoder_query_weight": encoder_query_weight} if encoder_query_weight else {}
    processors = [FirstStepMixLogitsProcessor(first_step_weight, rows_per_user)] if first_step_weight else []
    return options, processors


def history_batches(model, dataset: NextItemDataset, batch_size: int, filter_history: str, desc: str, progress=True, padding="right"):
    """Puts `model` in eval mode and yields `(rows, batch, banned)` over `dataset` in batches of similar history length:
    `rows` the view's row indices, `batch` the padded histories with their times on the model's device, `banned` the
    items `filter_history` removes for those rows (or None). Callers put each row's result back at `rows`."""
    model.eval()
    collator = NextItemCollator(model.config.pad_token_id)
    order = np.argsort(dataset.input_lengths(), kind="stable")
    device = next(model.parameters()).device
    for lo in tqdm(range(0, len(dataset), batch_size), desc=desc, disable=not progress):
        rows = [int(i) for i in order[lo : lo + batch_size]]
        batch = {key: value.to(device) for key, value in collator.pad_histories([dataset[i] for i in rows], padding).items()}
        banned = dataset.filter_items(filter_history, rows)
        yield rows, batch, None if banned is None else banned.to(device)


@torch.no_grad()
def generate_sessions(model, dataset: NextItemDataset, k: int = 10, num_beams: int = 10, batch_size: int = 64, progress=True,
                      filter_history: str = "full", decoding: str = "beam", num_samples: int = 20, seed: int = 0,
                      item_bias: torch.Tensor | None = None, first_step_weight: float = 0.0,
                      encoder_query_weight: float = 0.0, item_vectors: torch.Tensor | None = None,
                      mmr_trade_off: float = 1.0, candidate_count: int | None = None) -> list[list[int]]:
    """A session of exactly `k` items per user of `dataset` (token ids), with the history's times and the request
    time, and the user's seen items (`filter_history`) banned. `model` is GeniusRec (the decoder writes the session)
    or a stage-1 model (HSTU / SASRec `generate()`: each item appended to the history in turn). Rows are batched by
    history length (little padding) and returned in the view's order.

    decoding: `beam` (the top beam of `num_beams`), `first_step` (the `k` best items of the first step alone: the
    next-item ranking read as a list), `beam_vote` (all `num_beams` beams aggregated by [`vote`]) or `sample_vote`
    (`num_samples` sampled sessions aggregated by [`vote`], seeded) or `mmr` (the items of all `num_beams` beams
    re-ranked by [`mmr`] with `item_vectors` and `mmr_trade_off`: a decoding-time diversity knob). `item_bias`
    `(vocab_size,)` is added to the scores of every step (first_step: to the ranking), e.g. [`popularity_bias`]. `first_step_weight` (GeniusRec's beam
    decodings) adds that weight times the first step's scores to every later step ([`FirstStepMixLogitsProcessor`]).
    `encoder_query_weight` (GeniusRec) leans every step toward the encoder's next-item query: states `s_t + w * u`
    (see `GeniusRecForSessionGeneration.generate`). `candidate_count` (GeniusRec's beam decodings) is the two-stage
    decode: every step scores only each user's `candidate_count` retrieved items (`generate(candidate_count=...)`)."""
    if decoding not in DECODINGS:
        raise ValueError(f"decoding must be one of {DECODINGS}, got {decoding!r}")
    sessions = [None] * len(dataset)
    seq2seq = getattr(model.config, "is_encoder_decoder", False)
    device = next(model.parameters()).device
    if (first_step_weight or encoder_query_weight) and not seq2seq:
        raise ValueError("first_step_weight / encoder_query_weight are GeniusRec decodings (a decoder over an encoder's query)")
    if candidate_count and not (seq2seq and decoding in ("beam", "beam_vote", "mmr")):
        raise ValueError("candidate_count is a GeniusRec beam decoding (beam, beam_vote or mmr)")
    if decoding == "mmr" and item_vectors is None:
        raise ValueError("decoding='mmr' needs item_vectors (the vectors its similarity is measured on)")
    if decoding == "sample_vote":
        torch.manual_seed(seed)
    # a decoder-only generate() appends after the last column (left padding); scoring alone reads right-padded rows
    padding = "left" if not seq2seq and decoding != "first_step" else "right"
    for rows, batch, banned in history_batches(model, dataset, batch_size, filter_history, f"generating sessions ({decoding})", progress,
                                               padding):
        if decoding == "first_step":
            if encoder_query_weight:  # one encoding serves the decoder's first step and the encoder's query
                encoded = model.get_encoder()(**batch)
                start = torch.full((len(rows), 1), model.config.decoder_start_token_id, device=device)
                first = model(encoder_outputs=encoded, decoder_input_ids=start).last_hidden_state[:, 0]
                states = first + encoder_query_weight * encoded.user_embedding
            else:
                states = query_states(model, batch)
            lists = model.top_k_items(states, k, exclude=banned, item_bias=item_bias)[1].tolist()
        else:
            options = dict(num_beams=num_beams) if decoding == "beam" else (
                dict(num_beams=num_beams, num_return_sequences=num_beams) if decoding in ("beam_vote", "mmr")
                else dict(do_sample=True, num_beams=1, num_return_sequences=num_samples))
            rows_per_user = options.get("num_return_sequences", 1) if options.get("do_sample") else num_beams
            mix, mix_processors = decoding_mix(first_step_weight, encoder_query_weight, rows_per_user)
            options.update(mix)
            if candidate_count:
                options["candidate_count"] = candidate_count
            processors = ([ItemBiasLogitsProcessor(item_bias)] if item_bias is not None else []) + mix_processors
            if processors:
                options["logits_processor"] = processors
            out = model.generate(**batch, banned_item_ids=banned, ban_history=filter_history != "none", max_new_tokens=k, min_new_tokens=k, **options)
            start = 1 if seq2seq else batch["input_ids"].shape[1]  # after [SEP] / after the history
            generated = out[:, start : start + k].tolist()
            per_row = options.get("num_return_sequences", 1)
            if decoding == "mmr":
                lists = [mmr(generated[i * per_row : (i + 1) * per_row], k, item_vectors, mmr_trade_off) for i in range(len(rows))]
            else:
                lists = [generated[i] if per_row == 1 else vote(generated[i * per_row : (i + 1) * per_row], k) for i in range(len(rows))]
        for row, session in zip(rows, lists):
            sessions[row] = session
    return sessions


@torch.no_grad()
def alternative_sessions(model, dataset: NextItemDataset, k: int = 10, count: int = 3, num_beams: int = 10, batch_size: int = 64,
                         shared_item_penalty: float | None = float("inf"), filter_history: str = "full", progress=True) -> list[list[list[int]]]:
    """`count` sessions of `k` items per user of `dataset` from GeniusRec's `generate(num_return_sequences=count,
    shared_item_penalty=...)` (None: the beam search's `count` best sequences), in the view's order:
    `[user][session][item]`."""
    if not getattr(model.config, "is_encoder_decoder", False):
        raise ValueError("alternative sessions are a GeniusRec decoding (generate(shared_item_penalty=...))")
    if num_beams < count:
        raise ValueError(f"num_beams ({num_beams}) must be >= the number of sessions ({count})")
    out = [None] * len(dataset)
    for rows, batch, banned in history_batches(model, dataset, batch_size, filter_history, f"generating {count} sessions per user", progress):
        generated = model.generate(**batch, banned_item_ids=banned, ban_history=filter_history != "none",
                                   max_new_tokens=k, min_new_tokens=k, num_beams=num_beams, num_return_sequences=count,
                                   shared_item_penalty=shared_item_penalty)[:, 1 : 1 + k].tolist()
        for index, row in enumerate(rows):
            out[row] = generated[index * count : (index + 1) * count]
    return out


def alternatives_report(sessions: list[list[list[int]]], dataset: NextItemDataset, k: int = 10) -> dict:
    """Per user's `count` sessions: recall@k of the first, of the best of them (the highest recall per user) and of
    their union (`count * k` items), the mean share of items two of a user's sessions have in common
    (`|A & B| / k` over pairs), and the share of pairs that are the same set of items reordered."""
    targets = [dataset[i]["target_session"].tolist() for i in range(len(dataset))]
    first, best, union, overlap, same = [], [], [], [], []
    for user_sessions, target in zip(sessions, targets):
        wanted = set(target)
        ideal = min(len(wanted), k)
        recalls = [len(set(s[:k]) & wanted) / ideal for s in user_sessions]
        first.append(recalls[0])
        best.append(max(recalls))
        union.append(len(set().union(*map(set, user_sessions)) & wanted) / ideal)
        for i in range(len(user_sessions)):
            for j in range(i + 1, len(user_sessions)):
                a, b = set(user_sessions[i]), set(user_sessions[j])
                overlap.append(len(a & b) / k)
                same.append(float(a == b))
    count = len(sessions[0]) if sessions else 0
    return {f"first_session_recall@{k}": float(np.mean(first)), f"best_of_{count}_recall@{k}": float(np.mean(best)),
            f"union_of_{count}_recall@{k}": float(np.mean(union)), "shared_item_share": float(np.mean(overlap)) if overlap else 0.0,
            "same_set_share": float(np.mean(same)) if same else 0.0}


def popularity_bias(counts, alpha: float) -> torch.Tensor:
    """`-alpha * log(1 + count)` per token id `(vocab_size,)`: a popularity penalty from the training split's item
    counts (never the evaluated items), added to the log-probabilities of each decoding step."""
    return -alpha * torch.log1p(torch.as_tensor(counts, dtype=torch.float32))


@torch.no_grad()
def next_item_top_k(model, examples: list[dict], k: int = 10, filter_history: str = "full") -> torch.Tensor:
    """A stage-1 model's top-k next items for a list of split-view examples, with the user's seen items removed
    (`full`: `seen_items`, the whole history; `window`: the input window): `(len(examples), k)`. Given a GeniusRec
    model, the list of the encoder inside it (its next-item query, as `--rank_with encoder`): the list of the same
    encoder that generates the sessions, after joint training has moved it."""
    model.eval()
    device = next(model.parameters()).device
    batch = NextItemCollator(model.config.pad_token_id).pad_histories(examples)
    batch = {key: value.to(device) for key, value in batch.items()}
    if getattr(model.config, "is_encoder_decoder", False):
        users = model.get_encoder()(**batch).user_embedding
    else:
        users = model(**batch).user_embeddings
    exclude = excluded_items(examples, filter_history)
    return model.top_k_items(users, k, exclude=None if exclude is None else exclude.to(device))[1].cpu()


def next_item_lists(model, dataset: NextItemDataset, k: int = 10, batch_size: int = 256, filter_history: str = "full") -> list[list[int]]:
    """The stage-1 top-k list of every user of `dataset`, read as a session: the HSTU baseline (a GeniusRec `model`: its
    encoder's list, see [`next_item_top_k`])."""
    lists = []
    for examples in _batches(dataset, batch_size, "stage-1 top-k", progress=False):
        lists += next_item_top_k(model, examples, k, filter_history).tolist()
    return lists


def model_text_table(model) -> torch.Tensor | None:
    """The model's item text table `(vocab_size, width)` (its own or its encoder's), or None for a model without text."""
    tables = model._content_tables() if hasattr(model, "_content_tables") else {}
    return tables.get("text")


def ild_feature_source(items, text_embeddings: torch.Tensor | None = None) -> str:
    """What intra-list diversity is measured on, named in every results file: "text" (the model's item text table),
    else "genres" or "categories" (multi-hot from the items table)."""
    if text_embeddings is not None:
        return "text"
    return "genres" if "genres" in items.column_names else "categories"


def item_feature_vectors(items, vocab_size: int, text_embeddings: torch.Tensor | None = None) -> torch.Tensor:
    """Vectors for intra-list diversity: text embeddings where available, else genre/category multi-hot
    ([`ild_feature_source`] names which)."""
    if text_embeddings is not None:
        return text_embeddings
    column = ild_feature_source(items)
    values = items[column]
    names = sorted({g for row in values for g in (row or [])})
    index = {g: j for j, g in enumerate(names)}
    vectors = torch.zeros(vocab_size, max(len(names), 1))
    for token, row in zip(items["id"], values):
        for g in row or []:
            vectors[token, index[g]] = 1.0
    return vectors


@torch.no_grad()
def session_perplexity(model, dataset: NextItemDataset, batch_size: int = 128) -> dict:
    """Teacher-forced NLL of the real target sessions: perplexity over item tokens, and the mean NLL of EOS apart."""
    model.eval()
    collator = SessionCollator(model.config.pad_token_id, model.config.eos_token_id)
    item_nll, eos_nll = [], []
    for examples in _batches(dataset, batch_size, "perplexity", progress=False):
        batch = collator(examples)
        out = model(**batch)
        logp = torch.log_softmax(out.logits, -1)
        labels = batch["labels"]
        token_nll = -logp.gather(2, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        is_eos = labels == model.config.eos_token_id
        item_nll.append(token_nll[(labels != -100) & ~is_eos])
        eos_nll.append(token_nll[is_eos])
    items = torch.cat(item_nll)
    return {"perplexity": float(math.exp(items.mean())), "item_nll": float(items.mean()), "eos_nll": float(torch.cat(eos_nll).mean())}


def session_table(model, store, items, dataset: NextItemDataset, k: int = 10, num_beams: int = 10, batch_size: int = 64,
                  stage1=None, filter_history: str = "full", decoding: str = "beam", popularity_penalty: float = 0.0,
                  first_step_weight: float = 0.0, encoder_query_weight: float = 0.0, mmr_trade_off: float = 1.0,
                  candidate_count: int | None = None) -> dict:
    """Generated sessions on a split view scored against the real next items, with the popularity baseline
    (`popularity_*`) and, given a stage-1 model, its top-k list (`hstu_*`) in the same table. `model` is GeniusRec
    (with the teacher-forced perplexity of the real sessions) or a stage-1 model, whose beam-search session (its
    `generate()`) is then the row, beside its own top-k list (`hstu_*`). `popularity_penalty` alpha adds
    [`popularity_bias`] to the model's decoding (the baselines are left as they are); `first_step_weight` and
    `encoder_query_weight` and `candidate_count` as [`generate_sessions`]; decoding `mmr` re-ranks with the ILD vectors
    and `mmr_trade_off`."""
    import time

    seq2seq = getattr(model.config, "is_encoder_decoder", False)
    report = session_report_inputs(store, items, dataset, k, model.config.vocab_size, model.config.num_special_tokens,
                                   model_text_table(model) if seq2seq else None)
    counts = report["counts"]
    start = time.time()
    bias = popularity_bias(counts, popularity_penalty) if popularity_penalty else None
    sessions = generate_sessions(model, dataset, k, num_beams, batch_size, filter_history=filter_history, decoding=decoding, item_bias=bias,
                                 first_step_weight=first_step_weight, encoder_query_weight=encoder_query_weight,
                                 item_vectors=report["vectors"], mmr_trade_off=mmr_trade_off, candidate_count=candidate_count)
    out = session_report(sessions, dataset, **report)
    out["sessions_per_second"] = len(sessions) / (time.time() - start)
    if seq2seq:
        out.update(session_perplexity(model, dataset))
    elif stage1 is None:
        stage1 = model  # a stage-1 model's beam session beside its own top-k list
    out.update(session_report(popularity_lists(counts, dataset, k, filter_history=filter_history), dataset, **report, prefix="popularity_"))
    if stage1 is not None:
        out.update(session_report(next_item_lists(stage1, dataset, k, filter_history=filter_history), dataset, **report, prefix="hstu_"))
    return out


def session_report_inputs(store, items, dataset: NextItemDataset, k: int, vocab_size: int, num_special_tokens: int,
                          text_embeddings: torch.Tensor | None = None) -> dict:
    """What [`session_report`] needs beside the lists, from the training split (item counts) and the items table (ILD
    vectors): `dict(k, counts, num_users, vectors, num_items, ild_features)`."""
    counts, num_users = item_user_counts(store, dataset.protocol, dataset.holdout_length, vocab_size)
    return dict(k=k, counts=counts, num_users=num_users, vectors=item_feature_vectors(items, vocab_size, text_embeddings),
                num_items=vocab_size - num_special_tokens, ild_features=ild_feature_source(items, text_embeddings))


def session_report(lists, dataset, counts, num_users, vectors, num_items, k, prefix="", ild_features: str | None = None) -> dict:
    """Accuracy, beyond-accuracy and validity of `lists` (one item list per user of `dataset`), keys prefixed; with
    `ild_features`, the key `ild_features` names what ILD was measured on."""
    targets = [dataset[i]["target_session"].tolist() for i in range(len(dataset))]
    histories = [dataset[i]["seen_items"].tolist() for i in range(len(dataset))]  # repetition counts against the whole history
    report = {**session_accuracy(lists, targets, k, histories), **beyond_accuracy(lists, histories, vectors, counts, num_users, num_items),
              **validity(lists, NUM_SPECIAL_TOKENS, NUM_SPECIAL_TOKENS + num_items)}
    out = {f"{prefix}{key}": value for key, value in report.items()}
    if ild_features is not None:
        out["ild_features"] = ild_features
    return out
