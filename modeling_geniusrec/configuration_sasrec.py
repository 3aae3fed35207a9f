"""Configuration of the SASRec baseline (Kang & McAuley, ICDM 2018) in GeniusRec's framework."""

from .configuration_sequential import SequentialRecConfig


class SASRecConfig(SequentialRecConfig):
    r"""
    Configuration of [`SASRecModel`] and [`SASRecForNextItemPrediction`]: softmax self-attention and feed-forward
    blocks over the same inputs, scoring and losses as HSTU, so that both are compared under one protocol.
    Every field of [`SequentialRecConfig`] applies too.

    Args:
        intermediate_size (`int`, *optional*, defaults to 50):
            Hidden size of the feed-forward network of each block.

    Example:

    ```python
    >>> from modeling_geniusrec import SASRecConfig, SASRecForNextItemPrediction
    >>> model = SASRecForNextItemPrediction(SASRecConfig(vocab_size=3710))
    ```
    """

    model_type = "sasrec"
    keys_to_ignore_at_inference = ["last_hidden_state", "hidden_states", "logits"]

    def __init__(self, intermediate_size: int = 50, **kwargs):
        self.intermediate_size = intermediate_size
        kwargs.setdefault(
            "auto_map",
            {
                "AutoConfig": "configuration_sasrec.SASRecConfig",
                "AutoModel": "modeling_sasrec.SASRecModel",
                "AutoModelForCausalLM": "modeling_sasrec.SASRecForNextItemPrediction",
            },
        )
        super().__init__(**kwargs)


__all__ = ["SASRecConfig"]
