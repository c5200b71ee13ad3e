"""Profiling inputs for pretrained models: the paper's prompts and pydoc text windows (App. D.3)."""

from __future__ import annotations

import math
import re

import numpy as np
import torch

from rksp import defaults
from rksp.errors import RKSPInputError
from rksp.pretrained.hf import encode_texts, read_prompts

PROMPT_REPEATS = 4          # (paper, App. D.3) 8 prompts x 4 repeats = 32 rows

PROMPT_MAX_LENGTH = 64      # (paper, App. D.3) token cap

TEXT_OPTIONS = ("prompts", "pydoc")


def prompt_batch(tokenizer, prompts: list[str] | None = None, repeats: int = PROMPT_REPEATS,
                 max_length: int = PROMPT_MAX_LENGTH) -> dict:
    """The fixed-prompt batch (App. D.3): each prompt ``repeats`` times in a row, <= ``max_length`` tokens.

    With the 8 prompts of ``data/prompts.txt`` this is 32 rows, right-padded
    to the longest (an ``attention_mask`` marks the real tokens). Deterministic.
    """
    if tokenizer is None:
        raise RKSPInputError("prompt_batch needs a tokenizer")
    prompts = read_prompts() if prompts is None else list(prompts)
    if repeats < 1 or max_length < 1:
        raise RKSPInputError("repeats and max_length must be >= 1")
    return encode_texts(tokenizer, [p for p in prompts for _ in range(repeats)], max_length)


def pydoc_text() -> str:
    """Python's own documentation prose (``pydoc_data.topics``): topics in sorted order, heading rules dropped, whitespace collapsed."""
    from pydoc_data.topics import topics
    rules = re.compile(r"([*=~^\-])\1{2,}")          # drop heading underlines such as ******
    return " ".join(" ".join(rules.sub(" ", topics[k]).split()) for k in sorted(topics))


def pydoc_batch(tokenizer, n_tokens: int = defaults.N_SNAPSHOTS, max_length: int = PROMPT_MAX_LENGTH,
                chars_per_row: int | None = None) -> dict:
    """``ceil(n_tokens / max_length)`` rows of real prose, ``max_length`` tokens each (special tokens included).

    Row i is the text window starting at the word boundary nearest
    ``i / rows`` of the way through :func:`pydoc_text`, tokenized and truncated
    to ``max_length`` tokens, so rows never overlap and every token state is
    distinct. Deterministic.
    """
    if tokenizer is None:
        raise RKSPInputError("pydoc_batch needs a tokenizer")
    rows = max(1, math.ceil(int(n_tokens) / max_length))
    text = pydoc_text()
    width = int(chars_per_row or 16 * max_length)        # ample: English BPE/WordPiece is ~4-5 chars/token
    span = len(text) - width
    if span < rows * width:
        raise RKSPInputError(f"pydoc text ({len(text)} chars) is too short for {rows} rows of {width} chars")
    pieces = []
    for s in np.linspace(0, span, rows).astype(int):
        s = int(s) if s == 0 else text.find(" ", int(s)) + 1
        pieces.append(text[s:s + width])
    return encode_texts(tokenizer, pieces, max_length)


def random_ids(model, rows: int, length: int, seed: int) -> dict:
    vocab = int(getattr(getattr(model, "config", None), "vocab_size", 1000) or 1000)
    g = torch.Generator().manual_seed(int(seed))
    ids = torch.randint(0, vocab, (rows, length), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def input_device(model):
    try:
        return model.get_input_embeddings().weight.device
    except Exception:
        return next(model.parameters()).device
