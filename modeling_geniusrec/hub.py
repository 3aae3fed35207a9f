"""What makes a checkpoint folder self-contained and Hub-ready, for every model of the package: `save_pretrained`
names the `next-items` pipeline in `config.json` (`custom_pipelines`) and copies its code beside the model's, and
keeps the model card (`README.md`) that training wrote, which `from_pretrained` reads back, so that `save_pretrained`
and `push_to_hub` of a loaded model keep it too."""

import os
import shutil

from transformers.dynamic_module_utils import get_relative_import_files

CARD_FILE = "README.md"
# what config.json names (`custom_pipelines`): transformers' `pipeline("next-items", model=folder, trust_remote_code=True)`
# loads the class from the folder's copy of pipeline_next_items.py (kept here, so that loading a model never imports
# transformers' pipelines module, which costs seconds)
PIPELINE_INFO = {"next-items": {"impl": "pipeline_next_items.NextItemsPipeline", "pt": ["AutoModelForCausalLM"], "tf": [], "type": "text"}}


class CheckpointFilesMixin:
    """Mixed into the package's `PreTrainedModel`s (before `PreTrainedModel` in the bases)."""

    model_card: str | None = None  # README.md text, written by `save_pretrained` when set

    def save_pretrained(self, save_directory, *args, **kwargs):
        self.config.custom_pipelines = PIPELINE_INFO
        out = super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            save_pipeline_code(str(save_directory))
            card = os.path.join(str(save_directory), CARD_FILE)
            if self.model_card and not os.path.exists(card):
                with open(card, "w", encoding="utf-8") as f:
                    f.write(self.model_card)
        return out

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        card = os.path.join(str(pretrained_model_name_or_path), CARD_FILE)
        if os.path.isfile(card):
            with open(card, encoding="utf-8") as f:
                model.model_card = f.read()
        return loaded


def save_pipeline_code(folder: str) -> list[str]:
    """Copies the pipeline's module and the package modules it imports into `folder` (what `trust_remote_code` runs)."""
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pipeline_next_items.py")
    copied = []
    for path in [source, *get_relative_import_files(source)]:
        target = os.path.join(folder, os.path.basename(path))
        if os.path.abspath(path) != os.path.abspath(target):
            shutil.copyfile(path, target)
        copied.append(target)
    return copied


__all__ = ["CheckpointFilesMixin", "save_pipeline_code", "CARD_FILE", "PIPELINE_INFO"]
