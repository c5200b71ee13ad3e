"""From a config to what a run trains: task data, the model, and the seeded streams.

The third floor of the harness's one-way pipeline config -> resolve -> build -> loop: the task and
model configs come from `rksp.harness.resolve`; this module builds the data and the model from them.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

from rksp.defaults import INIT as DEFAULT_INIT
from rksp.errors import ConfigError
from rksp.harness.config import SEQ_MODELS, TrainConfig
from rksp.harness.resolve import (TaskData, data_seed, make_model_config, make_synthetic_task, seq_model_attr,
                                  validated)


def _chunk_tokens(t: torch.Tensor, seq_len: Optional[int]) -> torch.Tensor:
    t = torch.as_tensor(t)
    if t.dim() == 2:
        return t.long()
    if seq_len is None:
        raise ValueError("a flat token stream needs seq_len")
    n = t.numel() // seq_len
    return t[: n * seq_len].reshape(n, seq_len).long()


def lm_unigram_ppl(x_train: torch.Tensor, x_val: torch.Tensor, vocab_size: int) -> float:
    """The yardstick reported beside every LM perplexity (issue 22): the add-one unigram perplexity of
    the validation targets (`x_val[:, 1:]`, the positions the model is scored on) under the token
    counts of the run's own training windows."""
    from rksp.data.lm_corpus import unigram_perplexity
    if x_train.numel() == 0 or x_val.ndim != 2 or x_val.shape[0] == 0 or x_val.shape[1] < 2:
        return float('nan')
    return float(unigram_perplexity(x_train.reshape(-1).numpy(), x_val[:, 1:].reshape(-1).numpy(), int(vocab_size)))


def load_task_data(c: TrainConfig) -> TaskData:
    """Build the run's train / val data (deterministic in `data_seed`)."""
    if c.task in ('recall', 'synthetic_lm'):
        task = make_synthetic_task(c)
        if c.task == 'recall':
            (xt, yt), (xv, yv) = task.train(), task.val()
            return TaskData('recall', xt, yt, xv, yv, task.data_name, bool(task.is_standin),
                            vocab_size=task.vocab_size, num_classes=task.vocab_size, seq_len=task.seq_len)
        xt, xv = task.train(), task.val()
        return TaskData('lm', xt, None, xv, None, task.data_name, bool(task.is_standin),
                        vocab_size=task.vocab_size, seq_len=task.seq_len,
                        unigram_ppl=lm_unigram_ppl(xt, xv, task.vocab_size))
    if c.task == 'wikitext103':
        from rksp.data import load_lm_corpus
        kw = dict(c.data_kwargs)
        # which n_val windows: 'first' (the stream's first ones, the default) or 'spread' (evenly spaced over the
        # whole validation stream, so a perplexity is not that of a few documents; docs/lm-regime.md)
        val_windows = kw.pop('val_windows', 'first')
        if val_windows not in ('first', 'spread'):
            raise ConfigError(f"data_kwargs val_windows must be 'first' or 'spread', got {val_windows!r}")
        kw.setdefault('seed', data_seed(c))
        if c.seq_len is not None:
            kw.setdefault('seq_len', c.seq_len)
        if c.vocab_size is not None:
            kw.setdefault('vocab_size', c.vocab_size)   # target size of a trained BPE
        corpus = load_lm_corpus(name=kw.pop('name', 'wikitext-103'), **kw)
        seq_len = c.seq_len or getattr(corpus, 'seq_len', None) or None
        xt, xv = _chunk_tokens(corpus.train, seq_len), _chunk_tokens(corpus.val, seq_len)
        if c.n_train is not None:
            xt = xt[: c.n_train]     # the loader already permuted the train windows by seed
        if c.n_val is not None and val_windows == 'spread' and c.n_val < len(xv):
            xv = xv[torch.as_tensor(np.unique(np.linspace(0, len(xv) - 1, c.n_val).round().astype(np.int64)))]
        elif c.n_val is not None:
            xv = xv[: c.n_val]
        return TaskData('lm', xt, None, xv, None, str(corpus.data_name), bool(corpus.is_standin),
                        vocab_size=int(corpus.vocab_size), seq_len=int(xt.shape[1]),
                        unigram_ppl=lm_unigram_ppl(xt, xv, int(corpus.vocab_size)))
    if c.task == 'cifar10':
        from rksp.data import load_image_data
        kw = dict(c.data_kwargs)
        kw.setdefault('seed', data_seed(c))
        if c.n_train is not None:
            kw.setdefault('n_train', c.n_train)   # seeded random subsets
        if c.n_val is not None:
            kw.setdefault('n_val', c.n_val)
        img = load_image_data(name=kw.pop('name', 'cifar10'), **kw)
        xt, yt = torch.as_tensor(img.x_train).float(), torch.as_tensor(img.y_train).long()
        xv, yv = torch.as_tensor(img.x_val).float(), torch.as_tensor(img.y_val).long()
        return TaskData('image', xt, yt, xv, yv, str(img.data_name), bool(img.is_standin),
                        num_classes=int(img.num_classes))
    raise ConfigError(f"unknown task {c.task!r}")


def init_fields(model: str, model_config: Dict[str, Any]) -> Dict[str, Any]:
    """{'init', 'init_std'} of a resolved model config (the record's and the tables' `init` column):
    GPT carries `init`; MoE's init is GPT-2's; other models use their own ('model_default')."""
    mc = model_config or {}
    if 'init' in mc:
        label = mc['init']
    else:
        label = DEFAULT_INIT if model in ('gpt', 'moe') else 'model_default'
    std = mc.get('init_std')
    if label == 'torch':
        std = None   # PyTorch's defaults do not read init_std
    return {'init': label, 'init_std': std}


def build_model(c: TrainConfig, data: TaskData) -> Tuple[nn.Module, Dict[str, Any]]:
    mcfg = make_model_config(c, data)
    if c.model in SEQ_MODELS:
        model = seq_model_attr(c.model, 1)(mcfg)
    else:
        from rksp.models.vit import build_vit
        model = build_vit(mcfg)
    return model, dataclasses.asdict(mcfg)


def seed_all(seed: int) -> None:
    """Seed Python, NumPy and torch from the run seed (the first thing a run does)."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def derive_seed(seed: int, stream: str) -> int:
    """A 56-bit seed for one named random stream of a run ('profile', 'batches', 'kss', ...), so
    adding a stream never shifts another."""
    import hashlib
    h = hashlib.sha256(f'{seed}:{stream}'.encode()).digest()
    return int.from_bytes(h[:7], 'little')


def build_run(cfg: 'TrainConfig'):
    """(data, model, model_config) of a run, seeded exactly as :func:`train` builds them:
    seed_all(seed), then the task data, then the model."""
    seed_all(cfg.seed)
    data = load_task_data(cfg)
    model, model_config = build_model(cfg, data)
    return data, model, model_config


def profile_indices(cfg: 'TrainConfig', n_train: int) -> torch.Tensor:
    """Indices of the training inputs the run profiles (at init and at the end), drawn by the
    run's own 'profile' stream, so profiling never changes the training trajectory."""
    g = torch.Generator().manual_seed(derive_seed(cfg.seed, 'profile'))
    pb = min(cfg.profile_batch_size or cfg.batch_size, n_train)
    return torch.randperm(n_train, generator=g)[:pb]


def model_at_init(cfg) -> Tuple[nn.Module, torch.Tensor]:
    """(model in eval mode, profile inputs) exactly as a run of ``cfg`` (TrainConfig or dict) is
    profiled at init; Fig. 1, the init study and the calibration notebook use it."""
    c = validated(cfg if isinstance(cfg, TrainConfig) else dict(cfg))
    data, model, _ = build_run(c)
    return model.eval(), data.x_train[profile_indices(c, data.n_train)]
