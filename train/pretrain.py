"""Stage 1: train an HSTU (or SASRec) next-item model with `transformers.Trainer` on a processed dataset.

Evaluates full-ranking HR/NDCG/MRR on the validation view every epoch, keeps the best checkpoint by validation
NDCG@10 (early stopping), scores the test view once and writes a results JSON.

    python -m train.pretrain --config train/configs/ml-1m-hstu.json --dataset data/ml-1m --output_dir runs/hstu
    python -m train.pretrain --dataset data/ml-1m --output_dir runs/quick --num_train_epochs 3 --max_length 50
    accelerate launch -m train.pretrain --config train/configs/ml-1m-hstu.json --dataset data/ml-1m --output_dir runs/hstu
    # the HSTU reference protocol (train on seq[:-1], test scored every epoch, no validation), labelled as such:
    python -m train.pretrain --config train/configs/ml-1m-hstu.json --protocol hstu-reference ...
"""

import sys
import warnings
from dataclasses import asdict, dataclass, field

import torch
from transformers import EarlyStoppingCallback, Trainer, TrainingArguments, set_seed

from data_scripts.arguments import make_parser, run_cli
from data_scripts.processed import NextItemCollator, NextItemDataset, dataset_name, load_processed, resolve_filter_history, streaming_train_examples
from data_scripts.splits import SequenceStore, protocol_store

from .console import quiet_trainer
from .evaluation.ranking import keep_user_embeddings, make_compute_metrics
from .evaluation.results import TABLE_KEYS, format_table, provenance
from .runner import (
    MODELS,
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
    model_type: str = field(default="hstu", metadata={"help": "hstu or sasrec", "choices": ["hstu", "sasrec"]})
    hidden_size: int = field(default=50, metadata={"help": "embedding / hidden dimension D"})
    num_hidden_layers: int = field(default=2, metadata={"help": "number of blocks"})
    num_attention_heads: int = field(default=1, metadata={"help": "attention heads per block"})
    qk_head_dim: int = field(default=50, metadata={"help": "HSTU: query/key dimension per head"})
    v_head_dim: int = field(default=50, metadata={"help": "HSTU: value/gate dimension per head"})
    intermediate_size: int = field(default=50, metadata={"help": "SASRec: feed-forward hidden size"})
    dropout: float = field(default=0.2, metadata={"help": "dropout on embeddings and inside blocks"})
    attention_normalization: str = field(default="padded", metadata={"help": "HSTU divisor N: padded, length or causal"})
    loss_type: str = field(default="sampled_softmax", metadata={"help": "sampled_softmax or full_softmax"})
    num_negatives: int = field(default=128, metadata={"help": "negatives per position for the sampled softmax"})
    negatives_sharing: str = field(default="position", metadata={"help": "position (reference) or batch (shared, faster on CPU)"})
    logit_scale: float = field(default=20.0, metadata={"help": "inverse temperature: scores are logit_scale * cos(user, item) (the same "
                                                              "knob as train.finetune's)"})
    softmax_temperature: float = field(default=None, metadata={"help": "deprecated: use --logit_scale (= 1 / temperature)"})
    init_from: str = field(default=None, metadata={"help": "start from this checkpoint folder instead of random weights"})
    text_embeddings: str = field(default=None, metadata={"help": "item content: a file under <dataset>/embeddings/ (data_scripts.embed "
                                                                   "--output_name), added to every item vector through an adapter "
                                                                   "(item = ID + adapter(text)); unset = ID only"})
    image_embeddings: str = field(default=None, metadata={"help": "the same for an image table (e.g. image.safetensors); items without an "
                                                                    "image add nothing"})
    content: list[str] = field(default=None, metadata={"help": "NAME=FILE ...: more content tables under <dataset>/embeddings/ (each added "
                                                              "to the item vector through its own adapter; a config file may "
                                                              "give a JSON object)"})
    content_preprocessing: str = field(default="whiten", metadata={"help": "what is done to the content tables first: raw, center, "
                                                                             "whiten (ZCA) or shrink (soft whitening, see --content_shrink)",
                                                                     "choices": ["raw", "center", "whiten", "shrink"]})
    content_shrink: float = field(default=1.0, metadata={"help": "shrink's ridge, in units of the mean covariance eigenvalue"})
    content_adapter: str = field(default="linear", metadata={"help": "content row -> item vector: linear or mlp",
                                                               "choices": ["linear", "mlp"]})
    item_id_init: str = field(default=None, metadata={"help": "initialise the ID table from a content file under <dataset>/embeddings/: "
                                                              "its leading principal components (centred), scaled to the init's std; "
                                                              "items without content keep the random init"})
    item_id_anchor: float = field(default=0.0, metadata={"help": "with --item_id_init: add this weight x the mean over items of "
                                                                "w_i ||E_i - init_i||^2, w_i proportional to 1 / (1 + the item's training "
                                                                "interactions): rare items' ID rows stay near their text rows, frequent "
                                                                "ones move freely (0: off)"})
    item_id_dropout: float = field(default=0.0, metadata={"help": "probability of dropping an item's ID vector per training batch "
                                                                  "(content must carry the item, as for a new one)"})
    future_items: int = field(default=1, metadata={"help": "the dense multi-item objective: every position also predicts the items "
                                                           "2..k ahead in its training window, one head per offset (1: next item only)"})
    future_loss_weight: float = field(default=1.0, metadata={"help": "weight of the mean further-ahead loss (with --future_items > 1)"})


@dataclass
class DataArguments:
    dataset: str = field(default=None, metadata={"help": "processed dataset folder (data_scripts.movielens / amazon_reviews)"})
    max_length: int = field(default=200, metadata={"help": "longest history fed to the model (most recent items)"})
    protocol: str = field(default="leave-one-out", metadata={"help": "leave-one-out, hstu-reference, sessions or cold-items (a tenth of "
                                                                     "the items held out of training; test on users whose target is one)",
                                                             "choices": ["leave-one-out", "hstu-reference", "sessions", "cold-items"]})
    holdout_length: int = field(default=10, metadata={"help": "k of the sessions protocol: items held out per user for validation "
                                                                 "and again for test (formerly --session_length)"})
    filter_history: str = field(default="auto", metadata={"help": "items removed from each ranking: full (everything the user saw "
                                                                     "before the target), window (the input window only, as the HSTU "
                                                                     "reference code), none; auto = window under hstu-reference, else full"})
    early_stopping_patience: int = field(default=10, metadata={"help": "epochs without validation NDCG@10 gain before stopping"})
    results_file: str = field(default=None, metadata={"help": "results JSON (default: <output_dir>/results.json)"})
    streaming: bool = field(default=False, metadata={"help": "stream training rows from the Arrow shards, split across processes "
                                                             "(large datasets; needs --max_steps)"})
    num_shards: int = field(default=8, metadata={"help": "shards of the streamed training data"})
    show_recommendations: int = field(default=0, metadata={"help": "print top-10 titles for this many users (from their whole history)"})
    keep_checkpoints: bool = field(default=False, metadata={"help": "keep the Trainer's resume checkpoints (pickled optimizer state) after training"})
    evaluate_test: bool = field(default=True, metadata={"help": "score the test split at the end; false for runs that only choose "
                                                                 "settings on validation (the test split stays unread)"})
    max_eval_users: int = field(default=None, metadata={"help": "validate and test on a seeded sample of this many users of each view (the same "
                                                                 "users every epoch; recorded in the results) instead of all: for catalogs "
                                                                 "where a full-ranking pass over every user costs more than training "
                                                                 "(default: all users)"})
    max_train_seconds: float = field(default=None, metadata={"help": "stop at the first epoch end past this many seconds of training in this sitting "
                                                                       "(validation included); the best checkpoint so far is tested"})


def build_model(model_args: ModelArguments, data_args: DataArguments, vocab_size: int, tokenizer=None):
    if model_args.model_type not in MODELS:
        raise ValueError(f"--model_type must be one of {sorted(MODELS)}, got {model_args.model_type!r}")
    config_class, model_class = MODELS[model_args.model_type]
    if model_args.init_from:
        return load_checkpoint(model_args.init_from, (model_args.model_type,), tokenizer)
    common = dict(
        vocab_size=vocab_size, hidden_size=model_args.hidden_size, num_hidden_layers=model_args.num_hidden_layers,
        num_attention_heads=model_args.num_attention_heads, max_position_embeddings=data_args.max_length,
        hidden_dropout_prob=model_args.dropout, loss_type=model_args.loss_type, num_negatives=model_args.num_negatives,
        negatives_sharing=model_args.negatives_sharing, logit_scale=model_args.logit_scale,
    )
    tables = load_content_tables(data_args.dataset, model_args)
    common.update(content_embedding_dims={kind: table.shape[1] for kind, table in tables.items()}, content_adapter=model_args.content_adapter,
                  item_id_dropout=model_args.item_id_dropout, future_items=model_args.future_items,
                  future_loss_weight=model_args.future_loss_weight,
                  content_preprocessing={kind: model_args.content_preprocessing for kind in tables})
    if model_args.model_type == "hstu":
        config = config_class(qk_head_dim=model_args.qk_head_dim, v_head_dim=model_args.v_head_dim,
                              attention_normalization=model_args.attention_normalization, **common)
    else:
        config = config_class(intermediate_size=model_args.intermediate_size, **common)
    model = model_class(config)
    for kind, table in tables.items():
        model.set_item_embeddings(kind, table)
    if model_args.item_id_init:
        from data_scripts.embedders import pca_rows
        from data_scripts.processed import load_item_embeddings
        from modeling_geniusrec.modeling_sequential import content_present

        rows = pca_rows(load_item_embeddings(data_args.dataset, model_args.item_id_init)[0], config.hidden_size, config.initializer_range)
        with torch.no_grad():
            weight = model.get_input_embeddings().weight
            present = content_present(rows)
            weight[present] = rows[present].to(weight)
        model.config.item_id_init = model_args.item_id_init
        model.item_id_anchor_rows = rows  # what --item_id_anchor pulls rare items back to (not a weight: never saved)
    return model


def load_content_tables(dataset: str, model_args: ModelArguments) -> dict:
    """`{kind: (vocab_size, width) table}` for the content files named by `--text_embeddings` / `--image_embeddings` /
    `--content NAME=FILE`, preprocessed (`--content_preprocessing`); empty for an ID-only model."""
    from data_scripts.embedders import prepare_content_table
    from data_scripts.processed import load_item_embeddings

    files = content_files(model_args.content, {"text": (f"--text_embeddings {model_args.text_embeddings}", model_args.text_embeddings),
                                                "image": (f"--image_embeddings {model_args.image_embeddings}", model_args.image_embeddings)})
    tables = {}
    for kind, file_name in files.items():
        table, _ = load_item_embeddings(dataset, file_name)
        tables[kind] = prepare_content_table(table, model_args.content_preprocessing, model_args.content_shrink)
    return tables


def main(argv=None, summary: bool = True):
    """`python -m train.pretrain`; `summary=False` leaves out the final console table (the pipeline prints its own)."""
    parser = make_parser((ModelArguments, DataArguments, TrainingArguments), description=__doc__, config=True)
    parser.set_defaults(
        output_dir="runs/pretrain", num_train_epochs=100, per_device_train_batch_size=128, per_device_eval_batch_size=256,
        learning_rate=1e-3, weight_decay=0.0, adam_beta2=0.98, lr_scheduler_type="constant", eval_strategy="epoch",
        save_strategy="epoch", logging_strategy="epoch", save_total_limit=2, load_best_model_at_end=True,
        metric_for_best_model="ndcg@10", greater_is_better=True, report_to="none", remove_unused_columns=False,
        dataloader_num_workers=0, dataloader_pin_memory=torch.cuda.is_available(), seed=42,
    )
    model_args, data_args, training_args = parse_with_config(parser, argv, renamed={"session_length": "holdout_length"})
    started = provenance("python -m train.pretrain", argv)  # the commit whose code this process runs (read at start)
    check_arguments(parser, model_args, data_args, training_args)
    set_seed(training_args.seed)
    sequences, items, tokenizer, stats = load_processed(data_args.dataset)
    store = protocol_store(SequenceStore.from_dataset(sequences), data_args.protocol, len(tokenizer), tokenizer.num_special_tokens)
    reference = data_args.protocol == "hstu-reference"
    train_set, eval_set, test_set = build_datasets(store, sequences, data_args, training_args)
    if reference:  # no model selection on the test view
        training_args.load_best_model_at_end = False
        training_args.save_strategy = "no"

    model = build_model(model_args, data_args, len(tokenizer), tokenizer)
    model.config.catalog_fingerprint = tokenizer.catalog_fingerprint()  # checked by every later loader
    model.exclude_items_from_training(store.cold_items)  # cold-items: held-out items are no candidate while training
    selecting = not reference and training_args.eval_strategy != "no"
    clock = WallClockCallback(data_args.max_train_seconds)
    callbacks = [clock] + ([EarlyStoppingCallback(data_args.early_stopping_patience)] if selecting else [])
    anchor = {}
    if model_args.item_id_anchor:
        from .evaluation.baselines import item_user_counts

        counts, _ = item_user_counts(store, data_args.protocol, data_args.holdout_length, len(tokenizer))
        anchor = dict(anchor_rows=model.item_id_anchor_rows, anchor_strength=model_args.item_id_anchor,
                      anchor_weights=anchor_weights(counts, model.item_id_anchor_rows, tokenizer.num_special_tokens))
    trainer = (AnchoredTrainer if anchor else Trainer)(
        model=model, args=training_args, train_dataset=train_set, eval_dataset=eval_set,
        data_collator=NextItemCollator(tokenizer.pad_token_id), processing_class=tokenizer,
        preprocess_logits_for_metrics=keep_user_embeddings, callbacks=callbacks, **anchor,
    )
    quiet_trainer(trainer, training_args.log_level)
    data_args.filter_history = resolve_filter_history(data_args.filter_history, data_args.protocol)
    unwrapped = lambda: trainer.accelerator.unwrap_model(trainer.model)  # noqa: E731
    trainer.compute_metrics = make_compute_metrics(unwrapped, eval_set, data_args.filter_history)
    with output_dir_lock(training_args.output_dir, "python -m train.pretrain " + " ".join(sys.argv[1:] if argv is None else argv)):
        resumed = resume_checkpoint(training_args, model)
        trainer.train(resume_from_checkpoint=resumed)
        metrics = evaluate_splits(trainer, unwrapped, store, data_args, eval_set, test_set, validate=not reference)
        save_final_checkpoint(trainer, training_args.output_dir, data_args.keep_checkpoints)
        results = {
            "metrics": metrics,
            "protocol": data_args.protocol,
            "filter_history": data_args.filter_history,
            "model": model_args.model_type,
            "config": {**asdict(model_args), **asdict(data_args), "model_config": trainer.model.config.to_dict()},
            "dataset": {"name": dataset_name(stats, data_args.dataset), **{k: stats[k] for k in ("users", "items", "interactions")}},
            "evaluated_users": {"validation": len(eval_set), "test": len(test_set)},
            "seed": training_args.seed,
            "epochs": trainer.state.epoch,
            "best_epoch": _best_epoch(trainer.state),
            **clock.timings(trainer.state.epoch),
            **started,
            "resumed_from": resumed,
            "stopped_by": stopped_by(trainer.state, training_args, clock.stopped),
            "eval_history": [h for h in trainer.state.log_history if "eval_ndcg@10" in h],
            "train_loss_history": [h["loss"] for h in trainer.state.log_history if "loss" in h],
            "world_size": training_args.world_size,
        }
        if trainer.is_world_process_zero():
            write_run_results(results, training_args.output_dir, data_args.results_file)
            if summary:
                _print_table(results)
            if data_args.show_recommendations:
                from .recommend import print_recommendations_for

                print_recommendations_for(trainer.model, tokenizer, data_args.dataset, data_args.show_recommendations)
        leave_together(trainer)
        return results


def anchor_weights(counts, rows: torch.Tensor, num_special: int) -> torch.Tensor:
    """`--item_id_anchor`'s per-item weights `(vocab_size,)`: `1 / (1 + training interactions)` for items with a text row,
    0 for special tokens and items without one, normalised to sum 1."""
    from modeling_geniusrec.modeling_sequential import content_present

    weights = 1.0 / (1.0 + torch.as_tensor(counts, dtype=torch.float32))
    weights[:num_special] = 0.0
    weights = weights * content_present(rows).float()
    return weights / weights.sum().clamp(min=1e-12)


class AnchoredTrainer(Trainer):
    """`Trainer` whose training loss adds `anchor_strength * sum_i anchor_weights_i ||E_i - anchor_rows_i||^2` over the
    ID table `E` (`--item_id_anchor`): text keeps rare items' ID rows near their text rows while frequent items move."""

    def __init__(self, *args, anchor_rows: torch.Tensor, anchor_weights: torch.Tensor, anchor_strength: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.anchor_rows, self.anchor_weights, self.anchor_strength = anchor_rows, anchor_weights, anchor_strength

    def anchor_loss(self, model) -> torch.Tensor:
        table = self.accelerator.unwrap_model(model).get_input_embeddings().weight
        rows, weights = self.anchor_rows.to(table), self.anchor_weights.to(table)
        return self.anchor_strength * (weights * (table - rows).pow(2).sum(-1)).sum()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if model.training:
            loss = loss + self.anchor_loss(model)
        return (loss, outputs) if return_outputs else loss


def check_arguments(parser, model_args, data_args, training_args) -> None:
    """Argument combinations `parse_with_config` cannot see on its own (one `parser.error` line each); the deprecated
    `--softmax_temperature t` becomes `--logit_scale 1/t` with a FutureWarning."""
    if model_args.softmax_temperature is not None:  # the older name of the same knob, for one release
        if model_args.softmax_temperature <= 0:
            parser.error(f"--softmax_temperature must be > 0, got {model_args.softmax_temperature}")
        warnings.warn("--softmax_temperature is deprecated: use --logit_scale (= 1 / temperature)", FutureWarning, stacklevel=3)
        model_args.logit_scale, model_args.softmax_temperature = 1.0 / model_args.softmax_temperature, None
    if not data_args.dataset:
        parser.error("--dataset is required (a processed folder, e.g. data/ml-1m)")
    if data_args.max_length < 1:
        parser.error(f"--max_length must be >= 1, got {data_args.max_length}")
    if model_args.item_id_anchor and not model_args.item_id_init:
        parser.error("--item_id_anchor pulls ID rows toward their text rows: it needs --item_id_init <file> (the rows)")
    if model_args.item_id_anchor < 0:
        parser.error(f"--item_id_anchor must be >= 0, got {model_args.item_id_anchor}")
    if data_args.max_eval_users is not None and data_args.max_eval_users < 1:
        parser.error(f"--max_eval_users must be >= 1 (or left out: every user), got {data_args.max_eval_users}")
    if data_args.streaming and training_args.max_steps <= 0:
        parser.error("--streaming needs --max_steps (a stream has no length)")


def build_datasets(store, sequences, data_args, training_args):
    """(training examples, the evaluation view, test users). `--streaming`: training reads Arrow shards as a
    `datasets.IterableDataset` that accelerate shards across processes. Evaluation views are ordered by length
    (batches of similar lengths pad little: same metrics, ~2.5x faster); the HSTU reference protocol evaluates on test."""
    split_kwargs = dict(max_length=data_args.max_length, protocol=data_args.protocol, holdout_length=data_args.holdout_length)
    if data_args.streaming:
        train_set = streaming_train_examples(sequences, data_args.max_length, data_args.protocol, data_args.holdout_length,
                                             num_shards=data_args.num_shards, seed=training_args.seed)
        training_args.accelerator_config.dispatch_batches = False
    else:
        train_set = NextItemDataset(store, "train", **split_kwargs)
    eval_split = "test" if data_args.protocol == "hstu-reference" else "validation"
    eval_set = sample_users(NextItemDataset(store, eval_split, **split_kwargs), data_args.max_eval_users).order_by_length()
    test_set = sample_users(NextItemDataset(store, "test", **split_kwargs), data_args.max_eval_users).order_by_length()
    return train_set, eval_set, test_set


def _best_epoch(state):
    if state.best_metric is None:
        return None
    for entry in state.log_history:
        if entry.get("eval_ndcg@10") == state.best_metric:
            return entry.get("epoch")
    return None


def _print_table(results):
    label = "HSTU reference protocol" if results["protocol"] == "hstu-reference" else results["protocol"]
    print(f"\n{results['model']} on {results['dataset']['users']:,} users ({label}, history filter: {results['filter_history']}), "
          f"{results['epochs']:.0f} epochs, {results['wall_time_s']} s")
    print(format_table({split: m for split, m in results["metrics"].items() if m}, TABLE_KEYS, name_width=12))


if __name__ == "__main__":
    sys.exit(run_cli(main))
