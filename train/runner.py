"""Helpers shared by the training scripts: JSON configs under flags, model building, results files."""

import os

import modeling_geniusrec  # noqa: F401  (registers the Auto classes)
from data_scripts.arguments import parse_args
from modeling_geniusrec import HSTUConfig, HSTUForNextItemPrediction, SASRecConfig, SASRecForNextItemPrediction

MODELS = {"hstu": (HSTUConfig, HSTUForNextItemPrediction), "sasrec": (SASRecConfig, SASRecForNextItemPrediction)}


def tune_cpu_allocator(enabled: bool | None = None) -> bool:
    """Lets glibc's malloc keep and reuse large freed blocks instead of returning them to the kernel at once.

    Beam search allocates several `(beams, vocab_size)` float tensors per step (tens of MB each); with glibc's
    defaults each one is a fresh `mmap` whose pages the kernel zeroes on first touch (256 ML-1M sessions: 1.15 s ->
    0.73 s, BENCHMARKS.md "Session generation speed"). This is the setting PyTorch's
    CPU tuning guide reaches with jemalloc/tcmalloc: a mmap threshold of 1 GiB, a trim threshold of 2 GiB and 256 MiB
    of top padding (`mallopt`), set at run time for this process only. Memory freed by the process is kept for
    reuse rather than returned to the system at once. Off with `enabled=False` or `GENIUSREC_TUNE_MALLOC=0`; a no-op
    (returns False) off glibc (macOS, Windows, musl). Inference entry points (`train.evaluate`, `train.recommend`,
    `benchmarks/generation_speed.py`, `benchmarks/session_decodings.py`) call it; training entry points do not (their timings stay comparable)."""
    import ctypes
    import ctypes.util
    import platform

    if enabled is None:
        enabled = os.environ.get("GENIUSREC_TUNE_MALLOC", "1") != "0"
    if not enabled or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # <malloc.h>
    return all(libc.mallopt(option, value) == 1 for option, value in
               ((m_mmap_threshold, 1 << 30), (m_trim_threshold, 1 << 31), (m_top_pad, 256 << 20)))


def resume_checkpoint(training_args):
    """`--resume_from_checkpoint` as `Trainer.train` takes it: a folder, or `true`/`last` for the newest
    `checkpoint-*` under `--output_dir` (an error when there is none, rather than silently starting over).

    Resuming also restores every stateful callback saved in the checkpoint's `trainer_state.json` (transformers'
    `restore_callback_states_from_checkpoint`): early stopping's patience counter is training state, and a counter
    that restarted at 0 made a resumed run train longer than the same run uninterrupted."""
    value = training_args.resume_from_checkpoint
    if value is None or value == "":
        return None
    training_args.restore_callback_states_from_checkpoint = True
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


def load_checkpoint(path: str, model_types=("hstu", "sasrec", "geniusrec"), tokenizer=None, auto_class=None, **kwargs):
    """Loads a checkpoint strictly, for every entry point.

    Raises `ValueError` naming the fix when: the folder has no config; its `model_type` is not one this command takes;
    weights are missing from or unexpected in `model.safetensors` (a renamed `model_type`, a truncated or foreign
    file); or its item vocabulary differs from `tokenizer`'s (the dataset's), by the `catalog_fingerprint` saved at
    training time (older checkpoints: by vocabulary size).
    """
    import json

    from transformers import AutoModelForCausalLM

    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        raise ValueError(f"{path!r} is not a checkpoint folder (no config.json); pass the output_dir of train.pretrain / train.finetune")
    with open(config_file) as f:
        model_type = json.load(f).get("model_type")
    if model_type not in model_types:
        raise ValueError(f"{path!r} is a {model_type!r} checkpoint; this command takes {' or '.join(model_types)} checkpoints")
    auto_class = auto_class or AutoModelForCausalLM
    model, info = auto_class.from_pretrained(path, output_loading_info=True, **kwargs)
    problems = {key: sorted(info.get(key) or []) for key in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    problems = {key: value for key, value in problems.items() if value}
    if problems:
        detail = "; ".join(f"{key.replace('_', ' ')}: {value[:5]}{' ...' if len(value) > 5 else ''}" for key, value in problems.items())
        raise ValueError(f"{path!r}: its weights do not match its config ({model_type}): {detail}. The folder was changed or mixed "
                         "with another model; retrain or restore it")
    if tokenizer is not None:
        check_catalog(model.config, tokenizer, path)
    return model


def check_catalog(config, tokenizer, path: str = "the checkpoint") -> None:
    """Raises when a model was trained on another item vocabulary than `tokenizer`'s (a dataset's)."""
    expected = getattr(config, "catalog_fingerprint", None)
    if expected is not None and expected != tokenizer.catalog_fingerprint():
        raise ValueError(f"{path!r} was trained on another item catalog than this dataset's (catalog fingerprint {expected} != "
                         f"{tokenizer.catalog_fingerprint()}): its item ids mean other items here; use the dataset it was trained on")
    if config.vocab_size != len(tokenizer):
        raise ValueError(f"{path!r} has a vocabulary of {config.vocab_size} tokens but this dataset has {len(tokenizer)}: "
                         "use the dataset it was trained on")


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


