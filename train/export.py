"""Export a stage-1 checkpoint's encoder with `torch.export` (dynamic batch and history length) into its folder.

    python -m train.export --model runs/quickstart/hstu

Writes `<model>/encoder.pt2` (the program: histories -> user states) and `<model>/item_vectors.safetensors`, then checks
parity with the eager model on random histories of lengths 1 .. max_position_embeddings and several batch sizes (the
largest absolute difference is printed; above `--tolerance` it is an error). `train.serve --exported` answers top-k
requests with the program. See `modeling_geniusrec/export.py` for using it without the package.
"""

import sys
import time
from dataclasses import dataclass, field

import torch

from data_scripts.arguments import make_parser, parse_args, run_cli
from modeling_geniusrec.export import export_encoder, load_exported


@torch.no_grad()
def parity(model, module, lengths, batches, seed: int = 0) -> float:
    """The largest |eager - exported| over random histories of each length and batch size."""
    generator = torch.Generator().manual_seed(seed)
    config, worst = model.config, 0.0
    for length in lengths:
        for batch in batches:
            ids = torch.randint(config.num_special_tokens, config.vocab_size, (batch, length), generator=generator)
            times = torch.sort(torch.randint(0, 10**9, (batch, length), generator=generator), dim=1).values
            mask = torch.ones(batch, length, dtype=torch.bool)
            if length > 1:
                mask[0, : length // 2] = False  # a left-padded row
            request = times[:, -1] + 60
            eager = model(input_ids=ids, attention_mask=mask, timestamps=times, next_timestamps=request).user_embeddings
            worst = max(worst, float((eager - module(ids, mask, times, request)).abs().max()))
    return worst


@dataclass
class ExportArguments:
    model: str = field(metadata={"help": "stage-1 checkpoint folder (HSTU or SASRec); the program is written into it"})
    tolerance: float = field(default=1e-5, metadata={"help": "largest accepted |eager - exported| of the user states"})


def main(argv=None):
    (args,) = parse_args(make_parser(ExportArguments, description=__doc__), argv)
    from transformers import AutoTokenizer

    from .runner import load_checkpoint

    model = load_checkpoint(args.model, ("hstu", "sasrec"), tokenizer=AutoTokenizer.from_pretrained(args.model)).eval()
    start = time.time()
    export_encoder(model, args.model)
    module, _, _ = load_exported(args.model)
    window = model.config.max_position_embeddings
    lengths = sorted({1, 2, 3, window // 2, window - 1, window} - {0})
    worst = parity(model, module, lengths, (1, 3, 8))
    print(f"exported {args.model}/encoder.pt2 in {time.time() - start:.1f} s; parity with eager on lengths {lengths} x batches "
          f"(1, 3, 8): max |difference| {worst:.2e}")
    if worst > args.tolerance:
        raise ValueError(f"the exported program differs from the eager model by {worst:.2e} (> --tolerance {args.tolerance})")
    return worst


if __name__ == "__main__":
    sys.exit(run_cli(main))
