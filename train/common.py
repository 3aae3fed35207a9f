"""Helpers shared by the training scripts: JSON configs under flags, model building, results files."""

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile

import torch

import modeling_geniusrec  # noqa: F401  (registers the Auto classes)
from modeling_geniusrec import HSTUConfig, HSTUForNextItemPrediction, SASRecConfig, SASRecForNextItemPrediction

MODELS = {"hstu": (HSTUConfig, HSTUForNextItemPrediction), "sasrec": (SASRecConfig, SASRecForNextItemPrediction)}


def make_compute_metrics(model_ref, dataset, filter_history: str = "full", ks=None):
    """`compute_metrics` for the Trainer, bound to the evaluated split view `dataset`: ranks each row's target (from
    the dataset, the one home of the evaluation target) among all items, from the gathered `(M, D)` query states
    (stage 1: the encoder's last state; GeniusRec: the decoder's first step), removing what the row's user has seen
    (`filter_history`: full / window / none). Rebind it (`trainer.compute_metrics = ...`) before evaluating another
    split."""
    import numpy as np

    from modeling_geniusrec.metrics import DEFAULT_KS, ranking_metrics, target_ranks

    targets, seen = dataset.targets(), dataset.filter_items(filter_history)

    def compute_metrics(eval_pred):
        model = model_ref()
        device = next(model.parameters()).device
        states = torch.as_tensor(np.asarray(eval_pred.predictions), device=device)
        if states.shape[0] != len(targets):
            raise RuntimeError(f"compute_metrics is bound to a {dataset.split} view of {len(targets)} rows but got {states.shape[0]} "
                               "predictions: rebind it with make_compute_metrics(..., <the evaluated dataset>)")
        return ranking_metrics(target_ranks(model, states, targets, seen), ks or DEFAULT_KS)

    return compute_metrics


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


def git_commit() -> str:
    """The code's git commit (`+dirty` when tracked files differ from it), or "unknown" outside a checkout."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def parse_with_config(parser, argv=None):
    """Parses dataclasses from the command line; `--config file.json` supplies defaults that flags override."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" in argv:
        at = argv.index("--config")
        path = argv[at + 1]
        if not os.path.exists(path):
            raise FileNotFoundError(f"config file {path!r} not found (frozen configs live in train/configs/)")
        with open(path) as f:
            defaults = json.load(f)
        del argv[at : at + 2]
        known = {action.dest for action in parser._actions}
        unknown = sorted(set(defaults) - known)
        if unknown:
            raise ValueError(f"{path}: unknown keys {unknown}; see --help for the accepted flags")
        parser.set_defaults(**defaults)
    outputs = parser.parse_args_into_dataclasses(args=argv)
    return tuple(o for o in outputs if not isinstance(o, argparse.Namespace))  # drop the namespace holding --config


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


def machine_description() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"


def write_json_atomic(path: str, payload: dict) -> None:
    """Writes JSON to a temp file beside `path`, then renames it into place."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, indent=2)
    os.replace(tmp, path)


def today() -> str:
    return datetime.date.today().isoformat()
