"""The chunk bound at scale (issue 30): no inference or training step builds a float tensor that spans the whole
catalog for more than a fixed chunk of rows. A dispatch mode watches every operator's output on a catalog much wider
than the (lowered) chunks: training with sampled softmax, validation and test ranking, `evaluate`, `top_k_items`, the
two-stage decode and `add_items` with content stay within `SCORE_CHUNK_ROWS` rows; the full-catalog beam search,
which the two-stage decode exists to avoid, does not (so the watch can fail)."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from data_scripts import movielens
from data_scripts.processed import NextItemDataset, load_processed
from data_scripts.splits import SequenceStore
from modeling_geniusrec import GeniusRecForSessionGeneration, scoring
from train import evaluate, pretrain
from train.evaluation.sessions import generate_sessions

from .fixtures import write_learnable_ml
from .test_pretrain import TINY

ITEMS = 300  # catalog items (vocab = ITEMS + 4 special tokens); chunks below are 4 rows x 32 items


class CatalogWideTensors(TorchDispatchMode):
    """Records the float tensors operators return that span the catalog (a dimension of `num_items` to `vocab_size`
    entries): `rows` = elements / that dimension, the largest seen and where."""

    def __init__(self, num_items: int, vocab_size: int):
        super().__init__()
        self.span = range(num_items, vocab_size + 1)
        self.worst = (0, None, None)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and tensor.dim() >= 2:
                wide = [size for size in tensor.shape if size in self.span]
                if wide and tensor.numel() // wide[0] > self.worst[0]:
                    self.worst = (tensor.numel() // wide[0], str(func), tuple(tensor.shape))
        return out


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    root = tmp_path_factory.mktemp("wide")
    write_learnable_ml(root / "raw", users=150, items=ITEMS, length=24)
    movielens.main(["--raw_dir", str(root / "raw"), "--out", str(root / "data")])
    return root


@pytest.fixture
def small_chunks(monkeypatch):
    import modeling_geniusrec.modeling_sequential as sequential

    monkeypatch.setattr(scoring, "SCORE_CHUNK_ROWS", 4)
    monkeypatch.setattr(scoring, "SCORE_CHUNK_ITEMS", 32)
    # sampled softmax scores (positions, catalog) densely only while the catalog is a few times the negatives (ML-1M:
    # faster there); this catalog stands for a large one, where the negatives are gathered
    monkeypatch.setattr(sequential, "DENSE_NEGATIVES_FACTOR", 1)
    return 16  # the bound: max(chunk rows, hidden size 16, content width) rows (the (vocab, hidden) item table itself)


def watched(vocab_size: int):
    return CatalogWideTensors(vocab_size - 4, vocab_size)


def test_training_ranking_and_decoding_stay_within_the_chunk(wide, small_chunks):
    data = str(wide / "data")
    _, _, tokenizer, _ = load_processed(data)
    vocab = len(tokenizer)
    assert vocab - 4 >= 250  # every item survived the 5-core filter: the catalog is ~10x the item chunk
    with watched(vocab) as watch:  # sampled-softmax training, then validation and test over the whole catalog
        pretrain.main(["--dataset", data, "--output_dir", str(wide / "hstu"), *TINY, "--num_train_epochs", "1", "--loss_type",
                       "sampled_softmax", "--per_device_eval_batch_size", "64"])
        evaluate.main(["--model", str(wide / "hstu"), "--dataset", data, "--batch_size", "64"])
    assert watch.worst[0] <= small_chunks, watch.worst
    model = GeniusRecForSessionGeneration.from_encoder_pretrained(str(wide / "hstu"), num_hidden_layers=1, intermediate_size=16,
                                                                  content_embedding_dims={"text": 6}).eval()
    model.model.set_item_embeddings("text", torch.randn(vocab, 6))
    view = NextItemDataset(SequenceStore.from_dataset(load_processed(data)[0]), "test", 20)
    view.select(list(range(40)))
    with watched(vocab) as watch:
        sessions = generate_sessions(model, view, k=5, num_beams=3, batch_size=40, candidate_count=20, progress=False)
        model.add_items(50, content={"text": torch.randn(50, 6)})  # content neighbours among the old items
    assert watch.worst[0] <= small_chunks, watch.worst
    assert all(len(set(s)) == 5 for s in sessions)
    with watched(vocab + 50) as watch:  # the full-catalog decode builds (users x beams, catalog) step scores
        generate_sessions(model, view, k=5, num_beams=3, batch_size=40, progress=False)
    assert watch.worst[0] >= 40 * 3, watch.worst
