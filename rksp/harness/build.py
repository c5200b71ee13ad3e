"""From a config to what a run trains: task data, the model, and the seeded streams."""

from __future__ import annotations

import dataclasses
import importlib
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

from rksp.defaults import INIT as DEFAULT_INIT
from rksp.errors import ConfigError

if TYPE_CHECKING:  # annotations only: the config imports this module
    from rksp.harness.config import TrainConfig


@dataclass
class TaskData:
    kind: str                      # 'recall' | 'lm' | 'image'
    x_train: torch.Tensor
    y_train: Optional[torch.Tensor]
    x_val: torch.Tensor
    y_val: Optional[torch.Tensor]
    data_name: str
    is_standin: bool
    vocab_size: Optional[int] = None
    num_classes: Optional[int] = None
    seq_len: Optional[int] = None

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_val(self) -> int:
        return int(self.x_val.shape[0])


def _data_seed(c: TrainConfig) -> int:
    return c.seed if c.data_seed is None else c.data_seed


def make_synthetic_task(c: TrainConfig):
    kw = {k: getattr(c, k) for k in ('seq_len', 'vocab_size', 'n_train', 'n_val') if getattr(c, k) is not None}
    if c.task == 'recall':
        from rksp.data.recall import RecallTask
        if c.n_pairs is not None:
            kw['n_pairs'] = c.n_pairs
        return RecallTask(seed=_data_seed(c), **kw)
    from rksp.data.synthetic_lm import SyntheticLMTask
    return SyntheticLMTask(seed=_data_seed(c), mode=c.lm_mode, **kw)


def _chunk_tokens(t: torch.Tensor, seq_len: Optional[int]) -> torch.Tensor:
    t = torch.as_tensor(t)
    if t.dim() == 2:
        return t.long()
    if seq_len is None:
        raise ValueError("a flat token stream needs seq_len")
    n = t.numel() // seq_len
    return t[: n * seq_len].reshape(n, seq_len).long()


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
                        vocab_size=task.vocab_size, seq_len=task.seq_len)
    if c.task == 'wikitext103':
        from rksp.data import load_lm_corpus
        kw = dict(c.data_kwargs)
        kw.setdefault('seed', _data_seed(c))
        if c.seq_len is not None:
            kw.setdefault('seq_len', c.seq_len)
        if c.vocab_size is not None:
            kw.setdefault('vocab_size', c.vocab_size)   # target size of a trained BPE
        corpus = load_lm_corpus(name=kw.pop('name', 'wikitext-103'), **kw)
        seq_len = c.seq_len or getattr(corpus, 'seq_len', None) or None
        xt, xv = _chunk_tokens(corpus.train, seq_len), _chunk_tokens(corpus.val, seq_len)
        if c.n_train is not None:
            xt = xt[: c.n_train]     # the loader already permuted the train windows by seed
        if c.n_val is not None:
            xv = xv[: c.n_val]
        return TaskData('lm', xt, None, xv, None, str(corpus.data_name), bool(corpus.is_standin),
                        vocab_size=int(corpus.vocab_size), seq_len=int(xt.shape[1]))
    if c.task == 'cifar10':
        from rksp.data import load_image_data
        kw = dict(c.data_kwargs)
        kw.setdefault('seed', _data_seed(c))
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


def make_model_config(c: TrainConfig, data: Optional[TaskData]):
    """The resolved GPTConfig / ViTConfig; with data=None, data-derived fields take
    the values the config implies (used for validation before any data is built)."""
    cls = model_config_class(c.model)
    if c.model in SEQ_MODELS:
        from rksp.models.gpt import PRESETS
        kw = dict(PRESETS[c.preset]) if c.preset is not None else {}
        kw.update(c.model_cfg)
        if data is not None:
            vocab, seq_len = data.vocab_size, data.seq_len
        elif c.task in ('recall', 'synthetic_lm'):
            task = make_synthetic_task(c)   # cheap: no data is generated
            vocab, seq_len = task.vocab_size, task.seq_len
        else:  # corpora: known once loaded
            vocab, seq_len = c.vocab_size, c.seq_len
        if vocab is not None:
            kw['vocab_size'] = int(vocab)
        if seq_len is not None:
            if 'block_size' in c.model_cfg:
                if c.model_cfg['block_size'] < seq_len:
                    raise ValueError(f"block_size {c.model_cfg['block_size']} < seq_len {seq_len}")
            else:
                kw['block_size'] = int(seq_len)
        return cls(**kw)
    kw = dict(c.model_cfg)
    if data is not None:
        x = data.x_train
        kw.update(img_size=int(x.shape[-1]), in_chans=int(x.shape[1]), num_classes=int(data.num_classes))
    return cls(**kw)


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
    from rksp.harness.config import TrainConfig   # config imports this module (validation builds configs)
    c = cfg if isinstance(cfg, TrainConfig) else TrainConfig.from_dict(dict(cfg))
    c.validate()
    data, model, _ = build_run(c)
    return model.eval(), data.x_train[profile_indices(c, data.n_train)]


# sequence models: (module, config class, model class); all take idx [B, T] -> logits
SEQ_MODELS = {
    'gpt': ('rksp.models.gpt', 'GPTConfig', 'GPT'),
    'moe': ('rksp.models.moe', 'MoEConfig', 'MoEGPT'),
    'mamba': ('rksp.models.mamba', 'MambaConfig', 'Mamba'),
    'kan': ('rksp.models.kan', 'KANConfig', 'KANTransformer'),
}


def seq_model_attr(model: str, which: int):
    mod, cfg_name, cls_name = SEQ_MODELS[model]
    return getattr(importlib.import_module(mod), (cfg_name, cls_name)[which])


def model_config_class(model: str):
    if model in SEQ_MODELS:
        return seq_model_attr(model, 0)
    from rksp.models.vit import ViTConfig
    return ViTConfig
