"""Helpers shared by the training scripts: JSON configs under flags, model building, results files."""

import os

import modeling_geniusrec  # noqa: F401  (registers the Auto classes)
from data_scripts.arguments import parse_args
from modeling_geniusrec import HSTUConfig, HSTUForNextItemPrediction, SASRecConfig, SASRecForNextItemPrediction

MODELS = {"hstu": (HSTUConfig, HSTUForNextItemPrediction), "sasrec": (SASRecConfig, SASRecForNextItemPrediction)}


def resume_checkpoint(training_args):
    """`--resume_from_checkpoint` as `Trainer.train` takes it: a folder, or `true`/`last` for the newest
    `checkpoint-*` under `--output_dir` (an error when there is none, rather than silently starting over)."""
    value = training_args.resume_from_checkpoint
    if value is None or value == "":
        return None
    if str(value).lower() in ("true", "last", "1"):
        from transformers.trainer_utils import get_last_checkpoint

        last = get_last_checkpoint(training_args.output_dir) if os.path.isdir(training_args.output_dir) else None
        if last is None:
            raise FileNotFoundError(f"--resume_from_checkpoint {value}: no checkpoint-* folder in {training_args.output_dir!r}; "
                                    "pass the checkpoint folder itself or drop the flag to start from scratch")
        return last
    if not os.path.isdir(value):
        raise FileNotFoundError(f"--resume_from_checkpoint {value!r} is not a folder (expected <output_dir>/checkpoint-<step>)")
    return value


def parse_with_config(parser, argv=None):
    """Parses dataclasses from the command line; `--config file.json` (or `--config=file.json`) supplies defaults that
    flags override; hyphenated flags of earlier releases are accepted with a deprecation note."""
    return parse_args(parser, argv)


def save_final_checkpoint(trainer, output_dir: str, keep_checkpoints: bool = False) -> None:
    """Saves the (best) model and tokenizer with safetensors and JSON only: the Trainer's pickled
    `training_args.bin` becomes `training_args.json`, and the resume checkpoints (optimizer and RNG pickles) are
    removed unless `keep_checkpoints`."""
    import glob
    import shutil

    trainer.save_model(output_dir)
    if not trainer.is_world_process_zero():
        return
    pickled = os.path.join(output_dir, "training_args.bin")
    if os.path.exists(pickled):
        os.remove(pickled)
    with open(os.path.join(output_dir, "training_args.json"), "w") as f:
        f.write(trainer.args.to_json_string())
    if not keep_checkpoints:
        for folder in glob.glob(os.path.join(output_dir, "checkpoint-*")):
            shutil.rmtree(folder, ignore_errors=True)


