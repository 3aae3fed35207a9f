"""Configuration of GeniusRec: an HSTU encoder over the history and a mixture-of-experts Transformer decoder that
generates the next session of items."""

import warnings

from transformers import PretrainedConfig

from .configuration_hstu import HSTUConfig


class GeniusRecConfig(PretrainedConfig):
    r"""
    Configuration of [`GeniusRecModel`] and [`GeniusRecForSessionGeneration`].

    Args:
        encoder_config (`HSTUConfig` or `dict`, *optional*):
            The HSTU encoder (a stage-1 model's config). Its `vocab_size` and `hidden_size` are the model's.
        num_hidden_layers (`int`, *optional*, defaults to 2):
            Decoder layers (pre-LN: causal self-attention, cross-attention to the encoder states, feed-forward).
        num_attention_heads (`int`, *optional*, defaults to 2):
            Heads of the decoder attentions and of the content/image experts; must divide `hidden_size`.
        intermediate_size (`int`, *optional*, defaults to 200):
            Feed-forward size of the decoder layers and of the behaviour expert.
        max_session_length (`int`, *optional*, defaults to 20):
            Longest generated session (items, without the start token; the EOS is one more step).
        hidden_dropout_prob (`float`, *optional*, defaults to 0.1):
            Dropout in the decoder and the experts.
        attention_dropout_prob (`float`, *optional*, defaults to 0.0):
            Dropout on attention weights.
        content_embedding_dims (`dict[str, int]`, *optional*, defaults to `{}`):
            The frozen item content tables and their widths, e.g. `{"text": 384, "image": 512}` (files
            `embeddings/<kind>.safetensors`, rows aligned to token ids). Each gets a buffer in the checkpoint and, by
            default, a content expert of the same name. `text_embedding_dim=` / `image_embedding_dim=` are still
            accepted and fill this dict.
        expert_types (`dict[str, str]`, *optional*):
            The experts in gate order, name -> registered type (see `experts.py`); defaults to
            `{"behaviour": "behaviour"}` plus `{kind: "content"}` for each content table. A new expert is one class
            registered with `@register_expert` plus one entry here.
        content_output (`bool`, *optional*, defaults to `True`):
            Item output vectors add the projected content embeddings to the ID embedding, so that items with few
            interactions still get meaningful scores.
        content_output_norm (`bool`, *optional*, defaults to `True`):
            LayerNorm the content rows before the output projection (for raw LM states of any scale). `train.finetune`
            turns it off: its tables are preprocessed (`data_scripts.embedders.prepare_content_table`, mean row norm 1),
            and a LayerNorm would blow each row back up to norm sqrt(width), which let the projection swamp the ID
            vectors within a few steps.
        content_output_confidence (`bool`, *optional*, defaults to `False`):
            With `content_output`, weight each item's projected content by a learned confidence in its content over its
            ID: `sigmoid(a + b * log(1 + n_i))`, `n_i` the item's training interactions (the `item_log_counts` buffer,
            set by `model.model.set_item_counts(counts)`; `train.finetune` fills it from the training split), `a`, `b`
            learned per content kind from `a = 4`, `b = -1` (an item with 20 interactions starts at 0.72, one with
            3,000 at 0.02, a new item at 0.98). So the content can move tail and new items without moving head items,
            whose ID vectors are well trained.
        content_gate_confidence (`bool`, *optional*, defaults to `False`):
            The expert gate also reads two count features per session position through a zero-initialised linear map:
            the mean `log(1 + n)` of the history's items and that of the position's input item (`[SEP]`: 0), both
            divided by 10, so that it can learn when content is worth trusting (users whose history
            is rare items lean on the content experts). Needs the item counts, as `content_output_confidence`.
        next_item_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the first session position (the next item) in the session loss, relative to the later ones
            (1.0: a plain mean over session tokens).
        session_set_loss_weight (`float`, *optional*, defaults to 0.0):
            Weight of a multi-label loss beside the autoregressive one: at session position t, the mean negative
            log-probability of every item still to come (`s_t, ..., s_T`, an unordered set), so that each step's
            distribution also spreads over the rest of the session rather than only the exact next item.
        encoder_loss_weight (`float`, *optional*, defaults to 0.0):
            Weight of the encoder's own stage-1 next-item loss (every history position predicts the item after it, the
            last one the session's first item; `encoder_config`'s loss: sampled or full softmax) added to the session
            loss in training. For joint fine-tuning with an unfrozen encoder: it keeps the encoder a next-item model while
            the decoder trains on top of it (0: off; no effect when the encoder is frozen).
        router_aux_loss_coef (`float`, *optional*, defaults to 0.01):
            Weight of the load-balancing loss of the expert gate.
        logit_scale (`float`, *optional*, defaults to 20.0):
            Inverse temperature: logits are `logit_scale * cos(state, item)`.
        use_cache (`bool`, *optional*, defaults to `True`):
            Whether the decoder keeps a key/value cache (`generate()` and manual step-by-step calls).
        layer_norm_eps (`float`, *optional*, defaults to 1e-6), initializer_range (`float`, *optional*, defaults to 0.02).

    Example:

    ```python
    >>> from modeling_geniusrec import GeniusRecConfig, GeniusRecForSessionGeneration, HSTUConfig
    >>> config = GeniusRecConfig(encoder_config=HSTUConfig(vocab_size=3710), content_embedding_dims={"text": 576})
    >>> config.expert_names
    ['behaviour', 'text']
    >>> model = GeniusRecForSessionGeneration(config)
    ```
    """

    model_type = "geniusrec"
    sub_configs = {"encoder_config": HSTUConfig}
    keys_to_ignore_at_inference = ["cache", "encoder_last_hidden_state", "logits", "gate_weights", "aux_loss"]

    def __init__(
        self,
        encoder_config=None,
        num_hidden_layers: int = 2,
        num_attention_heads: int = 2,
        intermediate_size: int = 200,
        max_session_length: int = 20,
        hidden_dropout_prob: float = 0.1,
        attention_dropout_prob: float = 0.0,
        content_embedding_dims: dict | None = None,
        expert_types: dict | None = None,
        content_output: bool = True,
        content_output_norm: bool = True,
        content_output_confidence: bool = False,
        content_gate_confidence: bool = False,
        next_item_loss_weight: float = 1.0,
        session_set_loss_weight: float = 0.0,
        encoder_loss_weight: float = 0.0,
        router_aux_loss_coef: float = 0.01,
        logit_scale: float = 20.0,
        use_cache: bool = True,
        layer_norm_eps: float = 1e-6,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        if encoder_config is None:
            encoder_config = HSTUConfig()
        elif isinstance(encoder_config, dict):
            encoder_config = HSTUConfig(**{k: v for k, v in encoder_config.items() if k != "model_type"})
        self.encoder_config = encoder_config
        self.vocab_size = encoder_config.vocab_size
        self.hidden_size = encoder_config.hidden_size
        if self.hidden_size % num_attention_heads:
            raise ValueError(f"num_attention_heads={num_attention_heads} must divide hidden_size={self.hidden_size}")
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.max_session_length = max_session_length
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_dropout_prob = attention_dropout_prob
        self.content_embedding_dims = content_widths(content_embedding_dims, kwargs)
        if expert_types is None:
            expert_types = {"behaviour": "behaviour", **{kind: "content" for kind in self.content_embedding_dims}}
        self.expert_types = dict(expert_types)
        self.content_output = content_output
        self.content_output_norm = content_output_norm
        self.content_output_confidence = bool(content_output_confidence)
        self.content_gate_confidence = bool(content_gate_confidence)
        self.next_item_loss_weight = next_item_loss_weight
        self.session_set_loss_weight = session_set_loss_weight
        if encoder_loss_weight < 0:
            raise ValueError(f"encoder_loss_weight must be >= 0, got {encoder_loss_weight}")
        self.encoder_loss_weight = float(encoder_loss_weight)
        self.router_aux_loss_coef = router_aux_loss_coef
        self.logit_scale = logit_scale
        self.use_cache = use_cache
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.num_special_tokens = encoder_config.num_special_tokens
        self.sep_token_id = encoder_config.sep_token_id
        self.unk_token_id = encoder_config.unk_token_id
        super().__init__(**pretrained_config_defaults(kwargs, encoder_config))

    @property
    def expert_names(self) -> list[str]:
        """Experts in gate order (the keys of `expert_types`), e.g. `["behaviour", "text", "image"]`."""
        return list(self.expert_types)

    @property
    def text_embedding_dim(self) -> int:
        return self.content_embedding_dims.get("text", 0)

    @property
    def image_embedding_dim(self) -> int:
        return self.content_embedding_dims.get("image", 0)

    def to_dict(self):
        out = super().to_dict()
        if isinstance(out.get("encoder_config"), PretrainedConfig):
            out["encoder_config"] = out["encoder_config"].to_dict()
        return out


def content_widths(content_embedding_dims: dict | None, kwargs: dict) -> dict:
    """`{kind: width}` of the content tables, zero widths dropped; the older `text_embedding_dim` /
    `image_embedding_dim` keywords (popped from `kwargs`) still count."""
    dims = dict(content_embedding_dims or {})
    for kind in ("text", "image"):  # the older keywords
        width = kwargs.pop(f"{kind}_embedding_dim", 0)
        if width:
            dims[kind] = int(width)
    return {kind: int(width) for kind, width in dims.items() if width}


def pretrained_config_defaults(kwargs: dict, encoder_config) -> dict:
    """The `PretrainedConfig` keywords GeniusRec fixes or defaults: special tokens from the encoder's config (which,
    with the tokenizer, owns them), encoder-decoder, the always-tied output head, no BOS, the remote-code map."""
    kwargs.setdefault("pad_token_id", encoder_config.pad_token_id)
    kwargs.setdefault("eos_token_id", encoder_config.eos_token_id)
    kwargs.setdefault("decoder_start_token_id", encoder_config.sep_token_id)
    kwargs.setdefault("is_encoder_decoder", True)
    if kwargs.get("tie_word_embeddings", True) is False:  # the output side is the (normalised) item table by design
        # a warning, not an error: PEFT's merge writes tie_word_embeddings=False into configs it saves
        warnings.warn("tie_word_embeddings=False is ignored: items are scored by cosine against their own (input) vectors, so "
                      "the output head is always tied", UserWarning, stacklevel=3)
    kwargs["tie_word_embeddings"] = True
    kwargs.setdefault("bos_token_id", None)  # no BOS token: a history starts with its first item (declared, as BERT does)
    kwargs.setdefault(
        "auto_map",
        {
            "AutoConfig": "configuration_geniusrec.GeniusRecConfig",
            "AutoModel": "modeling_geniusrec.GeniusRecModel",
            "AutoModelForSeq2SeqLM": "modeling_session_generation.GeniusRecForSessionGeneration",
            "AutoModelForCausalLM": "modeling_session_generation.GeniusRecForSessionGeneration",
        },
    )
    # checkpoints saved before the generation head moved out of modeling_geniusrec.py name the old module: a re-saved
    # copy carries the new files, so its map must name them too
    kwargs["auto_map"] = {auto: target.replace("modeling_geniusrec.GeniusRecForSessionGeneration",
                                               "modeling_session_generation.GeniusRecForSessionGeneration")
                          for auto, target in kwargs["auto_map"].items()}
    return kwargs


__all__ = ["GeniusRecConfig"]
