"""Stage 2: fine-tune GeniusRec (HSTU encoder + MoE decoder) to generate the next session, with `transformers.Trainer`.

Each epoch draws, per user of the train view, a split point: the source is the history before it, the target the
next `--target_length` items + EOS. Validation ranks the next item with the decoder's first step (the same
full-ranking metrics as stage 1); the best checkpoint by validation NDCG@10 is kept. With `--protocol sessions`
the test users' sessions are then generated with beam search and scored against the real next k items, with the
popularity and stage-1 baselines in the same table. With `--prefix_samples P` (prefix packing) each user's stage-1
window is encoded once and the decoder trains at P split points of it, beside the encoder's own next-item loss at
every position of the window (`--encoder_loss_weight`): a joint stage 2 at about stage 1's cost per epoch
(`modeling_geniusrec/prefix_sessions.py`; cost: BENCHMARKS "Joint stage 2").

    python -m train.finetune --dataset data/ml-1m --encoder_path runs/ml-1m-hstu --output_dir runs/ml-1m-geniusrec
    python -m train.finetune --dataset data/ml-1m --encoder_path runs/ml-1m-hstu-sessions --protocol sessions \\
        --stage1_baseline runs/ml-1m-hstu-sessions --use_text_embeddings --output_dir runs/ml-1m-geniusrec-sessions
    python -m train.finetune --config train/configs/ml-1m-geniusrec.json --dataset data/ml-1m --encoder_path runs/ml-1m-hstu \\
        --freeze_encoder false --prefix_samples 4 --encoder_loss_weight 1 --output_dir runs/ml-1m-geniusrec-joint
    accelerate launch -m train.finetune --dataset data/ml-1m --encoder_path runs/ml-1m-hstu --output_dir runs/gr
"""

import os
import sys
from dataclasses import asdict, dataclass, field

import torch
from transformers import EarlyStoppingCallback, Trainer, TrainingArguments, set_seed

from data_scripts.arguments import make_parser, parse_mapping, run_cli
from data_scripts.embedders import prepare_content_table
from data_scripts.processed import (
    NextItemDataset,
    PrefixSessionDataset,
    SessionCollator,
    SessionTrainingDataset,
    dataset_name,
    load_item_embeddings,
    load_processed,
    resolve_filter_history,
)
from data_scripts.splits import SequenceStore, protocol_store
from modeling_geniusrec import GeniusRecConfig, GeniusRecForSessionGeneration, HSTUConfig

from .console import quiet_trainer
from .evaluation import sessions as session_eval
from .evaluation.baselines import item_user_counts
from .evaluation.ranking import make_compute_metrics
from .evaluation.reporting import gate_statistics, plot_gate_weights
from .evaluation.results import TABLE_KEYS, format_table, provenance
from .runner import (
    WallClockCallback,
    content_files,
    evaluate_splits,
    leave_together,
    load_checkpoint,
    output_dir_lock,
    parse_with_config,
    resume_checkpoint,
    sample_users,
    save_final_checkpoint,
    stopped_by,
    write_run_results,
)


@dataclass
class ModelArguments:
    encoder_path: str = field(default=None, metadata={"help": "stage-1 HSTU checkpoint to start the encoder from (random init if unset)"})
    init_from: str = field(default=None, metadata={"help": "continue from a GeniusRec checkpoint instead"})
    freeze_encoder: bool = field(default=False, metadata={"help": "keep the encoder's weights fixed"})
    num_hidden_layers: int = field(default=2, metadata={"help": "decoder layers"})
    num_attention_heads: int = field(default=2, metadata={"help": "decoder / expert heads (divides the encoder's hidden size)"})
    intermediate_size: int = field(default=200, metadata={"help": "decoder feed-forward size"})
    dropout: float = field(default=0.1, metadata={"help": "decoder dropout"})
    use_text_embeddings: bool = field(default=False, metadata={"help": "build the text expert from <dataset>/embeddings/<text_embeddings>"})
    text_embeddings: str = field(default="text.safetensors", metadata={"help": "file under <dataset>/embeddings/ (data_scripts.embed --output_name)"})
    use_image_embeddings: bool = field(default=False, metadata={"help": "build the image expert from <dataset>/embeddings/image.safetensors"})
    content: list[str] = field(default=None, metadata={"help": "NAME=FILE ...: content tables under <dataset>/embeddings/, each the table "
                                                              "of an expert NAME (e.g. --content text=text.safetensors audio=audio.safetensors;"
                                                              " a config file may give a JSON object); adds to --use_text/image_embeddings"})
    expert_types: list[str] = field(default=None, metadata={"help": "NAME=TYPE ...: the registered expert type of each expert (default: "
                                                                   "behaviour=behaviour, and 'content' for every content table); see "
                                                                   "modeling_geniusrec/experts.py"})
    router_aux_loss_coef: float = field(default=0.01, metadata={"help": "weight of the gate's load-balancing loss"})
    content_output: bool = field(default=True, metadata={"help": "add projected text/image embeddings to the output item vectors"})
    content_output_confidence: bool = field(default=False, metadata={"help": "with --content_output: weight each item's content in its "
                                                                              "output vector by a learned confidence from its training "
                                                                              "interactions (tail and new items lean on content, head "
                                                                              "items on their IDs)"})
    content_gate_confidence: bool = field(default=False, metadata={"help": "the expert gate also reads the history's and each position's "
                                                                            "item training counts (a zero-initialised map), to learn "
                                                                            "when content is worth trusting"})
    content_preprocessing: str = field(default="whiten", metadata={"help": "what is done to stage 2's own content tables first: raw, "
                                                                             "center, whiten or shrink (an encoder's tables stay as stage 1 "
                                                                             "made them)", "choices": ["raw", "center", "whiten", "shrink"]})
    next_item_loss_weight: float = field(default=1.0, metadata={"help": "weight of the first session position (the next item) in the loss"})
    session_set_loss_weight: float = field(default=0.0, metadata={"help": "weight of the multi-label loss: at each position, every item "
                                                                           "still to come in the session is a target (0: off)"})
    logit_scale: float = field(default=20.0, metadata={"help": "inverse temperature of the cosine output head"})
    encoder_learning_rate: float = field(default=None, metadata={"help": "learning rate of the encoder's weights when it is not frozen "
                                                                       "(joint fine-tuning; default: --learning_rate)"})
    encoder_loss_weight: float = field(default=0.0, metadata={"help": "weight of the encoder's own stage-1 next-item loss (every "
                                                                       "history position) beside the session loss; needs an unfrozen "
                                                                       "encoder (0: off)"})


@dataclass
class DataArguments:
    dataset: str = field(default=None, metadata={"help": "processed dataset folder"})
    protocol: str = field(default="leave-one-out", metadata={"help": "leave-one-out (next-item table), sessions (session table) or "
                                                                     "cold-items (item cold start, see data_scripts.splits)",
                                                             "choices": ["leave-one-out", "sessions", "cold-items"]})
    holdout_length: int = field(default=10, metadata={"help": "k of the sessions protocol: items held out per user for validation "
                                                                 "and again for test (formerly --session_length)"})
    target_length: int = field(default=10, metadata={"help": "items per training target session (+ EOS)"})
    max_length: int = field(default=200, metadata={"help": "history length fed to the encoder"})
    samples_per_user: int = field(default=1, metadata={"help": "training split points drawn per user and epoch"})
    prefix_samples: int = field(default=0, metadata={"help": "prefix packing: per user and epoch, this many split points of the "
                                                             "stage-1 window (its last max_length + 1 train items) trained from "
                                                             "one encoder pass, with --encoder_loss_weight's loss at every "
                                                             "position of the same window (0: off, one encoder pass per split)"})
    filter_history: str = field(default="auto", metadata={"help": "items removed from rankings and banned from sessions: full "
                                                                     "(whole history, default), window (input window only) or none"})
    early_stopping_patience: int = field(default=5, metadata={"help": "epochs without validation NDCG@10 gain"})
    num_beams: int = field(default=10, metadata={"help": "beams for session generation"})
    stage1_baseline: str = field(default=None, metadata={"help": "stage-1 checkpoint (same split) whose top-k list is the session baseline"})
    first_step_weight: float = field(default=0.0, metadata={"help": "sessions protocol's test table: the decoder's first-step scores "
                                                                     "mixed into every step with this weight (train.evaluate's flag)"})
    encoder_query_weight: float = field(default=0.0, metadata={"help": "sessions protocol's test table: the encoder's own next-item "
                                                                        "scores mixed into every step with this weight (train.evaluate's flag)"})
    results_file: str = field(default=None, metadata={"help": "results JSON (default <output_dir>/results.json)"})
    evaluate_test: bool = field(default=True, metadata={"help": "score the test split at the end (false while comparing variants: "
                                                                 "choose on validation, read the test once for the winner)"})
    keep_checkpoints: bool = field(default=False, metadata={"help": "keep the Trainer's resume checkpoints (pickled optimizer state) after training"})
    max_eval_users: int = field(default=None, metadata={"help": "validate and test (the session table included) on a seeded sample of "
                                                                 "this many users of each view, recorded in the results (default: all)"})
    max_train_seconds: float = field(default=None, metadata={"help": "stop at the first epoch end past this many seconds of training in "
                                                                      "this sitting (validation included; a time-budget run); the best "
                                                                      "checkpoint so far is tested"})


def build_model(model_args, data_args, vocab_size, max_length, tokenizer=None):
    if model_args.init_from:
        return load_checkpoint(model_args.init_from, ("geniusrec",), tokenizer, auto_class=GeniusRecForSessionGeneration)
    tables = {}
    legacy = {"text": (f"--use_text_embeddings ({model_args.text_embeddings})", model_args.use_text_embeddings and model_args.text_embeddings),
              "image": ("--use_image_embeddings (image.safetensors)", model_args.use_image_embeddings and "image.safetensors")}
    for kind, file_name in content_files(model_args.content, legacy).items():
        table, meta = load_item_embeddings(data_args.dataset, file_name)
        tables[kind] = (prepare_content_table(table, model_args.content_preprocessing), meta)
    expert_types = parse_mapping(model_args.expert_types, "--expert_types")
    if expert_types:  # named ones override the defaults: the behaviour expert and a content expert per table
        expert_types = {"behaviour": "behaviour", **{kind: "content" for kind in tables}, **expert_types}
    kwargs = dict(num_hidden_layers=model_args.num_hidden_layers, num_attention_heads=model_args.num_attention_heads,
                  intermediate_size=model_args.intermediate_size, hidden_dropout_prob=model_args.dropout,
                  max_session_length=max(data_args.target_length, data_args.holdout_length),
                  content_embedding_dims={kind: table.shape[1] for kind, (table, _) in tables.items()},
                  expert_types=expert_types or None,
                  router_aux_loss_coef=model_args.router_aux_loss_coef, logit_scale=model_args.logit_scale,
                  next_item_loss_weight=model_args.next_item_loss_weight,
                  session_set_loss_weight=model_args.session_set_loss_weight, content_output=model_args.content_output,
                  encoder_loss_weight=model_args.encoder_loss_weight,
                  content_output_confidence=model_args.content_output_confidence, content_gate_confidence=model_args.content_gate_confidence,
                  content_output_norm=False)  # the tables are preprocessed (mean row norm 1): no LayerNorm blow-up
    if model_args.encoder_path:
        stage1 = load_checkpoint(model_args.encoder_path, ("hstu",), tokenizer)  # refuses a GeniusRec or foreign checkpoint
        model = GeniusRecForSessionGeneration.from_encoder_pretrained(stage1, **kwargs)
    else:
        model = GeniusRecForSessionGeneration(GeniusRecConfig(encoder_config=HSTUConfig(vocab_size=vocab_size, max_position_embeddings=max_length),
                                                              **kwargs))
    shared = model.model.encoder.embeddings.content_kinds  # the stage-1 encoder's own (preprocessed) tables are kept, not overwritten
    for kind, (table, meta) in tables.items():
        if kind not in shared:
            model.model.set_item_embeddings(kind, table)
            setattr(model.config, f"{kind}_embedding_source", meta.get("model", "unknown"))
    return model


def build_optimizer(model, training_args, encoder_learning_rate: float | None):
    """AdamW with the Trainer's settings (`--learning_rate`, `--weight_decay` on every weight, betas, eps), the encoder's
    trainable weights in their own group at `encoder_learning_rate`; None (no own rate) leaves it to the Trainer."""
    if encoder_learning_rate is None:
        return None
    encoder = {id(p) for p in model.model.encoder.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if id(p) not in encoder], "lr": training_args.learning_rate},
              {"params": [p for p in trainable if id(p) in encoder], "lr": encoder_learning_rate}]
    return torch.optim.AdamW([g for g in groups if g["params"]], betas=(training_args.adam_beta1, training_args.adam_beta2),
                             eps=training_args.adam_epsilon, weight_decay=training_args.weight_decay)


def first_step_states(logits, labels):
    """Trainer hook: keep the decoder's first-step states `(B, D)` (they rank the next item), never `(B, T, V)`."""
    hidden = logits[0] if isinstance(logits, (tuple, list)) else logits
    return hidden[:, 0]


def main(argv=None, summary: bool = True):
    """`python -m train.finetune`; `summary=False` leaves out the final console tables (the pipeline prints its own)."""
    parser = make_parser((ModelArguments, DataArguments, TrainingArguments), description=__doc__, config=True)
    parser.set_defaults(
        output_dir="runs/finetune", num_train_epochs=20, per_device_train_batch_size=128, per_device_eval_batch_size=256,
        learning_rate=1e-3, weight_decay=0.0, lr_scheduler_type="constant", eval_strategy="epoch", save_strategy="epoch",
        logging_strategy="epoch", save_total_limit=2, load_best_model_at_end=True, metric_for_best_model="ndcg@10",
        greater_is_better=True, report_to="none", remove_unused_columns=False,
        dataloader_pin_memory=torch.cuda.is_available(), seed=42, eval_on_start=True,
    )
    model_args, data_args, training_args = parse_with_config(parser, argv, renamed={"session_length": "holdout_length"})
    started = provenance("python -m train.finetune", argv)  # the commit whose code this process runs (read at start)
    check_arguments(parser, model_args, data_args)
    set_seed(training_args.seed)
    sequences, items, tokenizer, stats = load_processed(data_args.dataset)
    store = protocol_store(SequenceStore.from_dataset(sequences), data_args.protocol, len(tokenizer), tokenizer.num_special_tokens)
    model = prepare_model(model_args, data_args, tokenizer, store)
    train_set, eval_set, test_set = build_datasets(store, data_args, model.config.eos_token_id)
    collator = SessionCollator(model.config.pad_token_id, model.config.eos_token_id)
    clock = WallClockCallback(data_args.max_train_seconds)
    trainer = Trainer(model=model, args=training_args, train_dataset=train_set, eval_dataset=eval_set, data_collator=collator,
                      processing_class=tokenizer, preprocess_logits_for_metrics=first_step_states,
                      optimizers=(build_optimizer(model, training_args, model_args.encoder_learning_rate), None),
                      callbacks=[clock, EarlyStoppingCallback(data_args.early_stopping_patience)])
    quiet_trainer(trainer, training_args.log_level)
    data_args.filter_history = resolve_filter_history(data_args.filter_history, data_args.protocol)
    unwrapped = lambda: trainer.accelerator.unwrap_model(trainer.model)  # noqa: E731
    trainer.compute_metrics = make_compute_metrics(unwrapped, eval_set, data_args.filter_history)
    with output_dir_lock(training_args.output_dir, "python -m train.finetune " + " ".join(sys.argv[1:] if argv is None else argv)):
        resumed = resume_checkpoint(training_args, model)
        trainer.train(resume_from_checkpoint=resumed)
        metrics = {split: m for split, m in evaluate_splits(trainer, unwrapped, store, data_args, eval_set, test_set).items()
                   if m}  # no test entry without --evaluate_test
        save_final_checkpoint(trainer, training_args.output_dir, data_args.keep_checkpoints)
        model = trainer.accelerator.unwrap_model(trainer.model)
        if data_args.protocol == "sessions" and data_args.evaluate_test and trainer.is_world_process_zero():
            stage1 = load_checkpoint(data_args.stage1_baseline, ("hstu", "sasrec"), tokenizer) if data_args.stage1_baseline else None
            metrics["test"].update(session_eval.session_table(model, store, items, test_set, data_args.holdout_length, data_args.num_beams,
                                                              stage1=stage1, filter_history=data_args.filter_history,
                                                              first_step_weight=data_args.first_step_weight,
                                                              encoder_query_weight=data_args.encoder_query_weight))
        results = {
            "metrics": metrics, "protocol": data_args.protocol, "filter_history": data_args.filter_history, "model": "geniusrec",
            "dataset": {"name": dataset_name(stats, data_args.dataset), **{k: stats[k] for k in ("users", "items", "interactions")}},
            "evaluated_users": {"validation": len(eval_set), "test": len(test_set)},
            "config": {**asdict(model_args), **asdict(data_args), "model_config": model.config.to_dict()},
            "seed": training_args.seed, "epochs": trainer.state.epoch, **clock.timings(trainer.state.epoch),
            "stopped_by": stopped_by(trainer.state, training_args, clock.stopped),
            **started, "resumed_from": resumed,
            "eval_history": [h for h in trainer.state.log_history if "eval_ndcg@10" in h],
        }
        if trainer.is_world_process_zero():
            results["gate_weights"] = gate_statistics(model, store, test_set if data_args.evaluate_test else eval_set, collator)
            report(results, model, training_args.output_dir, data_args.results_file, summary)
        leave_together(trainer)
        return results


def check_arguments(parser, model_args, data_args) -> None:
    """Argument combinations `parse_with_config` cannot see on its own: one `parser.error` line each."""
    if not data_args.dataset:
        parser.error("--dataset is required")
    if data_args.max_length < 1:
        parser.error(f"--max_length must be >= 1, got {data_args.max_length}")
    if data_args.prefix_samples < 0 or (data_args.prefix_samples and data_args.samples_per_user != 1):
        parser.error("--prefix_samples must be >= 0 and replaces --samples_per_user (leave it at 1)")
    if model_args.freeze_encoder and (model_args.encoder_loss_weight or model_args.encoder_learning_rate is not None):
        parser.error("--encoder_loss_weight and --encoder_learning_rate train the encoder: drop --freeze_encoder (or those flags)")
    has_content = model_args.use_text_embeddings or model_args.use_image_embeddings or model_args.content
    if model_args.content_gate_confidence and not (has_content and not model_args.init_from):
        parser.error("--content_gate_confidence weighs content experts in the gate: it needs a content table (--use_text_embeddings / "
                     "--use_image_embeddings / --content), and no --init_from")
    if model_args.content_output_confidence and not (model_args.content_output and not model_args.init_from and has_content):
        parser.error("--content_output_confidence weights content in the output item vectors: it needs --content_output true and a "
                     "content table (--use_text_embeddings / --use_image_embeddings / --content), and no --init_from")


def prepare_model(model_args, data_args, tokenizer, store):
    """The model to train: built (or loaded) for this catalog, held-out items excluded, the encoder frozen when asked,
    `data_args.max_length` clipped to the encoder's positions (with a note; the results record the length used)."""
    model = build_model(model_args, data_args, len(tokenizer), data_args.max_length, tokenizer)
    model.config.catalog_fingerprint = tokenizer.catalog_fingerprint()
    model.exclude_items_from_training(store.cold_items)  # cold-items: held-out items are no candidate while training
    if getattr(model.model, "item_log_counts", None) is not None and not model_args.init_from:  # a checkpoint keeps its own
        counts, _ = item_user_counts(store, data_args.protocol, data_args.holdout_length, model.config.vocab_size)
        model.model.set_item_counts(counts)
    if model.config.vocab_size != len(tokenizer):
        raise ValueError(f"the encoder's vocabulary ({model.config.vocab_size}) differs from the dataset's ({len(tokenizer)})")
    if model_args.freeze_encoder:
        model.model.encoder.requires_grad_(False)
    max_length = min(data_args.max_length, model.config.encoder_config.max_position_embeddings)
    if max_length < data_args.max_length:
        print(f"note: --max_length {data_args.max_length} is longer than the encoder's max_position_embeddings; using {max_length} "
              "(recorded in the results)", file=sys.stderr)
        data_args.max_length = max_length
    return model


def build_datasets(store, data_args, eos_token_id):
    """(training sessions, validation users, test users); evaluation sets sorted by length (little padding per batch)."""
    split = dict(protocol=data_args.protocol, holdout_length=data_args.holdout_length)
    if data_args.prefix_samples:
        train_set = PrefixSessionDataset(store, data_args.max_length, data_args.target_length, data_args.protocol, eos_token_id,
                                         data_args.holdout_length, data_args.prefix_samples)
    else:
        train_set = SessionTrainingDataset(store, data_args.max_length, data_args.target_length, data_args.protocol, eos_token_id,
                                           data_args.holdout_length, data_args.samples_per_user)
    eval_set = sample_users(NextItemDataset(store, "validation", data_args.max_length, **split), data_args.max_eval_users).order_by_length()
    test_set = sample_users(NextItemDataset(store, "test", data_args.max_length, **split), data_args.max_eval_users).order_by_length()
    return train_set, eval_set, test_set


def report(results: dict, model, output_dir: str, results_file: str | None, summary: bool = True) -> None:
    """Writes the results (to `--results_file` and the run folder), the model card, plots, and (`summary`) the console tables."""
    write_run_results(results, output_dir, results_file)
    plot_gate_weights(results["gate_weights"], model.config.expert_names, os.path.join(output_dir, "plots", "gate_weights.png"))
    if not summary:
        return
    metrics = results["metrics"]
    print(f"\nGeniusRec ({results['protocol']}, history filter: {results['filter_history']}), {results['epochs']:.0f} epochs, "
          f"{results['wall_time_s']} s")
    print(format_table({split: metrics[split] for split in ("validation", "test") if split in metrics}, TABLE_KEYS, name_width=12))
    session_keys = [k for k in metrics.get("test", {}) if k.startswith(("session_", "hstu_session_", "popularity_session_"))]
    if session_keys:
        print(format_table({"test sessions": metrics["test"]}, session_keys[:8], name_width=14))


if __name__ == "__main__":
    sys.exit(run_cli(main))
