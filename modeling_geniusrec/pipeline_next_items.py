"""The `next-items` pipeline: a history of raw item ids in, recommended items with titles and scores out.

    >>> from transformers import pipeline
    >>> recommender = pipeline("next-items", model="runs/ml-1m-hstu", trust_remote_code=True)
    >>> recommender(["Toy Story (1995)", "Heat (1995)"], k=5)
    [{'item_id': 'Casino (1995)', 'title': 'Casino (1995)', 'score': 7.12}, ...]
    >>> recommender({"items": [...], "timestamps": [...]})               # with the events' times (seconds)
    >>> recommender([["Toy Story (1995)"], ["Heat (1995)"]], k=3)       # a batch: one list per history

Every checkpoint folder written by train.pretrain / train.finetune / train.dpo names this pipeline in its config
(`custom_pipelines`) and carries this file, so `trust_remote_code=True` finds it without the package installed.
HSTU / SASRec return their top-k list, GeniusRec its generated session (`session=False`: its first step's top-k;
`num_return_sequences=3`: a list of three sessions that share no item). Times, unknown items, the window and the
rule for users who have seen nearly everything are those of [`recommendation.recommend`], which this pipeline,
`train.recommend` and `train.serve` all call.
"""

from transformers import AutoModelForCausalLM, AutoTokenizer, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .recommendation import recommend

TASK = "next-items"


def is_one_history(inputs) -> bool:
    """A single history (a dict, or a list of raw ids) rather than a batch of them (a list of dicts or lists)."""
    return isinstance(inputs, dict) or (isinstance(inputs, (list, tuple)) and not any(isinstance(x, (list, tuple, dict)) for x in inputs))


class NextItemsPipeline(Pipeline):
    """Recommendations from a checkpoint folder (see the module docstring).

    Call arguments: `k` (items per list or session, default 10), `session` (GeniusRec: generate a session, the default;
    False: the first step's top-k), `unknown` ("error" or "drop"), `num_beams` (default 10), `num_return_sequences`
    (alternative sessions), `candidate_count` (GeniusRec's two-stage decode), `batch_size` (histories per model call
    for a batch, default 64). Returns a list of `{"item_id", "title", "score"}` per history (a list of such lists for
    `num_return_sequences > 1`).
    """

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.tokenizer is None:  # a remote-code config is not in transformers' tokenizer mapping: load it from the folder
            self.tokenizer = AutoTokenizer.from_pretrained(self.model.name_or_path, trust_remote_code=True)
        self.model.eval()

    def _sanitize_parameters(self, k=None, session=None, unknown=None, num_beams=None, num_return_sequences=None, candidate_count=None,
                             **kwargs):
        forward = {name: value for name, value in (("k", k), ("session", session), ("unknown", unknown), ("num_beams", num_beams),
                                                   ("num_return_sequences", num_return_sequences),
                                                   ("candidate_count", candidate_count)) if value is not None}
        return {}, forward, {"alternatives": (num_return_sequences or 1) > 1}

    def __call__(self, inputs, **kwargs):
        if is_one_history(inputs):
            return super().__call__(inputs if isinstance(inputs, dict) else {"items": list(inputs)}, **kwargs)
        batch_size = kwargs.pop("batch_size", None) or 64
        _, forward, post = self._sanitize_parameters(**kwargs)
        histories, out = list(inputs), []
        for lo in range(0, len(histories), batch_size):  # a batch goes through the model together, `batch_size` at a time
            out += [self.postprocess(result, **post) for result in recommend(self.model, self.tokenizer, histories[lo : lo + batch_size], **forward)]
        return out

    def preprocess(self, history):
        return {"history": history}

    def _forward(self, model_inputs, **forward):
        return recommend(self.model, self.tokenizer, [model_inputs["history"]], **forward)[0]

    def postprocess(self, model_outputs, alternatives: bool = False):
        if alternatives:
            return [model_outputs["items"], *model_outputs.get("alternatives", [])]
        return model_outputs["items"]


# importing this module registers the task, so `pipeline("next-items", model=model, tokenizer=tokenizer)` works on
# in-memory objects too (folders name it in config.json: see hub.py)
PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=NextItemsPipeline, pt_model=AutoModelForCausalLM)

__all__ = ["NextItemsPipeline", "TASK"]
