"""The stage-1 encoder as a `torch.export` program: a top-k service without Python model code.

    program = export_encoder(model, "runs/hstu")          # writes runs/hstu/encoder.pt2 and item_vectors.safetensors
    users = torch.export.load("runs/hstu/encoder.pt2").module()(input_ids, attention_mask, timestamps, next_timestamps)
    scores = users @ item_vectors.T * logit_scale          # (B, vocab_size): mask specials and the history, then topk

The program takes `input_ids`, `attention_mask` (bool), `timestamps` `(B, N)` and `next_timestamps` `(B,)` with any
batch size and any length from 1 to the model's `max_position_embeddings` (dynamic shapes), and returns the
unit-normalised user states `(B, D)` of `model(...).user_embeddings`. `item_vectors.safetensors` holds the tensor
`item_vectors` `(vocab_size, D)` and the metadata `logit_scale` and `num_special_tokens`. The input checks of the eager
model (ids in range, times present, no empty row) do not run inside the program: validate requests before calling it.
"""

import os

import torch

ENCODER_FILE = "encoder.pt2"
ITEMS_FILE = "item_vectors.safetensors"


class UserStates(torch.nn.Module):
    """`(input_ids, attention_mask, timestamps, next_timestamps) -> (B, D)` user states of a stage-1 model."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, timestamps, next_timestamps):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, timestamps=timestamps,
                          next_timestamps=next_timestamps).user_embeddings


def example_inputs(config, batch: int = 2, length: int = 3) -> tuple:
    ids = torch.full((batch, length), config.num_special_tokens, dtype=torch.long)
    times = torch.arange(length, dtype=torch.long).repeat(batch, 1)
    return ids, torch.ones(batch, length, dtype=torch.bool), times, times[:, -1] + 1


def export_encoder(model, folder: str | None = None, max_batch: int = 4096):
    """Exports `model`'s user states with a dynamic batch (1..`max_batch`) and length (1..`max_position_embeddings`);
    with `folder`, saves the program and the item vectors there. Returns the `ExportedProgram`."""
    if getattr(model.config, "is_encoder_decoder", False):
        raise ValueError("export_encoder takes a stage-1 model (HSTU, SASRec); GeniusRec's decoder generates step by step")
    model = model.eval()
    config = model.config
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    length = torch.export.Dim("length", min=1, max=config.max_position_embeddings)
    shapes = ({0: batch, 1: length}, {0: batch, 1: length}, {0: batch, 1: length}, {0: batch})
    with torch.no_grad():
        program = torch.export.export(UserStates(model), example_inputs(config), dynamic_shapes=shapes)
    if folder is not None:
        from safetensors.torch import save_file

        torch.export.save(program, os.path.join(folder, ENCODER_FILE))
        vectors = model.item_vectors(0, config.vocab_size).detach().contiguous()
        save_file({"item_vectors": vectors}, os.path.join(folder, ITEMS_FILE),
                  metadata={"logit_scale": str(float(config.logit_scale)), "num_special_tokens": str(config.num_special_tokens)})
    return program


def load_exported(folder: str):
    """`(program module, item vectors (vocab_size, D), logit_scale)` saved by [`export_encoder`]."""
    from safetensors import safe_open

    module = torch.export.load(os.path.join(folder, ENCODER_FILE)).module()
    with safe_open(os.path.join(folder, ITEMS_FILE), framework="pt") as f:
        vectors, metadata = f.get_tensor("item_vectors"), f.metadata()
    return module, vectors, float(metadata["logit_scale"])


__all__ = ["export_encoder", "load_exported", "UserStates", "ENCODER_FILE", "ITEMS_FILE"]
