"""Console output a person reads: one progress bar per stage, one small table row per evaluation.

[`quiet_trainer`] swaps the Trainer's log printers for [`ConsoleCallback`] (raw log dicts only with
`--log_level info` or `debug`) and turns off the per-save "Writing model shards" bars.
"""

import transformers
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from .evaluation.results import TABLE_KEYS, format_table


class QuietProgressCallback(ProgressCallback):
    """The Trainer's progress bars without the raw dict it writes under them at every log."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        return None


class ConsoleCallback(TrainerCallback):
    """Prints a header once and one aligned row per evaluation: epoch, train loss, validation metrics."""

    def __init__(self, keys=TABLE_KEYS):
        self.keys, self.header_done, self.last_loss = keys, False, None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.last_loss = logs["loss"]

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not state.is_world_process_zero or not metrics:
            return
        prefix = next((k.split("_")[0] for k in metrics if k.endswith("ndcg@10")), "eval")
        values = {k: metrics.get(f"{prefix}_{k}") for k in self.keys}
        if prefix != "eval" or all(v is None for v in values.values()):
            return  # the final validation/test evaluations get their own table
        epoch = state.epoch or 0.0
        row = {"epoch": int(round(epoch)) if abs(epoch - round(epoch)) < 1e-6 else round(epoch, 2), "train loss": self.last_loss, **values}
        lines = format_table({"": row}, list(row), name_width=0).split("\n")
        if not self.header_done:
            print(lines[0], flush=True)
            self.header_done = True
        print(lines[1], flush=True)


def quiet_trainer(trainer, log_level: str = "passive") -> None:
    """Readable console for `trainer`: a bar, a table row per evaluation; raw dicts only at log level info/debug."""
    verbose = log_level in ("info", "debug")
    if not verbose:
        transformers.utils.logging.disable_progress_bar()  # the per-save "Writing model shards" bars
        if trainer.args.disable_tqdm:
            trainer.remove_callback(PrinterCallback)
        else:
            trainer.pop_callback(ProgressCallback)
            trainer.add_callback(QuietProgressCallback)
    trainer.add_callback(ConsoleCallback())


__all__ = ["ConsoleCallback", "QuietProgressCallback", "quiet_trainer"]
