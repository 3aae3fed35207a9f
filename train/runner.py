"""Helpers shared by the training scripts: JSON configs under flags, model building, results files."""

import contextlib
import os
import re
import sys
import time

from transformers import EarlyStoppingCallback, TrainerCallback

import modeling_geniusrec  # noqa: F401  (registers the Auto classes)
from data_scripts.arguments import parse_args, parse_mapping
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


def resume_checkpoint(training_args, model=None):
    """`--resume_from_checkpoint` as `Trainer.train` takes it: a folder, or `true`/`last` for the newest
    `checkpoint-*` under `--output_dir` (an error when there is none, rather than silently starting over), or `auto`:
    the newest checkpoint when there is one, else a fresh start (with a note), refusing a folder that holds a
    finished run; the one command a long run is started and continued with. Under `auto`, a folder whose only
    checkpoints were cut short (killed during the first save) is a fresh start too, with a note, so a scheduler that
    repeats the same command recovers.

    With `model` (the model the command built), the chosen checkpoint must hold the same run: the same model type,
    the same catalog (fingerprint) and the same parameter names and shapes, checked from `config.json` and the
    weights file's header before the Trainer loads anything (it loads non-strictly); otherwise one line names what
    the folder holds and what the command asks.

    Resuming also restores every stateful callback saved in the checkpoint's `trainer_state.json` (transformers'
    `restore_callback_states_from_checkpoint`): early stopping's patience counter is training state, and a counter
    that restarted at 0 made a resumed run train longer than the same run uninterrupted."""
    value = training_args.resume_from_checkpoint
    if value is None or value == "":
        return None
    training_args.restore_callback_states_from_checkpoint = True
    lowered = str(value).lower()
    if lowered in ("auto", "true", "last", "1"):
        folder = training_args.output_dir
        found = sorted((entry for entry in (os.listdir(folder) if os.path.isdir(folder) else []) if re.fullmatch(r"checkpoint-\d+", entry)),
                       key=lambda entry: int(entry.split("-")[1]), reverse=True)
        if lowered == "auto" and not found:  # one command for the first start and every continuation (long runs across sessions)
            if os.path.exists(os.path.join(folder, "model.safetensors")):
                raise FileExistsError(f"--resume_from_checkpoint auto: {folder!r} holds a finished run (model.safetensors, no "
                                      "checkpoint-* left): nothing to continue; use another --output_dir to train again")
            print(f"note: --resume_from_checkpoint auto: no checkpoint in {folder!r} yet, starting from scratch", file=sys.stderr)
            training_args.resume_from_checkpoint = None
            return None
        for entry in found:  # the newest complete one: a save cut short (disk full, killed) is skipped with a note
            problem = checkpoint_problem(os.path.join(folder, entry))
            if problem is None:
                if model is not None:
                    check_same_run(os.path.join(folder, entry), model)
                return os.path.join(folder, entry)
            print(f"note: skipping {os.path.join(folder, entry)}: {problem} (an interrupted save)", file=sys.stderr)
        if lowered == "auto":  # every checkpoint was cut short (killed during the first save): nothing to resume
            print(f"note: --resume_from_checkpoint auto: no complete checkpoint in {folder!r}, starting from scratch", file=sys.stderr)
            training_args.resume_from_checkpoint = None
            return None
        raise FileNotFoundError(f"--resume_from_checkpoint {value}: no checkpoint-* folder{' that is complete' if found else ''} in {folder!r}; "
                                "pass the checkpoint folder itself or drop the flag to start from scratch")
    if not os.path.isdir(value):
        raise FileNotFoundError(f"--resume_from_checkpoint {value!r} is not a folder (expected <output_dir>/checkpoint-<step>)")
    problem = checkpoint_problem(value)
    if problem is not None:
        raise ValueError(f"--resume_from_checkpoint {value!r}: {problem} (an interrupted save); resume from an earlier checkpoint-* folder")
    if model is not None:
        check_same_run(value, model)
    return value


def _run_summary(config: dict) -> str:
    """'a hstu run (catalog 1efffd4b..., hidden_size 50, 2 layers)' from a config dict, for refusals."""
    parts = [f"catalog {config.get('catalog_fingerprint') or 'unknown'}"]
    parts += [f"{key} {config[key]}" for key in ("vocab_size", "hidden_size", "num_hidden_layers") if config.get(key) is not None]
    return f"a {config.get('model_type', 'unknown')} run ({', '.join(parts)})"


def check_same_run(checkpoint: str, model) -> None:
    """Refuses, before any weight is loaded, a Trainer checkpoint that holds another run than the one `model` starts:
    another model type, another catalog (dataset fingerprint), or other parameter names or shapes (another config
    shape). The Trainer's own loading is non-strict (missing and unexpected keys are only warned about), which made
    a SASRec command load an HSTU checkpoint and an HSTU command on another dataset resume silently with the old
    catalog's weights under the new catalog's fingerprint."""
    import json

    config_file = os.path.join(checkpoint, "config.json")
    if not os.path.isfile(config_file):
        return  # an adapter-only checkpoint (PEFT): the Trainer loads it through PEFT, which checks its own keys
    with open(config_file) as f:
        held = json.load(f)
    asked = model.config.to_dict()
    refuse = f"--resume_from_checkpoint: {checkpoint} holds {_run_summary(held)} but this command trains {_run_summary(asked)}"
    fix = "; use another --output_dir (or the command that started that run)"
    if held.get("model_type") != asked.get("model_type"):
        raise ValueError(f"{refuse}: another model type{fix}")
    if held.get("catalog_fingerprint") and asked.get("catalog_fingerprint") and held["catalog_fingerprint"] != asked["catalog_fingerprint"]:
        raise ValueError(f"{refuse}: another dataset (catalog fingerprint){fix}")
    weights = os.path.join(checkpoint, "model.safetensors")
    if not os.path.isfile(weights):
        return
    from safetensors import safe_open

    with safe_open(weights, framework="pt") as f:
        stored = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    state = model.state_dict()
    present = {tensor.data_ptr() for name, tensor in state.items() if name in stored}
    wrong = [name for name in stored if name not in state or tuple(state[name].shape) != stored[name]]
    wrong += [name for name, tensor in state.items() if name not in stored and tensor.data_ptr() not in present]  # tied copies are not saved
    if wrong:
        differing = [f"{key} {held[key]} vs {asked[key]}" for key in sorted(held) if key in asked and held[key] != asked[key]
                     and not isinstance(held[key], dict) and key not in ("transformers_version", "_name_or_path", "architectures", "dtype")]
        detail = ", ".join(differing[:4]) if differing else f"{len(wrong)} parameters differ, e.g. {wrong[0]}"
        raise ValueError(f"{refuse}: another config shape ({detail}){fix}")


def checkpoint_problem(folder: str) -> str | None:
    """Why a Trainer checkpoint folder cannot be resumed from, or None when it is complete: the Trainer writes
    `trainer_state.json` after the weights and the optimizer, so a folder without a readable one, or without its
    weights, is a save that was cut short."""
    import json

    state = os.path.join(folder, "trainer_state.json")
    if not os.path.isfile(state):
        return "no trainer_state.json"
    try:
        with open(state) as f:
            json.load(f)
    except (OSError, ValueError):
        return "trainer_state.json is truncated or unreadable"
    weights = [name for name in os.listdir(folder) if name.endswith(".safetensors") or name in ("pytorch_model.bin", "adapter_model.bin")]
    if not weights:
        return "no model weights"
    for name in weights:
        if name.endswith(".safetensors"):
            try:
                from safetensors import safe_open

                with safe_open(os.path.join(folder, name), framework="pt") as f:
                    f.keys()
            except Exception:  # noqa: BLE001 - any failure to read the header means a damaged file
                return f"{name} is truncated or unreadable"
    return None


LOCK_NAME = ".geniusrec.lock"


@contextlib.contextmanager
def output_dir_lock(output_dir: str, command: str):
    """Holds `<output_dir>/.geniusrec.lock` (pid, host, start time, command) while a training run writes there, so that
    a second run with the same `--output_dir` refuses at start, naming the running one, instead of both writing
    checkpoints into one folder. A lock left by a process that no longer exists on this host is stale and replaced
    (with a note). Only the main process of a distributed run holds it."""
    import json
    import socket

    from data_scripts.preprocessing import pid_alive

    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, LOCK_NAME)
    host = socket.gethostname()
    mine = {"pid": os.getpid(), "host": host, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": command}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                with open(path) as f:
                    other = json.load(f)
            except (OSError, ValueError):
                other = {}  # unreadable: treated as held by an unknown run
            pid, other_host = other.get("pid"), other.get("host")
            if other_host == host and isinstance(pid, int) and not pid_alive(pid):
                print(f"note: removing a stale lock in {output_dir!r} (pid {pid} has ended)", file=sys.stderr)
                os.remove(path)
                continue
            raise FileExistsError(f"--output_dir {output_dir!r} is in use by another run (pid {pid} on {other_host}, since {other.get('started')}: "
                               f"{other.get('command')}); wait for it to finish or choose another --output_dir "
                               f"(if that run is gone, delete {path})") from None
        with os.fdopen(fd, "w") as f:
            json.dump(mine, f)
        break
    try:
        yield
    finally:
        try:
            with open(path) as f:
                if json.load(f).get("pid") == os.getpid():
                    os.remove(path)
        except (OSError, ValueError):
            pass


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
    try:
        with open(config_file) as f:
            model_type = json.load(f).get("model_type")
    except ValueError as error:
        raise ValueError(f"{config_file}: not valid JSON ({error}); the checkpoint is damaged: restore it or train it again") from error
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
    broken = [name for name, tensor in model.state_dict().items() if tensor.is_floating_point() and not bool(tensor.isfinite().all())]
    if broken:
        raise ValueError(f"{path!r}: weights {broken[:5]} hold NaN or infinite values (a diverged or damaged run); retrain it or use an "
                         "earlier checkpoint")
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


class WallClockCallback(TrainerCallback):
    """The run's wall clock, across resumptions: stamps every evaluation log entry with `elapsed_s` (seconds since the
    run began, evaluations included, earlier segments of a resumed run counted: a resumed run starts from the last
    `elapsed_s` of its checkpoint's log) and stops training at the first epoch end past `max_seconds` (if given);
    `stopped` tells whether it did."""

    def __init__(self, max_seconds: float | None = None):
        self.max_seconds, self.start, self.elapsed_before, self.stopped = max_seconds, None, 0.0, False

    def elapsed(self) -> float:
        """Seconds of the whole run so far (this segment plus the resumed checkpoint's)."""
        return self.elapsed_before + (time.time() - self.start if self.start is not None else 0.0)

    def timings(self, epochs: float | None) -> dict:
        """What a results file says of time: `wall_time_s` (the whole run, across resumptions), `seconds_per_epoch`
        (of the whole run), `segment_wall_time_s` (this process's part)."""
        total = self.elapsed()
        return {"wall_time_s": round(total, 1), "seconds_per_epoch": round(total / max(epochs or 1, 1e-9), 2),
                "segment_wall_time_s": round(total - self.elapsed_before, 1)}

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.time()  # the Trainer has loaded a resumed checkpoint's state (and log) by now
        self.elapsed_before = max((entry.get("elapsed_s", 0.0) for entry in state.log_history), default=0.0)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self.start is not None and state.log_history and "eval_ndcg@10" in state.log_history[-1]:
            state.log_history[-1]["elapsed_s"] = round(self.elapsed(), 2)

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.max_seconds is not None and self.start is not None and self.elapsed() >= self.max_seconds:
            control.should_training_stop, self.stopped = True, True


def content_files(entries, legacy: dict) -> dict[str, str]:
    """`{name: file under <dataset>/embeddings/}` of a training script: `--content NAME=FILE` entries (or a config's
    JSON object) plus the script's older per-modality flags, `legacy` = `{kind: (how the flag reads, file or None)}`;
    the same kind named twice with two files is a `ValueError`."""
    files = parse_mapping(entries, "--content")
    for kind, (flag, file_name) in legacy.items():
        if file_name and files.setdefault(kind, file_name) != file_name:
            raise ValueError(f"--content {kind}={files[kind]} and {flag} name two tables for {kind!r}")
    return files


def evaluate_splits(trainer, unwrapped, store, data_args, eval_set, test_set, validate: bool = True) -> dict:
    """`{"validation": {...}, "test": {...}}` next-item metrics of the trained (best) model, `{}` for a split not run
    (`validate=False`; `--evaluate_test false`). Early stopping is removed first (these evaluations select nothing);
    cold items (cold-items protocol) are reset to new-item rows before the test; the test metrics carry the
    target-popularity buckets (`head_/torso_/tail_*`) and their cut points (`popularity_buckets`)."""
    from .evaluation.buckets import store_buckets
    from .evaluation.ranking import make_compute_metrics

    trainer.remove_callback(EarlyStoppingCallback)
    validation = trainer.evaluate(eval_set, metric_key_prefix="validation") if validate else {}
    if store.cold_items is not None:  # cold-items: the held-out items are scored as new items (see data_scripts.splits)
        unwrapped().reset_item_ids(store.cold_items)
    test, description = {}, None
    if data_args.evaluate_test:
        config = unwrapped().config
        buckets, description = store_buckets(store, data_args.protocol, data_args.holdout_length, config.vocab_size, config.num_special_tokens)
        trainer.compute_metrics = make_compute_metrics(unwrapped, test_set, data_args.filter_history, buckets=buckets)
        test = trainer.evaluate(test_set, metric_key_prefix="test")
    strip = lambda metrics, prefix: {k[len(prefix) + 1 :]: v for k, v in metrics.items() if k.startswith(prefix + "_")}  # noqa: E731
    metrics = {"validation": strip(validation, "validation"), "test": strip(test, "test")}
    if metrics["test"]:
        metrics["test"]["popularity_buckets"] = description  # the cut points of the head_/torso_/tail_ metrics
    return metrics


GLOO_SETTLE_SECONDS = 0.2  # leave_together's pause after the last barrier (the GIL released)


def leave_together(trainer) -> None:
    """The end of a run under `accelerate launch`: every rank waits for the others (rank 0 may still be writing
    results and plots), then the process group is destroyed. A rank that exits while another still works, with the
    group alive, can abort in gloo's threads ("terminate called without an active exception"). One process: no-op.

    Between the barrier and the destruction each rank sleeps `GLOO_SETTLE_SECONDS`, which releases the GIL: gloo's
    worker thread frees the barrier's work objects after the barrier returns, and freeing their tensors takes the
    GIL. The group's C++ destructor, run when its last Python holder goes (DDP's reducer, freed with the model when
    the command returns), joins that thread while holding the GIL; if the thread still waits for the GIL, both wait
    forever (pytorch/pytorch#56297; seen once in `.ci/run`: a DPO rank hung at exit in `~ProcessGroupGloo`)."""
    import time

    import torch

    trainer.accelerator.wait_for_everyone()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        time.sleep(GLOO_SETTLE_SECONDS)
        torch.distributed.destroy_process_group()


def write_run_results(results: dict, output_dir: str, results_file: str | None) -> None:
    """A training run's results: `results_file` (when given) and `<output_dir>/results.json`, then the model card and
    plots of `train.evaluation.reporting.write_reports`."""
    from .evaluation.reporting import write_reports
    from .evaluation.results import write_json_atomic

    write_json_atomic(results_file or os.path.join(output_dir, "results.json"), results)
    if results_file:
        write_json_atomic(os.path.join(output_dir, "results.json"), results)
    write_reports(output_dir, results)


def parse_with_config(parser, argv=None, renamed: dict | None = None):
    """Parses dataclasses from the command line; `--config file.json` (or `--config=file.json`) supplies defaults that
    flags override; hyphenated flags of earlier releases are accepted with a deprecation note. Batch sizes, epochs and
    learning rates of a `TrainingArguments` are checked here, so a bad value is one line rather than a DataLoader
    traceback. `renamed` (`{"old_name": "new_name"}`): older flag / config-key names still accepted, with a warning."""
    parsed = parse_args(parser, argv, renamed=renamed)
    for args in parsed:
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
            value = getattr(args, name, None)
            if value is not None and value < 1:
                parser.error(f"--{name} must be >= 1, got {value}")
        if getattr(args, "learning_rate", 0) < 0:
            parser.error(f"--learning_rate must be >= 0, got {args.learning_rate}")
        if getattr(args, "num_train_epochs", 1) <= 0 and getattr(args, "max_steps", -1) <= 0:
            parser.error(f"--num_train_epochs must be > 0 (or set --max_steps), got {args.num_train_epochs}")
    return parsed


def save_final_checkpoint(trainer, output_dir: str, keep_checkpoints: bool = False) -> None:
    """Saves the (best) model and tokenizer with safetensors and JSON only: the Trainer's pickled
    `training_args.bin` becomes `training_args.json`, and the resume checkpoints (optimizer and RNG pickles) are
    removed unless `keep_checkpoints`."""
    trainer.save_model(output_dir)
    if not trainer.is_world_process_zero():
        return
    pickled = os.path.join(output_dir, "training_args.bin")
    if os.path.exists(pickled):
        os.remove(pickled)
    with open(os.path.join(output_dir, "training_args.json"), "w") as f:
        f.write(trainer.args.to_json_string())
    if not keep_checkpoints:
        remove_resume_checkpoints(output_dir)


def remove_resume_checkpoints(output_dir: str) -> None:
    """Removes the Trainer's `checkpoint-<step>` folders (pickled optimizer and RNG state) from `output_dir`; nothing
    else is touched."""
    import shutil

    for entry in os.listdir(output_dir):
        if re.fullmatch(r"checkpoint-\d+", entry) and os.path.isdir(os.path.join(output_dir, entry)):
            shutil.rmtree(os.path.join(output_dir, entry), ignore_errors=True)


def sample_users(view, count: int | None, seed: int = 0):
    """Keeps a seeded random `count` rows of an evaluation view (all of them when `count` is None or not smaller), in
    the view's order; the same seed picks the same row indices in every view of the same users."""
    if count is not None and count < len(view):
        import numpy as np

        view.select(np.sort(np.random.default_rng(seed).choice(len(view), count, replace=False)))
    elif count is not None:
        print(f"note: --max_eval_users {count} is not below the {view.split} view's {len(view)} users: every user is evaluated",
              file=sys.stderr)
    return view


def stopped_by(state, args, out_of_time: bool = False) -> str:
    """"max_epochs" when the configured epochs (or steps) all ran, "time_budget" when `--max_train_seconds` stopped
    it, else "early_stopping"."""
    if out_of_time and (state.epoch or 0) < args.num_train_epochs - 1e-6:
        return "time_budget"
    if args.max_steps and args.max_steps > 0:
        return "max_steps" if state.global_step >= args.max_steps else "early_stopping"
    return "max_epochs" if (state.epoch or 0) >= args.num_train_epochs - 1e-6 else "early_stopping"
