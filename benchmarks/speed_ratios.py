"""Speed of the package's HSTU encoder and losses against a plain PyTorch implementation of the same math.

    python -m benchmarks.speed_ratios --output benchmarks/results/speed-ratios.json

One process, the same random batch (128 users x 200 items, ML-1M-sized catalog of 3,706 items, right-padded
histories of 20-200 items, increasing timestamps), paper size (2 blocks, 1 head, 50 dims), training mode with
dropout. Four measurements, each forward + backward, repeated `--repeats` times with package and plain interleaved
(package, plain, package, plain, ...) after a warm-up; the ratio reported is the median over repeats of
package time / plain time:

- `encoder`: the encoder (`HSTUModel`) against `benchmarks/plain_hstu.PlainHSTU`, same weights;
- `sampled_position`, `sampled_shared`, `full`: the next-item loss on fixed encoder states (128 negatives per
  position, 512 negatives shared per batch, full softmax over the catalog) against `plain_hstu.plain_loss`, same
  negatives.

The plain side is in `benchmarks/plain_hstu.py`, not imported from the package. Targets: encoder <= 1.0x, each loss
<= 1.2x. `tests/test_speed_ratios.py` checks that both sides compute the same numbers.
"""

import argparse
import statistics
import time

import torch

from benchmarks.plain_hstu import PlainHSTU, plain_loss
from modeling_geniusrec import HSTUConfig, HSTUForNextItemPrediction
from train.evaluation.results import provenance, write_json_atomic

LOSSES = {"sampled_position": ("sampled_softmax", "position", 128, "position"),
          "sampled_shared": ("sampled_softmax", "batch", 512, "shared"),
          "full": ("full_softmax", "position", 128, "full")}


def random_batch(batch_size=128, length=200, num_items=3706, seed=0, num_special=4):
    """Right-padded random histories: `(input_ids, timestamps, next_timestamps, labels)`, `(B, N)` but the `(B,)`
    request times; labels are the next item."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min(20, length), length + 1, (batch_size,), generator=g)
    ids = torch.randint(num_special, num_special + num_items, (batch_size, length), generator=g)
    real = torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)
    ids = ids.masked_fill(~real, 0)
    times = torch.cumsum(torch.randint(1, 10**6, (batch_size, length), generator=g), dim=1) + 9 * 10**8
    next_times = times.gather(1, (lengths - 1).unsqueeze(1)).squeeze(1) + 3600
    times = times.masked_fill(~real, 0)
    has_next = torch.cat([real[:, 1:], torch.zeros_like(real[:, :1])], dim=1)
    labels = torch.cat([ids[:, 1:], ids[:, :1]], dim=1).masked_fill(~has_next, -100)
    return ids, times, next_times, labels


def build(seed=0, vocab_size=3710, **overrides):
    torch.manual_seed(seed)
    config = HSTUConfig(vocab_size=vocab_size, **overrides)
    model = HSTUForNextItemPrediction(config).train()
    return model, PlainHSTU.from_project(model)


def negatives_for(kind, num_positions, k, vocab_size, num_special=4):
    """The negatives the package's loss draws right after `torch.manual_seed` (same call, same shape)."""
    if kind == "shared":
        return torch.randint(num_special, vocab_size, (k,))
    if kind == "position":
        return torch.randint(num_special, vocab_size, (num_positions, k))
    return None


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(repeats=7, threads=None, batch_size=128, length=200):
    if threads:
        torch.set_num_threads(threads)
    ids, times, next_times, labels = random_batch(batch_size, length)
    results = {}
    model, plain = build()
    weights = torch.randn(model.config.hidden_size)

    def project_encoder():
        (model.model(ids, timestamps=times, next_timestamps=next_times).last_hidden_state @ weights).sum().backward()

    def plain_encoder():
        (plain(ids, times, next_times) @ weights).sum().backward()

    pairs = {"encoder": (project_encoder, plain_encoder)}
    hidden = torch.nn.functional.normalize(torch.randn(batch_size, length, model.config.hidden_size), dim=-1).requires_grad_()
    num_positions = int((labels != -100).sum())
    for name, (loss_type, sharing, k, kind) in LOSSES.items():
        lmodel, _ = build(loss_type=loss_type, negatives_sharing=sharing, num_negatives=k)
        table = lmodel.get_output_embeddings().weight

        def project_loss(lmodel=lmodel):
            torch.manual_seed(1)
            lmodel.next_item_loss(hidden, labels).backward()

        def plain_loss_step(kind=kind, k=k, table=table, lmodel=lmodel):
            torch.manual_seed(1)
            negatives = negatives_for(kind, num_positions, k, lmodel.config.vocab_size)
            plain_loss(hidden, table, labels, kind, negatives, lmodel.config.logit_scale).backward()

        pairs[name] = (project_loss, plain_loss_step)
    for name, (project_fn, plain_fn) in pairs.items():
        project_fn(), plain_fn()  # warm-up
        project_times, plain_times = [], []
        for _ in range(repeats):
            project_times.append(_timed(project_fn))
            plain_times.append(_timed(plain_fn))
        ratios = [a / b for a, b in zip(project_times, plain_times)]
        results[name] = {"ratio": round(statistics.median(ratios), 3), "project_s": round(statistics.median(project_times), 4),
                         "plain_s": round(statistics.median(plain_times), 4), "ratios": [round(r, 3) for r in ratios]}
        print(f"{name:18s} package {results[name]['project_s']:.4f} s   plain {results[name]['plain_s']:.4f} s   "
              f"ratio {results[name]['ratio']:.3f}", flush=True)
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=7, help="interleaved timed repeats per measurement (median reported)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--batch_size", type=int, default=128, help="users in the batch")
    p.add_argument("--length", type=int, default=200, help="history length")
    p.add_argument("--output", default=None, help="write the ratios here (JSON)")
    args = p.parse_args(argv)
    results = measure(args.repeats, args.threads, args.batch_size, args.length)
    out = {name: r["ratio"] for name, r in results.items()}
    out.update({"details": results, "threads": torch.get_num_threads(), "batch": [args.batch_size, args.length], "repeats": args.repeats,
                **provenance("python -m benchmarks.speed_ratios", argv)})
    if args.output:
        write_json_atomic(args.output, out)
    return out


if __name__ == "__main__":
    main()
