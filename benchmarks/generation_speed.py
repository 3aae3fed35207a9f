"""Session generation speed: sessions per second with and without the key/value cache, in the same run.

    python -m benchmarks.generation_speed --dataset data/ml-1m --batch-size 256 --num-beams 10 --session-length 10
    python -m benchmarks.generation_speed --model runs/ml-1m-geniusrec --dataset data/ml-1m

Histories are the first `--batch-size` test users of the leave-one-out split (length up to 200). Without `--model`,
a paper-size GeniusRec (HSTU 2x50 encoder, 2 decoder layers, text expert of width `--text-dim`) with random
weights is timed: speed does not depend on the weights. Writes a JSON line to `--output` when given.

`--profile` adds where the cached run's time goes (one extra cached run under cProfile, cumulative seconds):
the encoder pass, the decoder steps (model forward, logits over the catalog included), the logits processors (the
ban), the log-softmax, and the rest of transformers' beam search (beam top-k, reordering, copies).
"""

import argparse
import cProfile
import json
import pstats
import time

import torch

import modeling_geniusrec.modeling_session_generation as generation_module
from data_scripts.processed import NextItemCollator, NextItemDataset, load_processed
from data_scripts.splits import SequenceStore
from modeling_geniusrec import GeniusRecConfig, GeniusRecForSessionGeneration, HSTUConfig
from train.evaluation.results import provenance


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="processed dataset folder (histories come from its test view)")
    p.add_argument("--model", default=None, help="GeniusRec checkpoint (default: random paper-size model)")
    p.add_argument("--batch_size", "--batch-size", type=int, default=256, help="users per generate() call")
    p.add_argument("--num_beams", "--num-beams", type=int, default=10, help="beam width")
    p.add_argument("--items_per_session", "--session_length", type=int, default=10,
                   help="items per generated session (--session_length: the older name)")
    p.add_argument("--text_dim", "--text-dim", type=int, default=576, help="text expert width for the random model (0: no text expert)")
    p.add_argument("--repeats", type=int, default=2, help="timed runs per mode (the best is kept)")
    p.add_argument("--output", default=None, help="append the result as a JSON line to this file")
    p.add_argument("--profile", action="store_true", help="also report the cached run's time per part (cProfile)")
    p.add_argument("--save_sessions", default=None, help="save the cached run's sessions (a torch file) to compare other code with")
    p.add_argument("--compare_sessions", default=None, help="sessions saved by --save_sessions (e.g. by older code): reports "
                                                            "identical_to_reference and how many sessions differ")
    p.add_argument("--transformers_loop", action="store_true", help="time transformers' own beam-search loop (the code before "
                   "GeniusRec's lean fixed-length search), to compare the two in one quiet window")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="the model's weights and activations (bfloat16: sessions differ from float32's, measure their quality; the "
                        "beam scores stay float32)")
    p.add_argument("--candidate_count", type=int, default=None, help="the two-stage decode (generate(candidate_count=N)): every step "
                   "scores each user's N retrieved items; the row then also reports the share of sessions equal to the whole-catalog "
                   "decode's (one more untimed run)")
    p.add_argument("--allocator", choices=["tuned", "default"], default="tuned",
                   help="tuned: train.runner.tune_cpu_allocator() as the inference entry points do; default: glibc as it comes")
    args = p.parse_args(argv)
    allocator_tuned = False
    if args.allocator == "tuned":
        from train.runner import tune_cpu_allocator

        allocator_tuned = tune_cpu_allocator(True)
    sequences, _, tokenizer, _ = load_processed(args.dataset)
    store = SequenceStore.from_dataset(sequences)
    dtype = getattr(torch, args.dtype)
    if args.model:
        model = GeniusRecForSessionGeneration.from_pretrained(args.model, dtype=dtype)
    else:
        torch.manual_seed(0)
        model = GeniusRecForSessionGeneration(GeniusRecConfig(encoder_config=HSTUConfig(vocab_size=len(tokenizer)),
                                                              content_embedding_dims={"text": args.text_dim} if args.text_dim else None))
        if args.text_dim:
            model.model.set_item_embeddings("text", torch.randn(len(tokenizer), args.text_dim))
        model.to(dtype)
    model.eval()
    lean = generation_module.takes_lean_path
    if args.transformers_loop:  # for this run only (restored below)
        generation_module.takes_lean_path = lambda *a, **k: False
    try:
        return timed_runs(args, model, store, allocator_tuned)
    finally:
        generation_module.takes_lean_path = lean


def timed_runs(args, model, store, allocator_tuned) -> dict:
    data = NextItemDataset(store, "test", model.config.encoder_config.max_position_embeddings)
    batch = NextItemCollator().pad_histories([data[i] for i in range(args.batch_size)])
    kwargs = dict(**batch, banned_item_ids=data.filter_items("full", range(args.batch_size)), num_beams=args.num_beams,
                  max_new_tokens=args.items_per_session, min_new_tokens=args.items_per_session)
    result = {"batch_size": args.batch_size, "num_beams": args.num_beams, "session_length": args.items_per_session,  # the key of earlier rows

              "threads": torch.get_num_threads(), "allocator_tuned": allocator_tuned,
              "beam_search": "transformers" if args.transformers_loop else "geniusrec lean (fixed length)", "dtype": args.dtype,
              "model": args.model or f"random paper-size, text_dim={args.text_dim}"}
    if args.candidate_count:
        result["candidate_count"] = args.candidate_count
        with torch.no_grad():
            full = model.generate(**kwargs)
        kwargs["candidate_count"] = args.candidate_count
    outputs = {}
    for mode, use_cache in (("cached", True), ("uncached", False)):
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            with torch.no_grad():
                outputs[mode] = model.generate(use_cache=use_cache, **kwargs)
            best = min(best, time.perf_counter() - start)
        result[f"{mode}_seconds"] = round(best, 2)
        result[f"{mode}_sessions_per_second"] = round(args.batch_size / best, 1)
    result["cache_speedup"] = round(result["uncached_seconds"] / result["cached_seconds"], 2)
    result["identical_outputs"] = bool(torch.equal(outputs["cached"], outputs["uncached"]))
    if args.candidate_count:
        result["same_as_full_catalog"] = float((outputs["cached"] == full).all(1).float().mean())
    if args.save_sessions:
        torch.save(outputs["cached"], args.save_sessions)
    if args.compare_sessions:
        reference = torch.load(args.compare_sessions)
        result["identical_to_reference"] = bool(torch.equal(outputs["cached"], reference))
        same_shape = reference.shape == outputs["cached"].shape
        result["sessions_differing_from_reference"] = int((outputs["cached"] != reference).any(1).sum()) if same_shape else None
    if args.profile:
        result["profile_seconds"] = profile_parts(model, kwargs)
    result.update(provenance("python -m benchmarks.generation_speed"))
    print(json.dumps(result))
    if args.output:
        with open(args.output, "a") as f:
            f.write(json.dumps(result) + "\n")
    return result


def _cumulative(stats, test) -> float:
    """The largest cumulative time of the profiled functions `test(path, name)` accepts (the outermost call)."""
    times = [v[3] for (path, _, fn), v in stats.items() if test(path, fn)]
    return round(max(times), 3) if times else 0.0


def profile_parts(model, kwargs) -> dict:
    """Cumulative seconds per part of one cached `generate()` under cProfile (which adds some overhead to every call):
    the encoder, the decoder steps (GeniusRecModel's forward, called once per generated token), the head (the
    generation model's forward: decoder steps plus the logits over the catalog), the logits processors, the
    log-softmax, the two-stage decode's candidate scores (`candidate_log_probs`, with `--candidate_count`), the beam
    search as a whole (transformers' `_beam_search` or GeniusRec's `exact_length_beam_search` / `candidate_beam_search`)
    and `beam_search_other`: the search minus the head (or the decoder steps), the candidate scores, the processors and
    the log-softmax (top-k, reordering, copies)."""
    profiler = cProfile.Profile()
    with torch.no_grad():
        profiler.runcall(model.generate, use_cache=True, **kwargs)
    stats = pstats.Stats(profiler).stats
    steps = kwargs["max_new_tokens"]

    def per_step_forward(suffix):
        return round(max([v[3] for (path, _, fn), v in stats.items() if fn == "forward" and path.endswith(suffix) and v[0] == v[1]
                          and v[0] >= steps] or [0.0]), 3)

    out = {
        "encoder": _cumulative(stats, lambda path, fn: fn == "encode" and path.endswith("modeling_geniusrec.py")),
        "decoder_steps": per_step_forward("modeling_geniusrec.py"),
        "head": per_step_forward("modeling_session_generation.py"),
        "logits_processors": _cumulative(stats, lambda path, fn: fn == "__call__" and path.endswith("logits_process.py")),
        "log_softmax": round(sum(v[3] for (path, _, fn), v in stats.items() if "log_softmax" in fn and not path.endswith(".py"))
                             or _cumulative(stats, lambda path, fn: fn == "log_softmax" and path.endswith("functional.py")), 3),
        "candidate_scores": _cumulative(stats, lambda path, fn: fn == "candidate_log_probs"),  # the two-stage decode's head
        "beam_search_total": _cumulative(stats, lambda path, fn: (fn == "_beam_search" and path.endswith("utils.py"))
                                         or fn in ("exact_length_beam_search", "candidate_beam_search")),
        "generate_total": _cumulative(stats, lambda path, fn: fn == "generate" and path.endswith("utils.py")),
    }
    # the head holds the decoder steps; the two-stage decode has no head call, its steps and candidate scores count instead
    inside = max(out["head"], out["decoder_steps"]) + out["candidate_scores"] + out["logits_processors"] + out["log_softmax"]
    out["beam_search_other"] = round(out["beam_search_total"] - inside, 3)
    return out


if __name__ == "__main__":
    main()
