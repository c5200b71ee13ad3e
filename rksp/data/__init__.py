"""Datasets of the paper's experiments, each deterministic from a seed.

=================  ==========================================  ===========================
registry name      object returned by ``get_task``              paper
=================  ==========================================  ===========================
``recall``         :class:`RecallTask` (``.train()/.val()``)    App. D.1, Tables 1-6, 11-15
``synthetic_lm``   :class:`SyntheticLMTask` (``.train()``...)   App. D.2, Table 7
``synthetic_lm_random``  the same with ``mode='random'``        Tables 11, 16-18
``wikitext103``    :class:`LMCorpus` (``.train``/``.val``)      Table 8
``cifar10``        :class:`ImageData` (``.x_train`` ...)        Table 9
=================  ==========================================  ===========================

Every returned object has ``data_name``, ``is_standin`` and ``kind``
(``'recall'`` | ``'lm'`` | ``'image'``).  WikiText-103 and CIFAR-10 fall back,
offline, to clearly labelled stand-ins (``is_standin=True``; the name says
"NOT WikiText-103" / "NOT CIFAR-10").
"""

from __future__ import annotations

from typing import Any, Callable, Dict

from .images import ImageData, load_image_data
from .recall import RecallTask, derive_split_seed, make_recall
from .synthetic_lm import SyntheticLMTask, make_synthetic_lm
from .text import LMCorpus, get_bpe_tokenizer, load_lm_corpus, standin_documents, train_bpe_tokenizer

__all__ = [
    "make_recall",
    "RecallTask",
    "make_synthetic_lm",
    "SyntheticLMTask",
    "LMCorpus",
    "load_lm_corpus",
    "standin_documents",
    "train_bpe_tokenizer",
    "get_bpe_tokenizer",
    "ImageData",
    "load_image_data",
    "derive_split_seed",
    "TASKS",
    "get_task",
]


def _wikitext103(**kw: Any) -> LMCorpus:
    kw.setdefault("name", "wikitext-103")
    return load_lm_corpus(**kw)


def _cifar10(**kw: Any) -> ImageData:
    kw.setdefault("name", "cifar10")
    return load_image_data(**kw)


def _synthetic_lm_random(**kw: Any) -> SyntheticLMTask:
    kw.setdefault("mode", "random")
    return SyntheticLMTask(**kw)


TASKS: Dict[str, Callable[..., Any]] = {
    "recall": RecallTask,
    "synthetic_lm": SyntheticLMTask,
    "synthetic_lm_random": _synthetic_lm_random,
    "wikitext103": _wikitext103,
    "cifar10": _cifar10,
}

_ALIASES = {
    "associative_recall": "recall",
    "associative-recall": "recall",
    "synthetic-lm": "synthetic_lm",
    "synthetic_lm_mixed": "synthetic_lm",
    "synthetic-lm-random": "synthetic_lm_random",
    "random_lm": "synthetic_lm_random",
    "wikitext-103": "wikitext103",
    "wikitext_103": "wikitext103",
    "cifar-10": "cifar10",
    "cifar_10": "cifar10",
}


def get_task(name: str, **kw: Any) -> Any:
    """Build a task / dataset by registry name (see the module docstring).

    Keyword arguments go to the task's constructor / loader, e.g.
    ``get_task('recall', n_train=4096, seed=42)`` or
    ``get_task('wikitext103', seq_len=128, max_tokens=1_000_000)``.
    """
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose from {sorted(TASKS)}")
    return TASKS[key](**kw)
