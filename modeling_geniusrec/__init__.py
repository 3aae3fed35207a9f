"""GeniusRec: a generative sequential recommender native to the Hugging Face stack.

Importing the package registers its configs, models and tokenizer with the Auto classes.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from .configuration_geniusrec import GeniusRecConfig
from .configuration_hstu import HSTUConfig
from .configuration_sasrec import SASRecConfig
from .configuration_sequential import NUM_SPECIAL_TOKENS, SequentialRecConfig
from .generation import BanItemsLogitsProcessor
from .modeling_geniusrec import GeniusRecModel, GeniusRecOutput, GeniusRecPreTrainedModel
from .modeling_hstu import HSTUForNextItemPrediction, HSTUModel, HSTUPreTrainedModel
from .modeling_sasrec import SASRecForNextItemPrediction, SASRecModel, SASRecPreTrainedModel
from .modeling_sequential import NextItemPredictionOutput, SequentialRecOutput
from .modeling_session_generation import GeniusRecForSessionGeneration
from .recommendation import RecommendationWarning, recommend
from .tokenization_items import ItemTokenizer, escape_item_id, unescape_item_id

__version__ = "0.1.0"

AutoConfig.register("hstu", HSTUConfig, exist_ok=True)
AutoModel.register(HSTUConfig, HSTUModel, exist_ok=True)
AutoModelForCausalLM.register(HSTUConfig, HSTUForNextItemPrediction, exist_ok=True)
AutoTokenizer.register(HSTUConfig, fast_tokenizer_class=ItemTokenizer, exist_ok=True)
AutoConfig.register("sasrec", SASRecConfig, exist_ok=True)
AutoModel.register(SASRecConfig, SASRecModel, exist_ok=True)
AutoModelForCausalLM.register(SASRecConfig, SASRecForNextItemPrediction, exist_ok=True)
AutoTokenizer.register(SASRecConfig, fast_tokenizer_class=ItemTokenizer, exist_ok=True)
AutoConfig.register("geniusrec", GeniusRecConfig, exist_ok=True)
AutoModel.register(GeniusRecConfig, GeniusRecModel, exist_ok=True)
AutoModelForSeq2SeqLM.register(GeniusRecConfig, GeniusRecForSessionGeneration, exist_ok=True)
AutoModelForCausalLM.register(GeniusRecConfig, GeniusRecForSessionGeneration, exist_ok=True)
AutoTokenizer.register(GeniusRecConfig, fast_tokenizer_class=ItemTokenizer, exist_ok=True)


def __getattr__(name):
    """`modeling_geniusrec.NextItemsPipeline` on first use: transformers' pipelines module takes seconds to import, which
    every command that loads a model or writes a dataset would otherwise pay."""
    if name == "NextItemsPipeline":
        from .pipeline_next_items import NextItemsPipeline

        return NextItemsPipeline
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "GeniusRecConfig",
    "GeniusRecPreTrainedModel",
    "GeniusRecModel",
    "GeniusRecForSessionGeneration",
    "GeniusRecOutput",
    "BanItemsLogitsProcessor",
    "NUM_SPECIAL_TOKENS",
    "SequentialRecConfig",
    "HSTUConfig",
    "HSTUPreTrainedModel",
    "HSTUModel",
    "HSTUForNextItemPrediction",
    "SASRecConfig",
    "SASRecPreTrainedModel",
    "SASRecModel",
    "SASRecForNextItemPrediction",
    "NextItemPredictionOutput",
    "SequentialRecOutput",
    "ItemTokenizer",
    "NextItemsPipeline",
    "recommend",
    "RecommendationWarning",
    "escape_item_id",
    "unescape_item_id",
]
