"""Model cards and plots written next to every checkpoint (PNG, matplotlib's Agg backend: no screen needed)."""

import os
import re

import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .ranking import DEFAULT_KS  # noqa: E402


def plot_training_curves(history: list[dict], path: str) -> str:
    """Validation NDCG@10 / HR@10 per epoch (the Trainer's eval log)."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    epochs = [h["epoch"] for h in history]
    for key in ("eval_ndcg@10", "eval_hr@10"):
        ax.plot(epochs, [h.get(key) for h in history], marker="o", ms=3, label=key.replace("eval_", ""))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation metric")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def plot_metrics_vs_k(metrics: dict, path: str, title: str = "") -> str:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name in ("hr", "ndcg"):
        values = [metrics.get(f"{name}@{k}") for k in DEFAULT_KS]
        ax.plot(DEFAULT_KS, values, marker="o", label=name.upper())
    ax.set_xscale("log")
    ax.set_xticks(DEFAULT_KS, [str(k) for k in DEFAULT_KS])
    ax.set_xlabel("K")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def plot_gate_weights(statistics: dict, names: list[str], path: str) -> str:
    """Gate weight of each expert at each session position, one panel per user group (e.g. users whose next item is
    rare in training vs the others): the mean over the group's users as a line, their spread (one standard deviation)
    as a band. `statistics` is `{group: {"mean": (T, E), "std": (T, E), "users": n}}` (see [`gate_statistics`])."""
    groups = [g for g, stats in statistics.items() if stats["users"]]
    fig, axes = plt.subplots(1, max(len(groups), 1), figsize=(5.5 * max(len(groups), 1), 3.6), sharey=True, squeeze=False)
    for ax, group in zip(axes[0], groups):
        mean, std = statistics[group]["mean"], statistics[group]["std"]
        positions = list(range(1, len(mean) + 1))
        for e, name in enumerate(names):
            m = [float(row[e]) for row in mean]
            s = [float(row[e]) for row in std]
            ax.plot(positions, m, marker="o", label=name)
            ax.fill_between(positions, [a - b for a, b in zip(m, s)], [a + b for a, b in zip(m, s)], alpha=0.2)
        ax.set_title(f"{group} ({statistics[group]['users']} users)", fontsize=9)
        ax.set_xticks(positions)
        ax.set_xlabel("session position (the last one predicts EOS)")
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel("gate weight (mean +- std over users)")
    axes[0][0].legend(fontsize=8)
    return save_figure(fig, path)


def save_figure(fig, path: str) -> str:
    """Write `fig` to `path` (folders made, tight layout, 110 dpi), close it, return `path`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _table(metrics: dict) -> str:
    keys = [k for k in ("hr@10", "ndcg@10", "hr@50", "ndcg@50", "hr@200", "ndcg@200", "mrr", "session_recall@10",
                        "session_ndcg@10", "ild", "novelty", "coverage") if k in metrics]
    return "| " + " | ".join(keys) + " |\n|" + "---|" * len(keys) + "\n| " + " | ".join(f"{metrics[k]:.4f}" for k in keys) + " |"


CARD_METRICS = ("hr@10", "ndcg@10", "mrr", "session_recall@10", "session_ndcg@10")


def _model_index(name: str, dataset: str, results: dict) -> list[str]:
    """YAML lines of the card's `model-index`: the test metrics the Hub shows beside the model."""
    test = (results.get("metrics") or {}).get("test") or {}
    shown = [k for k in CARD_METRICS if isinstance(test.get(k), (int, float))]
    if not shown:
        return []
    slug = re.sub(r"[^a-z0-9]+", "-", dataset.lower()).strip("-") or "dataset"
    lines = ["model-index:", f"- name: {name}", "  results:", "  - task:", "      type: next-items", "      name: Next-item recommendation",
             "    dataset:", f"      name: {dataset}", f"      type: {slug}", "    metrics:"]
    for key in shown:
        lines += [f"    - type: {key}", f"      value: {float(test[key]):.4f}", f"      name: {key.upper()} (test, {results.get('protocol')})"]
    return lines


def usage_snippet(output_dir: str) -> list[str]:
    """A usage block that runs as written from the folder's parent (or with the Hub repo id in its place)."""
    from modeling_geniusrec import ItemTokenizer

    try:
        tokenizer = ItemTokenizer.from_pretrained(output_dir)
        examples = tokenizer.decode_items([tokenizer.num_special_tokens, tokenizer.num_special_tokens + 1])
    except (OSError, ValueError):
        examples = ["item-1", "item-2"]
    return ["```python", "from transformers import pipeline", "",
            f"recommender = pipeline(\"next-items\", model={output_dir!r}, trust_remote_code=True)",
            f"history = {{\"items\": {examples!r}, \"timestamps\": [978300760, 978301968]}}  # raw ids, oldest first; times in seconds (optional)",
            "print(recommender(history, k=10))  # [{'item_id': ..., 'title': ..., 'score': ...}, ...]", "```"]


def write_model_card(output_dir: str, results: dict, dataset_stats: dict | None = None) -> str:
    """README.md model card: YAML metadata (library, pipeline, dataset, model-index with the test metrics), data,
    metrics with their protocol, a usage snippet that runs as written, intended use and limits. Also kept on the
    saved model (`model_card`), so `save_pretrained` / `push_to_hub` of the loaded model carry it."""
    protocol = results.get("protocol", "?")
    label = "HSTU reference protocol (no validation split; test scored every epoch)" if protocol == "hstu-reference" else protocol
    dataset = (results.get("dataset") or {}).get("name") or "unknown"
    name = os.path.basename(os.path.abspath(output_dir))
    lines = ["---", "library_name: transformers", "pipeline_tag: other", "tags: [recommendation, sequential-recommendation, next-items, geniusrec]",
             "license: mit", f"datasets: [{dataset}]", *_model_index(name, dataset, results), "---", "",
             f"# GeniusRec {results.get('model', '')} checkpoint", "",
             f"Trained with `{results.get('command', '?')}` on {results.get('machine', '?')} ({results.get('date', '?')}), seed "
             f"{results.get('seed')}, {results.get('epochs')} epochs, {results.get('wall_time_s')} s.", "",
             "## Data", "",
             f"Dataset: **{dataset}** ({dataset_stats or {k: v for k, v in (results.get('dataset') or {}).items() if k != 'name'}}). "
             f"Split protocol: **{label}**.", "",
             "## Metrics", "",
             "Full ranking over all items, the user's history filtered; one target per user (sessions: the next items of each user).", ""]
    for split in ("validation", "test"):
        if (results.get("metrics") or {}).get(split):
            lines += [f"**{split}**", "", _table(results["metrics"][split]), ""]
    lines += ["## Use", "",
              "The folder carries its item vocabulary with titles (`AutoTokenizer`), the model code and the `next-items` pipeline, so "
              "it runs without the geniusrec package (`trust_remote_code=True`):", "", *usage_snippet(output_dir), "",
              "A history is raw item ids, oldest first; `timestamps` (seconds) are optional: without them every event and the request "
              "sit at one instant; the request is at the latest event's time unless `request_time` is given. Items of the history are "
              "never recommended. With transformers' API: `AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)`, and "
              "`generate(input_ids=..., timestamps=..., next_timestamps=..., num_beams=10, max_new_tokens=10, min_new_tokens=10)` for "
              "sessions (timestamps are required there).", "",
              "Intended use: research on sequential and generative recommendation; ranking or generating items of the catalog "
              "this checkpoint was trained on.", "",
              "## Limits", "",
              "- New items join without retraining: `model.add_items(n, content={'text': rows})` appends them (their content "
              "decides their vectors; without content rows they get the mean item vector and rank poorly until trained); "
              "`tokenizer.add_items(raw_ids)` gives them the same ids. Old items keep their scores bit for bit.",
              "- Numbers hold for this dataset and protocol only; popularity bias of the data is learned, not corrected.",
              "- Trained on CPU for a bounded time unless stated otherwise: see the epochs above.", ""]
    path = os.path.join(output_dir, "README.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def write_reports(output_dir: str, results: dict) -> list[str]:
    """Model card + plots of a finished run; returns the files written."""
    written = [write_model_card(output_dir, results)]
    if results.get("eval_history"):
        written.append(plot_training_curves(results["eval_history"], os.path.join(output_dir, "plots", "training_curves.png")))
    if results["metrics"].get("test"):
        written.append(plot_metrics_vs_k(results["metrics"]["test"], os.path.join(output_dir, "plots", "metrics_vs_k.png"), "test"))
    return written


RARE_TARGET_USERS = 20  # the gate plot's groups: a next item with at most this many training users is "rare"


@torch.no_grad()
def gate_statistics(model, store, dataset, collator, max_users: int = 1024, batch_size: int = 128) -> dict:
    """Gate weights per session position over (up to `max_users`) users of an evaluation view, grouped by how often the
    row's next item was seen in training: `{group: {"mean": (T, E), "std": (T, E), "users": n}}` (lists), so a reader
    sees whether the content experts weigh more when the next item is rare (or cold) in training."""
    from .baselines import item_user_counts

    model.eval()
    counts, _ = item_user_counts(store, dataset.protocol, dataset.holdout_length, model.config.vocab_size)
    rows = list(range(min(max_users, len(dataset))))
    gates, valid, rare = [], [], []
    for lo in range(0, len(rows), batch_size):
        examples = [dataset[i] for i in rows[lo : lo + batch_size]]
        batch = collator(examples)
        out = model(**{k: v.to(model.device) for k, v in batch.items()})
        gates.append(out.gate_weights.float().cpu())
        valid.append(batch["labels"] != -100)
        rare += [counts[int(e["target"])] <= RARE_TARGET_USERS for e in examples]
    width = max(g.shape[1] for g in gates)  # batches may differ in session length: pad positions (not counted)
    gates = torch.cat([torch.nn.functional.pad(g, (0, 0, 0, width - g.shape[1])) for g in gates])  # (U, T, E)
    valid = torch.cat([torch.nn.functional.pad(v, (0, width - v.shape[1])) for v in valid]).unsqueeze(-1).float()  # (U, T, 1)
    rare = torch.as_tensor(rare)
    out = {}
    for group, members in ((f"next item seen by <= {RARE_TARGET_USERS} training users", rare), ("other users", ~rare)):
        g, v = gates[members], valid[members]
        n = v.sum(0).clamp(min=1)
        mean = (g * v).sum(0) / n
        std = (((g - mean) ** 2) * v).sum(0).div(n).sqrt()
        out[group] = {"mean": mean.tolist(), "std": std.tolist(), "users": int(members.sum())}
    return out
