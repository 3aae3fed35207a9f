"""Configuration of the HSTU encoder (Zhai et al., "Actions Speak Louder than Words", ICML 2024)."""

from .configuration_sequential import SequentialRecConfig


class HSTUConfig(SequentialRecConfig):
    r"""
    Configuration of [`HSTUModel`] and [`HSTUForNextItemPrediction`]. Defaults are the paper's MovieLens-1M "HSTU"
    row (2 blocks, 1 head, 50 dims, length 200, dropout 0.2); HSTU-large is 8 blocks, 2 heads, 25-dim heads.
    Every field of [`SequentialRecConfig`] applies too (vocabulary, sizes, dropout, loss).

    Args:
        qk_head_dim (`int`, *optional*, defaults to 50):
            Dimension of the queries and keys per head (`attention_dim` in the reference code).
        v_head_dim (`int`, *optional*, defaults to 50):
            Dimension of the values and of the gate U per head (`linear_dim` in the reference code).
        num_time_buckets (`int`, *optional*, defaults to 128):
            Time differences are put in `num_time_buckets + 1` buckets, `clamp(floor(ln(max(|dt|, 1)) /
            time_bucket_scale), 0, num_time_buckets)`.
        time_bucket_scale (`float`, *optional*, defaults to 0.301):
            Divisor of the log in the bucket function (0.301 ~ log10(2) as in the reference code).
        use_position_bias (`bool`, *optional*, defaults to `True`):
            Add the learned relative position bias `b_pos(j - i)` to the attention scores.
        use_time_bias (`bool`, *optional*, defaults to `True`):
            Add the learned time-bucket bias to the attention scores.
        use_next_event_time (`bool`, *optional*, defaults to `True`):
            As in the reference code, the query at position i is timed at the next event, `t_{i+1}`; the last
            position uses `next_timestamps` when given (the time of the request), else its own time. With `False`
            every query uses its own time `t_i`, so the state at i depends on nothing at positions > i.
        attention_normalization (`str`, *optional*, defaults to `"padded"`):
            Divisor N of the pointwise attention: `"padded"` divides by `max_position_embeddings` (the padded length
            of the reference code), `"length"` by the row's number of items, `"causal"` by the number of keys the
            query sees (i + 1), which keeps a prefix's states independent of what follows.

    Example:

    ```python
    >>> from modeling_geniusrec import HSTUConfig, HSTUForNextItemPrediction
    >>> config = HSTUConfig(vocab_size=3710)  # 4 special tokens + 3,706 MovieLens-1M items
    >>> model = HSTUForNextItemPrediction(config)
    >>> large = HSTUConfig(vocab_size=3710, num_hidden_layers=8, num_attention_heads=2, qk_head_dim=25, v_head_dim=25)
    ```
    """

    model_type = "hstu"
    keys_to_ignore_at_inference = ["last_hidden_state", "hidden_states", "logits"]

    def __init__(
        self,
        qk_head_dim: int = 50,
        v_head_dim: int = 50,
        num_time_buckets: int = 128,
        time_bucket_scale: float = 0.301,
        use_position_bias: bool = True,
        use_time_bias: bool = True,
        use_next_event_time: bool = True,
        attention_normalization: str = "padded",
        **kwargs,
    ):
        if attention_normalization not in ("padded", "length", "causal"):
            raise ValueError(
                f"attention_normalization must be 'padded', 'length' or 'causal', got {attention_normalization!r}"
            )
        self.qk_head_dim = qk_head_dim
        self.v_head_dim = v_head_dim
        self.num_time_buckets = num_time_buckets
        self.time_bucket_scale = time_bucket_scale
        self.use_position_bias = use_position_bias
        self.use_time_bias = use_time_bias
        self.use_next_event_time = use_next_event_time
        self.attention_normalization = attention_normalization
        kwargs.setdefault(
            "auto_map",
            {
                "AutoConfig": "configuration_hstu.HSTUConfig",
                "AutoModel": "modeling_hstu.HSTUModel",
                "AutoModelForCausalLM": "modeling_hstu.HSTUForNextItemPrediction",
            },
        )
        super().__init__(**kwargs)


__all__ = ["HSTUConfig"]
