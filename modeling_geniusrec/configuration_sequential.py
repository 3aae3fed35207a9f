"""Fields shared by the sequential next-item recommenders (HSTU, SASRec).

Both models read a chronological history of item tokens and predict the next item at every position; they share
the item vocabulary layout of the processed-dataset contract (special tokens first, then one token per item), the
cosine scoring and the losses. Model-specific fields live in their own configs.
"""

import warnings

from transformers import PretrainedConfig

from .tokenization_items import EOS_TOKEN_ID, NUM_SPECIAL_TOKENS, PAD_TOKEN_ID, SEP_TOKEN_ID, UNK_TOKEN_ID


def _check_future_items(future_items, future_loss_weight) -> None:
    """The dense multi-item objective's settings: `future_items` an integer >= 1, a non-negative weight."""
    if isinstance(future_items, bool) or not isinstance(future_items, int) or future_items < 1:
        raise ValueError(f"future_items must be an integer >= 1 (1 = next item only), got {future_items!r}")
    if future_loss_weight < 0:
        raise ValueError(f"future_loss_weight must be >= 0, got {future_loss_weight}")


class SequentialRecConfig(PretrainedConfig):
    r"""
    Base configuration of a next-item recommender over an item vocabulary.

    Args:
        vocab_size (`int`, *optional*, defaults to 104):
            Number of tokens: the special tokens (pad, separator, eos, unk) followed by one token per item.
        hidden_size (`int`, *optional*, defaults to 50):
            Dimension D of the item embeddings and of the hidden states.
        num_hidden_layers (`int`, *optional*, defaults to 2):
            Number of blocks.
        num_attention_heads (`int`, *optional*, defaults to 1):
            Number of attention heads per block.
        max_position_embeddings (`int`, *optional*, defaults to 200):
            Longest history the model accepts; longer histories must be cut (keep the most recent items).
        hidden_dropout_prob (`float`, *optional*, defaults to 0.2):
            Dropout on the input embeddings and inside the blocks.
        attention_dropout_prob (`float`, *optional*, defaults to 0.0):
            Dropout on the attention weights.
        layer_norm_eps (`float`, *optional*, defaults to 1e-6):
            Epsilon of the layer norms.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialisation of weights and embeddings.
        loss_type (`str`, *optional*, defaults to `"sampled_softmax"`):
            `"sampled_softmax"` (the positive against `num_negatives` uniformly drawn items, accidental hits masked)
            or `"full_softmax"` (cross-entropy over every item of the catalog).
        num_negatives (`int`, *optional*, defaults to 128):
            Negatives per supervised position for the sampled softmax.
        negatives_sharing (`str`, *optional*, defaults to `"position"`):
            `"position"`: fresh negatives for every supervised position, as the HSTU reference code;
            `"batch"`: one set of negatives shared by the whole batch (one matmul instead of a gather, much faster on CPU).
        logit_scale (`float`, *optional*, defaults to 20.0):
            Inverse temperature: scores are `logit_scale * cos(user, item)` (the same knob as GeniusRec's). The older
            `softmax_temperature=t` is still accepted and means `logit_scale = 1 / t`.
        filter_special_tokens (`bool`, *optional*, defaults to `True`):
            Special tokens never receive a score when ranking items.
        pad_token_id, sep_token_id, eos_token_id, unk_token_id (`int`, *optional*, defaults to 0, 1, 2, 3):
            Ids of the special tokens; item ids start at `num_special_tokens`.
        num_special_tokens (`int`, *optional*, defaults to 4):
            Number of special tokens at the start of the vocabulary.
        content_embedding_dims (`dict[str, int]`, *optional*, defaults to `{}`):
            Frozen item content tables read by the item representation, e.g. `{"text": 384}`: every item's vector (input
            and tied output side) is `E_id[i] + adapter(content[i])`, so items with few or no interactions still get
            meaningful vectors. The tables are buffers saved in the checkpoint (`model.embeddings.<kind>_embeddings`);
            an all-zero row means "no content for this item" (e.g. no image) and adds nothing.
        content_adapter (`str`, *optional*, defaults to `"linear"`):
            How a content row becomes a `hidden_size` vector: `"linear"` (one bias-free projection) or `"mlp"`
            (Linear-GELU-Linear).
        item_id_dropout (`float`, *optional*, defaults to 0.0):
            In training, each item's ID vector is dropped (zeroed, input and output side alike) with this
            probability per batch, so that the content path alone must carry an item (what a new item has).
        content_preprocessing (`dict[str, str]`, *optional*, defaults to `{}`):
            What was done to each content table before it was stored (e.g. `{"text": "whiten"}`): a record, read
            by reports; the stored tables are already preprocessed.
        future_items (`int`, *optional*, defaults to 1):
            The dense multi-item objective: in training, every position t also predicts the items at t+2 .. t+k
            (k = `future_items`) of the training window, each through its own head (a `hidden_size` square map,
            identity at initialisation, then renormalised) and the same loss as the next item; 1 = next item only.
            Ranking always uses the next-item state (the heads only shape training).
        future_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the mean of the k-1 further-ahead losses added to the next-item loss.
    """

    def __init__(
        self,
        vocab_size: int = 104,
        hidden_size: int = 50,
        num_hidden_layers: int = 2,
        num_attention_heads: int = 1,
        max_position_embeddings: int = 200,
        hidden_dropout_prob: float = 0.2,
        attention_dropout_prob: float = 0.0,
        layer_norm_eps: float = 1e-6,
        initializer_range: float = 0.02,
        loss_type: str = "sampled_softmax",
        num_negatives: int = 128,
        negatives_sharing: str = "position",
        logit_scale: float | None = None,
        softmax_temperature: float | None = None,
        filter_special_tokens: bool = True,
        pad_token_id: int = PAD_TOKEN_ID,
        sep_token_id: int = SEP_TOKEN_ID,
        eos_token_id: int = EOS_TOKEN_ID,
        unk_token_id: int = UNK_TOKEN_ID,
        num_special_tokens: int = NUM_SPECIAL_TOKENS,
        content_embedding_dims: dict | None = None,
        content_adapter: str = "linear",
        item_id_dropout: float = 0.0,
        content_preprocessing: dict | None = None,
        future_items: int = 1,
        future_loss_weight: float = 1.0,
        **kwargs,
    ):
        _check_future_items(future_items, future_loss_weight)
        if loss_type not in ("sampled_softmax", "full_softmax"):
            raise ValueError(f"loss_type must be 'sampled_softmax' or 'full_softmax', got {loss_type!r}")
        if loss_type == "sampled_softmax" and num_negatives < 1:
            raise ValueError(f"num_negatives must be >= 1 for the sampled softmax, got {num_negatives} (or use loss_type='full_softmax')")
        if negatives_sharing not in ("position", "batch"):
            raise ValueError(f"negatives_sharing must be 'position' or 'batch', got {negatives_sharing!r}")
        if content_adapter not in ("linear", "mlp"):
            raise ValueError(f"content_adapter must be 'linear' or 'mlp', got {content_adapter!r}")
        if not 0.0 <= item_id_dropout < 1.0:
            raise ValueError(f"item_id_dropout must be in [0, 1), got {item_id_dropout}")
        if vocab_size <= num_special_tokens:
            raise ValueError(
                f"vocab_size={vocab_size} leaves no item after the {num_special_tokens} special tokens; "
                "set vocab_size to len(tokenizer)"
            )
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.max_position_embeddings = max_position_embeddings
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_dropout_prob = attention_dropout_prob
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.loss_type = loss_type
        self.num_negatives = num_negatives
        self.negatives_sharing = negatives_sharing
        if logit_scale is None:
            logit_scale = 1.0 / softmax_temperature if softmax_temperature else 20.0
        if logit_scale <= 0:
            raise ValueError(f"logit_scale must be > 0, got {logit_scale}")
        self.logit_scale = float(logit_scale)
        self.filter_special_tokens = filter_special_tokens
        self.sep_token_id = sep_token_id
        self.unk_token_id = unk_token_id
        self.num_special_tokens = num_special_tokens
        self.content_embedding_dims = {str(kind): int(width) for kind, width in (content_embedding_dims or {}).items() if width}
        self.content_adapter = content_adapter
        self.item_id_dropout = float(item_id_dropout)
        self.content_preprocessing = dict(content_preprocessing or {})
        self.future_items, self.future_loss_weight = future_items, float(future_loss_weight)
        if kwargs.get("tie_word_embeddings", True) is False:  # the output side is the (normalised) item table by design
            # a warning, not an error: PEFT's merge writes tie_word_embeddings=False into configs it saves
            warnings.warn("tie_word_embeddings=False is ignored: items are scored by cosine against their own (input) vectors, so "
                          "the output head is always tied", UserWarning, stacklevel=2)
        kwargs["tie_word_embeddings"] = True
        kwargs.setdefault("bos_token_id", None)  # no BOS token: a history starts with its first item (declared, as BERT does)
        super().__init__(pad_token_id=pad_token_id, eos_token_id=eos_token_id, **kwargs)

    @property
    def softmax_temperature(self) -> float:
        """`1 / logit_scale` (the older name of the same knob)."""
        return 1.0 / self.logit_scale

    @property
    def num_items(self) -> int:
        """Number of real items (the vocabulary minus the special tokens)."""
        return self.vocab_size - self.num_special_tokens


__all__ = ["SequentialRecConfig", "NUM_SPECIAL_TOKENS"]
