"""Item text and image embeddings through transformers.

Text: any causal LM or encoder that `AutoModel.from_pretrained` loads (TinyLlama by default, GGUF files through
`gguf_file=`), mean or last-token pooling under the attention mask, batches sorted by length, optional centering,
whitening and L2 normalisation. Image: CLIP (`CLIPModel.get_image_features`) over local files or URLs; images
that cannot be read get a zero row and `mask = 0`, and are counted, never fatal.
"""

import io
import os
import urllib.request

import torch
from tqdm.auto import tqdm

from modeling_geniusrec.modeling_sequential import content_present

DEFAULT_TEXT_MODEL = "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
DEFAULT_IMAGE_MODEL = "openai/clip-vit-base-patch32"


def load_text_model(name_or_path: str, gguf_file: str | None = None, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """`(tokenizer, model)` through the Auto classes; a padding token is added (the EOS) where the tokenizer has none."""
    from transformers import AutoModel, AutoTokenizer

    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    if (os.path.isabs(name_or_path) or name_or_path.startswith((".", "~"))) and not os.path.isdir(os.path.expanduser(name_or_path)):
        raise FileNotFoundError(f"text model {name_or_path!r} not found: give a local model folder, a hub id (needs the hub), or an "
                                "offline name (minilm, smollm2)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    except OSError as error:  # transformers' message for an unreachable hub id or a folder without a model
        raise FileNotFoundError(f"text model {name_or_path!r} could not be loaded ({str(error).splitlines()[0]}); give a local model "
                                "folder, a reachable hub id, or an offline name (minilm, smollm2)") from error
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    model = AutoModel.from_pretrained(name_or_path, dtype=dtype, **kwargs).to(device).eval()
    return tokenizer, model


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """`(B, T, H)` states, `(B, T)` mask -> `(B, H)`: mean over real tokens, or the last real token (either padding side)."""
    mask = mask.to(hidden.dtype)
    if pooling == "mean":
        return (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
    if pooling == "last":
        positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
        last = torch.where(mask.bool(), positions, torch.full_like(positions, -1)).max(dim=1).values
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ValueError(f"pooling must be 'mean' or 'last', got {pooling!r}")


@torch.no_grad()
def embed_texts(texts: list[str], tokenizer, model, pooling: str = "mean", batch_size: int = 32, max_length: int = 128,
                progress: bool = True) -> torch.Tensor:
    """`(len(texts), hidden)` float32 embeddings; batches are sorted by length so that little padding is computed."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.zeros(len(texts), model.config.hidden_size)
    device = next(model.parameters()).device
    for lo in tqdm(range(0, len(order), batch_size), desc="embedding texts", disable=not progress):
        index = order[lo : lo + batch_size]
        enc = tokenizer([texts[i] for i in index], padding=True, truncation=True, max_length=max_length, return_tensors="pt").to(device)
        hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        out[index] = pool(hidden.float(), enc["attention_mask"], pooling).cpu()
    return out


def postprocess(embeddings: torch.Tensor, center: bool = False, whiten: bool = False, normalize: bool = False, eps: float = 1e-5):
    """Centering removes the mean (raw LLM states are very anisotropic); whitening maps the sample covariance to the
    identity (ZCA); L2 normalisation last. Returns `(embeddings, stats dict)`."""
    x = embeddings.double()
    mean = x.mean(0, keepdim=True)
    if center or whiten:
        x = x - mean
    if whiten:
        cov = x.T @ x / max(x.shape[0] - 1, 1)
        values, vectors = torch.linalg.eigh(cov)
        x = x @ vectors @ torch.diag(1.0 / torch.sqrt(values.clamp(min=0) + eps)) @ vectors.T
    if normalize:
        x = torch.nn.functional.normalize(x, dim=-1)
    return x.float(), {"centered": center or whiten, "whitened": whiten, "l2_normalized": normalize}


CONTENT_PREPROCESSING = ("raw", "center", "whiten", "shrink")


def prepare_content_table(table: torch.Tensor, mode: str = "whiten", shrink: float = 1.0, eps: float = 1e-8) -> torch.Tensor:
    """A content table `(vocab_size, width)` made ready for a model's item representation.

    Only rows that hold content (not all zero: special tokens, items without an image) are used and changed; absent rows
    stay zero. Raw LLM item vectors are nearly collinear, so:
    - `raw`: unchanged;
    - `center`: the mean row subtracted;
    - `whiten`: centred, then the covariance mapped to the identity (ZCA: `x V diag(1 / sqrt(e)) V^T`);
    - `shrink`: centred, then spectrally shrunk (soft whitening, ACE-style): `x V diag(1 / sqrt(e + lambda)) V^T` with
      `lambda = shrink * mean(e)`, which flattens the dominant directions without blowing up the noise ones
      (`shrink -> 0` is whitening, large `shrink` is centring).
    Every mode then scales the table so that the mean row norm is 1 (one scalar), so that an adapter starts on the
    same scale whatever the embedder. Returns a float32 `(vocab_size, width)` table.
    """
    if mode not in CONTENT_PREPROCESSING:
        raise ValueError(f"content preprocessing must be one of {CONTENT_PREPROCESSING}, got {mode!r}")
    present = content_present(table)
    if int(present.sum()) < 2:
        raise ValueError("the content table has fewer than 2 non-zero rows: nothing to preprocess (was it computed for this dataset?)")
    x = table[present].double()
    if mode != "raw":
        x = x - x.mean(0, keepdim=True)
    if mode in ("whiten", "shrink"):
        values, vectors = torch.linalg.eigh(x.T @ x / max(x.shape[0] - 1, 1))
        values = values.clamp(min=0)
        ridge = eps if mode == "whiten" else shrink * float(values.mean()) + eps
        x = x @ vectors @ torch.diag(1.0 / torch.sqrt(values + ridge)) @ vectors.T
    x = x / x.norm(dim=-1).mean().clamp(min=eps)
    out = torch.zeros(table.shape, dtype=torch.float32)
    out[present] = x.float()
    return out


def pca_rows(table: torch.Tensor, dim: int, std: float) -> torch.Tensor:
    """ID-table initialisation from content: the rows' projection on the `dim` leading principal components of the
    centred content rows (rows without content stay zero), scaled so that the entries' standard deviation is `std` (the
    model's init scale). `(vocab_size, width)` -> `(vocab_size, dim)`."""
    present = content_present(table)
    x = table[present].double()
    x = x - x.mean(0, keepdim=True)
    if dim > min(x.shape):
        raise ValueError(f"cannot take {dim} principal components of {x.shape[0]} rows of width {x.shape[1]}")
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    projected = x @ v[:dim].T
    out = torch.zeros(table.shape[0], dim, dtype=torch.float32)
    out[present] = (projected * (std / projected.std().clamp(min=1e-12))).float()
    return out


def read_image(source: str, timeout: float = 10.0):
    """A PIL image from a local path or an http(s) URL; raises on failure."""
    from PIL import Image

    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source, timeout=timeout) as response:
            data = response.read()
        return Image.open(io.BytesIO(data)).convert("RGB")
    if not os.path.exists(source):
        raise FileNotFoundError(source)
    return Image.open(source).convert("RGB")


@torch.no_grad()
def embed_images(sources: list[str | None], name_or_path: str = DEFAULT_IMAGE_MODEL, batch_size: int = 32, device: str = "cpu", progress=True):
    """CLIP image embeddings: `(embeddings (N, dim), mask (N,) bool, failures dict)`; unreadable images get zero rows."""
    from transformers import CLIPImageProcessor, CLIPModel

    processor = CLIPImageProcessor.from_pretrained(name_or_path)
    model = CLIPModel.from_pretrained(name_or_path).to(device).eval()
    dim = model.config.projection_dim
    out, mask, failures = torch.zeros(len(sources), dim), torch.zeros(len(sources), dtype=torch.bool), {}
    for lo in tqdm(range(0, len(sources), batch_size), desc="embedding images", disable=not progress):
        images, index = [], []
        for i in range(lo, min(lo + batch_size, len(sources))):
            if not sources[i]:
                failures[i] = "no image"
                continue
            try:
                images.append(read_image(sources[i]))
                index.append(i)
            except Exception as err:  # broken file, missing file, unreachable URL: counted, not fatal
                failures[i] = f"{err.__class__.__name__}: {err}"[:200]
        if images:
            pixels = processor(images=images, return_tensors="pt")["pixel_values"].to(device)
            features = model.get_image_features(pixel_values=pixels)
            features = features.pooler_output if hasattr(features, "pooler_output") else features
            out[index] = features.float().cpu()
            mask[index] = True
    return out, mask, failures


__all__ = ["prepare_content_table", "pca_rows", "CONTENT_PREPROCESSING",
           "load_text_model", "pool", "embed_texts", "postprocess", "embed_images", "read_image", "DEFAULT_TEXT_MODEL", "DEFAULT_IMAGE_MODEL"]
