"""Stage 3: align a GeniusRec checkpoint with TRL's DPOTrainer on preference pairs (toward novelty and diversity).

    python -m train.dpo --model runs/ml-1m-geniusrec --pairs data/ml-1m-pairs --output_dir runs/ml-1m-geniusrec-dpo --use_peft
    python -m train.dpo --model runs/ml-1m-geniusrec --pairs data/ml-1m-pairs --output_dir runs/dpo-full --beta 0.1
    accelerate launch -m train.dpo --model runs/ml-1m-geniusrec --pairs data/ml-1m-pairs --output_dir runs/dpo --use_peft

The stock `trl.DPOTrainer` trains GeniusRec's packed causal view (`[history, SEP, session, EOS]`) with the item
tokenizer as `processing_class`. The pairs carry the history's times and the request time; [`TimedPreferenceCollator`]
aligns them to the packed rows, and TRL passes them on to `base_model(...)`, so DPO trains the same function
(times included) that is evaluated and that generates. RPO (DPO plus the NLL of the chosen session, `rpo_alpha` in
older TRL) is TRL 1.16's `--loss_type sigmoid sft --loss_weights 1.0 ALPHA`. With `--use_peft` a LoRA adapter is
trained and the reference model is the adapter disabled; otherwise the whole model is trained against a frozen copy.
Saves the adapter (with PEFT) and a merged model under `<output_dir>/merged` that loads with
`AutoModel.from_pretrained` and generates.
"""

import copy
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field

import datasets
import torch
from transformers import AutoTokenizer
from trl import DPOConfig, DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference

from data_scripts.arguments import make_parser, run_cli
from modeling_geniusrec import GeniusRecForSessionGeneration

from .evaluation.reporting import write_model_card
from .evaluation.results import provenance, write_json_atomic
from .runner import (
    leave_together,
    load_checkpoint,
    output_dir_lock,
    parse_with_config,
    remove_resume_checkpoints,
    resume_checkpoint,
)


@dataclass
class DPOScriptArguments:
    model: str = field(default=None, metadata={"help": "stage-2 GeniusRec checkpoint (with its tokenizer)"})
    pairs: str = field(default=None, metadata={"help": "pairs dataset from train.build_preference_pairs"})
    use_peft: bool = field(default=False, metadata={"help": "train a LoRA adapter; the reference is the adapter disabled"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha"})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout"})
    keep_checkpoints: bool = field(default=False, metadata={"help": "keep the Trainer's resume checkpoints (checkpoint-N: pickled "
                                                                    "optimizer and RNG state) after a successful run"})
    lora_target_modules: str = field(default="q_proj,k_proj,v_proj,o_proj,output_projection",
                                     metadata={"help": "comma-separated module names the adapter wraps"})


class TimedPreferenceCollator(DataCollatorForPreference):
    """TRL's preference collator plus the time policy: `timestamps` `(2B, L)` aligned to the packed rows (the prompt's
    history times, 0 at `[SEP]`, session and pad positions) and `next_timestamps` `(2B,)` (the request time), for
    the chosen rows then the rejected rows, as TRL orders them. Rows are right-padded and truncated with
    `keep_start`, so the prompt times stay aligned."""

    def torch_call(self, examples):
        output = super().torch_call(examples)
        width = output["input_ids"].shape[1]
        times = torch.zeros(len(examples), width, dtype=torch.long)
        for row, example in enumerate(examples):
            prompt_times = list(example["prompt_timestamps"])[:width]
            if len(prompt_times) != len(example["prompt_ids"]) - 1:  # the prompt is the history + [SEP]
                raise ValueError(f"a pair's prompt has {len(example['prompt_ids']) - 1} items but {len(prompt_times)} timestamps")
            times[row, : len(prompt_times)] = torch.as_tensor(prompt_times, dtype=torch.long)
        output["timestamps"] = torch.cat([times, times])
        request = torch.as_tensor([int(e["next_timestamp"]) for e in examples], dtype=torch.long)
        output["next_timestamps"] = torch.cat([request, request])
        return output


def main(argv=None):
    parser = make_parser((DPOScriptArguments, DPOConfig), description=__doc__, config=True)
    parser.set_defaults(output_dir="runs/dpo", bf16=False, per_device_train_batch_size=32, learning_rate=5e-5, num_train_epochs=1,
                        beta=0.1, report_to="none", logging_steps=10, save_strategy="no", gradient_checkpointing=False,
                        use_cpu=not torch.cuda.is_available(), seed=42)
    script_args, dpo_args = parse_with_config(parser, argv)
    started = provenance("python -m train.dpo", argv)  # the commit whose code this process runs (read at start)
    if not script_args.model or not script_args.pairs:
        parser.error("--model and --pairs are required")
    model = load_checkpoint(script_args.model, ("geniusrec",), auto_class=GeniusRecForSessionGeneration)
    tokenizer = AutoTokenizer.from_pretrained(script_args.model)
    pairs = datasets.load_from_disk(script_args.pairs)
    missing = {"prompt", "chosen", "rejected", "prompt_timestamps", "next_timestamp"} - set(pairs.column_names)
    if missing:
        raise ValueError(f"{script_args.pairs} lacks the columns {sorted(missing)}: rebuild it with "
                         "`python -m train.build_preference_pairs` (pairs now carry the history's times)")
    peft_config, ref_model = None, None
    if script_args.use_peft:
        from peft import LoraConfig

        peft_config = LoraConfig(r=script_args.lora_r, lora_alpha=script_args.lora_alpha, lora_dropout=script_args.lora_dropout,
                                 target_modules=script_args.lora_target_modules.split(","))
    else:
        ref_model = copy.deepcopy(model).eval().requires_grad_(False)
    dpo_args.remove_unused_columns = False  # keep the time columns for the collator
    collator = TimedPreferenceCollator(pad_token_id=tokenizer.pad_token_id, max_length=dpo_args.max_length,
                                       truncation_mode="keep_start", pad_to_multiple_of=dpo_args.pad_to_multiple_of)
    columns = ["prompt", "chosen", "rejected", "prompt_timestamps", "next_timestamp"]
    trainer = DPOTrainer(model=model, ref_model=ref_model, args=dpo_args, train_dataset=pairs.select_columns(columns),
                         processing_class=tokenizer, peft_config=peft_config, data_collator=collator)
    with output_dir_lock(dpo_args.output_dir, "python -m train.dpo " + " ".join(sys.argv[1:] if argv is None else argv)):
        start = time.time()
        trainer.train(resume_from_checkpoint=resume_checkpoint(dpo_args, model))
        wall = time.time() - start
        trainer.save_model(dpo_args.output_dir)  # the adapter with PEFT, else the full model
        merged_dir = os.path.join(dpo_args.output_dir, "merged")
        history = [h for h in trainer.state.log_history if "loss" in h]
        summary = {**started, "config": asdict(script_args), "beta": dpo_args.beta,
                   "loss_type": str(dpo_args.loss_type), "loss_weights": dpo_args.loss_weights,
                   "learning_rate": dpo_args.learning_rate, "num_train_epochs": dpo_args.num_train_epochs, "max_steps": dpo_args.max_steps,
                   "wall_time_s": round(wall, 1), "train_log": history,
                   "world_size": dpo_args.world_size}
        if trainer.is_world_process_zero():  # one writer under `accelerate launch`
            model = trainer.accelerator.unwrap_model(trainer.model)
            merged = copy.deepcopy(model).merge_and_unload() if script_args.use_peft else model  # keep the adapter model intact
            merged.model_card = None  # the stage-2 card read at load time does not describe this model: its own is written below
            merged.save_pretrained(merged_dir)
            tokenizer.save_pretrained(merged_dir)
            write_model_card(merged_dir, {"model": "geniusrec (DPO)", "metrics": {}, "protocol": "preference pairs from the train view",
                                          "dataset": {"name": "the pairs' dataset"}, "command": summary.get("command"), "seed": dpo_args.seed,
                                          "epochs": dpo_args.num_train_epochs, "wall_time_s": summary["wall_time_s"],
                                          "machine": summary.get("machine"), "date": summary.get("date")})
            write_json_atomic(os.path.join(dpo_args.output_dir, "dpo_summary.json"), summary)
            pickled = os.path.join(dpo_args.output_dir, "training_args.bin")
            if os.path.exists(pickled):
                os.remove(pickled)
            if not script_args.keep_checkpoints:  # after success the folder holds safetensors/JSON only
                remove_resume_checkpoints(dpo_args.output_dir)
        leave_together(trainer)  # ranks leave together: a rank exiting while rank 0 still writes aborts (gloo)
        print(json.dumps({"merged": merged_dir, "steps": len(history), "last": history[-1] if history else None}, default=str)[:500])
        return trainer, summary


if __name__ == "__main__":
    sys.exit(run_cli(main))
