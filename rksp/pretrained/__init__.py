"""Floor 3, pretrained models: loading (HF, GGUF, labelled random-init stand-ins), their profiling
inputs (the paper's prompts, pydoc windows; App. D.3) and their layer-group profiles.

    hf.py        loading a transformers model and tokenizing text (one tokenization path)
    fetch.py     downloading the weights the notebooks use (`rksp fetch`)
    loading.py   the registry of pretrained models and `load_pretrained`
    inputs.py    `prompt_batch`, `pydoc_batch`
    profiles.py  `profile_pretrained`, layer groups, summary rows
"""
from rksp.pretrained.inputs import PROMPT_MAX_LENGTH, PROMPT_REPEATS, prompt_batch, pydoc_batch, pydoc_text
from rksp.pretrained.loading import (PRETRAINED_MODELS, WEIGHTS_DEQUANT, WEIGHTS_PRETRAINED, WEIGHTS_RANDOM,
                                     PretrainedSpec, get_spec, is_pretrained, load_pretrained)
from rksp.pretrained.profiles import layer_groups, profile_pretrained, profile_row, scale_trend, summary_table

__all__ = ["PROMPT_MAX_LENGTH", "PROMPT_REPEATS", "prompt_batch", "pydoc_batch", "pydoc_text",
           "PRETRAINED_MODELS", "WEIGHTS_DEQUANT", "WEIGHTS_PRETRAINED", "WEIGHTS_RANDOM", "PretrainedSpec",
           "get_spec", "is_pretrained", "load_pretrained", "layer_groups", "profile_pretrained", "profile_row",
           "scale_trend", "summary_table"]
