"""Growing the catalog: new items added to a trained model without touching the old ones.

`model.add_items(n, content={"text": rows})` appends `n` item tokens (ids `vocab_size .. vocab_size + n - 1`, the
same ids `tokenizer.add_items(raw_ids)` gives them): old rows are copied bit for bit, so old items keep their
scores. A new item's ID vector is (the one rule, [`CatalogMixin.new_item_id_rows`]):
- zero when the model's item vectors read content (`content_embedding_dims` of the encoder: item = ID + adapter(content))
  and the new rows are given: the item is its content, exactly what ID dropout trains for;
- else the mean ID vector of its `neighbours` most similar old items by content (cosine of centred content rows) when
  the model has a content table and the new rows are given;
- else the mean item vector.
`resize_token_embeddings(new_size)` is the same operation without content. `reset_item_ids(ids)` gives existing items
the ID rows of new items (item cold-start evaluation: items never seen in training are scored as if added after it).
"""

import torch
import torch.nn.functional as F
from torch import nn

from .scoring import chunked_top_k


class CatalogMixin:
    """`add_items` / `resize_token_embeddings` for a model whose item table is `get_input_embeddings()` (tied to
    the output side). Hosts with frozen content tables override [`_content_tables`] and [`_set_content_table`]."""

    def _content_tables(self) -> dict:
        return {}

    def _set_content_table(self, kind: str, table: torch.Tensor) -> None:
        raise NotImplementedError

    def _set_vocab_size(self, size: int) -> None:
        self.config.vocab_size = size

    def _content_in_item_vectors(self) -> bool:
        return False

    @torch.no_grad()
    def new_item_id_rows(self, content: dict, num_items: int, neighbours: int = 10, exclude=None) -> torch.Tensor:
        """ID rows `(num_items, hidden)` for new items with content rows `content` (`{kind: (num_items, width)}`, may be
        empty), by the rule in the module docstring; the old items are every item token but `exclude` (token ids that are
        new items themselves); `neighbours` content-nearest old items are averaged."""
        weight = self.get_input_embeddings().weight
        first = self.config.num_special_tokens
        old = torch.ones(weight.shape[0], dtype=torch.bool, device=weight.device)
        old[:first] = False
        if exclude is not None:
            old[torch.as_tensor(exclude, device=weight.device)] = False
        old_ids = old.nonzero().flatten()
        if content and self._content_in_item_vectors():
            return weight.new_zeros(num_items, weight.shape[1])
        tables = self._content_tables()
        for kind, rows in content.items():  # the first kind with rows decides (text before image by insertion order)
            reference = tables[kind][old_ids].float()
            centre = reference.mean(0, keepdim=True)
            reference = F.normalize(reference - centre, dim=-1)
            queries = F.normalize(rows.float() - centre, dim=-1)
            # cosine of centred rows, scored in chunks (never a (new items, old items) matrix at once)
            nearest = old_ids[chunked_top_k(queries, reference, min(neighbours, reference.shape[0]))]
            return weight[nearest].mean(1)
        return weight[old_ids].mean(0, keepdim=True).expand(num_items, weight.shape[1]).clone()

    def exclude_items_from_training(self, token_ids) -> None:
        """Items that are not in the catalog while this model trains (the cold-items protocol's held-out items): they are
        never a candidate of the training loss (no sampled negative, no softmax column), as items added after training
        would not be. Not saved with the model; `None` or no ids clears it."""
        if token_ids is None or len(token_ids) == 0:
            self._training_excluded = None
            return
        mask = torch.zeros(self.config.vocab_size, dtype=torch.bool)
        mask[torch.as_tensor(token_ids, dtype=torch.long)] = True
        self._training_excluded = mask

    def training_excluded_items(self, device=None) -> torch.Tensor | None:
        """`(vocab_size,)` bool: the items [`exclude_items_from_training`] took out of the training loss, or None."""
        mask = getattr(self, "_training_excluded", None)
        return None if mask is None else mask.to(device)

    @torch.no_grad()
    def reset_item_ids(self, token_ids) -> None:
        """Gives the items `token_ids` the ID rows a new item with their content would get ([`new_item_id_rows`]):
        cold-start evaluation scores items never seen in training as if they had been added after it (their rows may
        have been touched as sampled negatives, which a truly new item never is)."""
        ids = torch.as_tensor(token_ids, dtype=torch.long).flatten()
        if ids.numel() == 0:
            return
        weight = self.get_input_embeddings().weight
        content = {kind: table[ids.to(table.device)] for kind, table in self._content_tables().items()}
        weight[ids.to(weight.device)] = self.new_item_id_rows(content, ids.numel(), exclude=ids).to(weight.dtype)

    def resize_token_embeddings(self, new_num_tokens: int | None = None, pad_to_multiple_of=None, mean_resizing: bool = True):
        """Grows the item vocabulary to `new_num_tokens` (see [`add_items`]); shrinking would drop items and is refused.
        New rows are not random: without content they are the mean of the old item rows (`mean_resizing`, kept on
        purpose: a new item starts as an average item under cosine scoring), with content the mean of its
        content-nearest old items (the rule in this module's docstring)."""
        if new_num_tokens is None:
            return self.get_input_embeddings()
        if pad_to_multiple_of:
            new_num_tokens = -(-new_num_tokens // pad_to_multiple_of) * pad_to_multiple_of
        if new_num_tokens < self.config.vocab_size:
            raise ValueError(f"new_num_tokens={new_num_tokens} is smaller than vocab_size={self.config.vocab_size}: removing items "
                             "is not supported (their ids would be reused)")
        return self.add_items(new_num_tokens - self.config.vocab_size)

    @torch.no_grad()
    def add_items(self, num_items: int, content: dict | None = None, neighbours: int = 10) -> nn.Embedding:
        """Appends `num_items` items.

        Args:
            num_items: how many new item tokens.
            content: optional `{kind: (num_items, dim) tensor}` rows for the model's content tables (e.g. "text"); kinds
                the model has no table for are refused. Missing kinds get zero rows.
            neighbours: how many content-nearest old items a new ID vector averages.
        Returns:
            the new input embedding table `(vocab_size + num_items, hidden_size)`.
        """
        if num_items < 0:
            raise ValueError(f"num_items must be >= 0, got {num_items}")
        content = dict(content or {})
        tables = self._content_tables()
        unknown = sorted(set(content) - set(tables))
        if unknown:
            raise ValueError(f"this model has no content tables {unknown} (it has {sorted(tables)})")
        for kind, rows in content.items():
            if tuple(rows.shape) != (num_items, tables[kind].shape[1]):
                raise ValueError(f"content[{kind!r}] must have shape ({num_items}, {tables[kind].shape[1]}), got {tuple(rows.shape)}")
        old = self.get_input_embeddings()
        size, dim = old.weight.shape
        new_vectors = self.new_item_id_rows(content, num_items, neighbours)
        grown = nn.Embedding(size + num_items, dim, dtype=old.weight.dtype, device=old.weight.device)
        grown.weight[:size] = old.weight
        grown.weight[size:] = new_vectors.to(old.weight.dtype)
        self.set_input_embeddings(grown)
        for kind, table in tables.items():
            rows = content.get(kind, table.new_zeros(num_items, table.shape[1]))
            self._set_content_table(kind, torch.cat([table, rows.to(table)], dim=0))
        self._set_vocab_size(size + num_items)
        return grown


__all__ = ["CatalogMixin"]
