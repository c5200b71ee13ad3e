"""The run configuration: `TrainConfig` (plain data), its field checks and its hash.

The first floor of the harness's one-way pipeline config -> resolve -> build -> loop: this module
imports nothing from the harness. The checks that need the registries and the builders (hook
arguments, the optimizer name, the task and model configs) live in `rksp.harness.resolve`, which adds
them with `add_check` when the package is imported; `TrainConfig.validate()` runs both.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib.util
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from rksp.checks import is_int, is_number
from rksp.defaults import DIV_GRAD, DIV_GRAD_CHOICES, N_SNAPSHOTS, SNAPSHOT_SEED
from rksp.errors import ConfigError

TASKS = ('recall', 'synthetic_lm', 'wikitext103', 'cifar10')

# sequence models: (module, config class, model class); all take idx [B, T] -> logits
SEQ_MODELS = {
    'gpt': ('rksp.models.gpt', 'GPTConfig', 'GPT'),
    'moe': ('rksp.models.moe', 'MoEConfig', 'MoEGPT'),
    'mamba': ('rksp.models.mamba', 'MambaConfig', 'Mamba'),
    'kan': ('rksp.models.kan', 'KANConfig', 'KANTransformer'),
}

MODELS = (*SEQ_MODELS, 'vit')

IMAGE_TASKS = ('cifar10',)

SCHEDULES = ('cosine', 'constant', 'linear')

_FLOAT_FIELDS = ('lr', 'weight_decay', 'eps', 'min_lr_ratio', 'grad_clip', 'epochs')

_DEFAULT_STEPS = 1000  # (ours) when neither steps nor epochs is given

FULL_LOG_STEPS = 500   # every step is logged up to here: the Table 2 spike horizon (labels.SPIKE_HORIZON)


@dataclass
class TrainConfig:
    """Everything that defines one training run; `to_dict()` is JSON and hashes stably.

    Task data: `seq_len`, `vocab_size`, `n_pairs`, `n_train`, `n_val` left as None take
    the task's defaults (recall: 64 / 256 / 4 pairs / 10k / 2k; synthetic LM:
    256 / 10k / 20k / 2k; corpora and images: their loader's). `data_seed` None = `seed`.
    Model: `model` ('gpt' | 'vit'), `preset` (a GPT preset name or None) and
    `model_cfg` (GPTConfig / ViTConfig field overrides, e.g. {'norm': 'none'});
    vocab_size, block_size (GPT) and img_size, in_chans, num_classes (ViT) come
    from the data. Sweep axes address nested fields with dots: 'model_cfg.norm'.
    """
    # task / data
    task: str = 'recall'
    seq_len: Optional[int] = None
    vocab_size: Optional[int] = None
    n_pairs: Optional[int] = None          # recall only
    lm_mode: str = 'mixed'                 # synthetic_lm only: 'mixed' | 'random'
    n_train: Optional[int] = None
    n_val: Optional[int] = None
    data_seed: Optional[int] = None
    data_kwargs: Dict[str, Any] = field(default_factory=dict)   # extra loader kwargs (corpora, images)
    # model
    model: str = 'gpt'
    preset: Optional[str] = None
    model_cfg: Dict[str, Any] = field(default_factory=dict)
    # optimizer
    optimizer: str = 'adamw'
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: Tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    optimizer_kwargs: Dict[str, Any] = field(default_factory=dict)
    # schedule
    batch_size: int = 32
    steps: Optional[int] = None            # None -> 1000 unless `epochs` is given
    epochs: Optional[float] = None         # steps = ceil(epochs * n_train / batch_size)
    warmup_steps: int = 100
    schedule: str = 'cosine'
    min_lr_ratio: float = 0.0
    grad_clip: Optional[float] = None
    seed: int = 42
    # evaluation / logging
    eval_every: int = 0                    # 0: only the final evaluation
    eval_batch_size: Optional[int] = None  # None -> batch_size
    log_every: int = 10                    # curve downsampling after `full_log_steps`
    full_log_steps: int = FULL_LOG_STEPS   # every step is kept up to here
    # RKSP profile at initialization
    profile_at_init: bool = True
    profile_n_snapshots: int = N_SNAPSHOTS
    profile_batch_size: Optional[int] = None
    profile_seed: int = SNAPSHOT_SEED
    profile_at_end: bool = False           # also profile the trained model (same inputs) -> record['profile_end']
    # divergence label: which gradient norm the > 500 rule reads (rksp/defaults.py DIV_GRAD)
    div_grad: str = DIV_GRAD               # 'task': gradient of the task loss only | 'total': task + extra losses
    # runtime
    device: str = 'cpu'                    # 'cpu' | 'cuda' | 'cuda:N' | 'auto'
    deterministic: bool = True
    hooks: List[Any] = field(default_factory=list)

    def __post_init__(self):
        # tolerant coercions so YAML ('1e-3' is a string in YAML 1.1), numpy and JSON round-trip
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.integer):
                setattr(self, f.name, int(v))
            elif isinstance(v, np.floating):
                setattr(self, f.name, float(v))
            elif isinstance(v, np.bool_):
                setattr(self, f.name, bool(v))
        for name in _FLOAT_FIELDS:
            v = getattr(self, name)
            if isinstance(v, str):
                try:
                    setattr(self, name, float(v))
                except ValueError:
                    pass  # reported by validate()
            elif isinstance(v, int) and not isinstance(v, bool):
                setattr(self, name, float(v))
        if isinstance(self.betas, (list, tuple)):
            try:
                self.betas = tuple(float(b) for b in self.betas)
            except (TypeError, ValueError):
                pass
        if isinstance(self.hooks, tuple):
            self.hooks = list(self.hooks)
        if self.steps is None and self.epochs is None:
            self.steps = _DEFAULT_STEPS
        self.validate()

    # -- construction / serialization
    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> 'TrainConfig':
        """Build from a plain dict; unknown keys raise ConfigError with a suggestion."""
        if isinstance(d, TrainConfig):
            return d
        if not isinstance(d, dict):
            raise ConfigError(f"a config must be a mapping, got {type(d).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in d if k not in names]
        if unknown:
            msgs = []
            for k in unknown:
                close = difflib.get_close_matches(str(k), names, n=1)
                msgs.append(f"unknown TrainConfig field {k!r}" + (f" (did you mean {close[0]!r}?)" if close else ''))
            raise ConfigError('; '.join(msgs))
        try:
            return cls(**d)
        except ConfigError:
            raise
        except (TypeError, ValueError) as e:
            raise ConfigError(str(e)) from e

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d['betas'] = list(self.betas)
        return json.loads(json.dumps(d))  # plain JSON types (tuples -> lists)

    def hash(self) -> str:
        return config_hash(self.to_dict())

    # -- derived
    @property
    def norm(self) -> str:
        return self.model_cfg.get('norm', 'pre_ln')

    # -- validation
    def validate(self) -> None:
        """Raise ConfigError listing every problem: the field checks, then the checks added by
        `rksp.harness.resolve` (hooks built with their arguments, optimizer, task and model config)."""
        errs = field_errors(self)
        for check in CHECKS:
            errs.extend(check(self))
        if errs:
            raise ConfigError('invalid TrainConfig: ' + '; '.join(errs))


# checks beyond the fields, `check(cfg) -> [error, ...]`, run by `validate()` after the field checks
# (each skips what the field checks already reject);
# `rksp.harness.resolve` adds its own on import (the package imports it), so this module needs none
CHECKS: List[Callable[[TrainConfig], List[str]]] = []


def planned_steps(steps: Optional[int], epochs: float, n_train: int, batch_size: int) -> int:
    """The number of optimizer steps a run takes: `steps`, or ceil(epochs x n_train / batch_size), at least 1."""
    return int(steps) if steps is not None else max(1, math.ceil(epochs * n_train / batch_size))


def add_check(check: Callable[[TrainConfig], List[str]]) -> Callable[[TrainConfig], List[str]]:
    """Register `check(cfg) -> [error, ...]` to run in every `TrainConfig.validate()` (once)."""
    if check not in CHECKS:
        CHECKS.append(check)
    return check


def field_errors(c: TrainConfig) -> List[str]:
    """Every problem with the fields themselves (types, ranges, choices), without resolving anything."""
    errs: List[str] = []
    if c.task not in TASKS:
        errs.append(f"unknown task {c.task!r} (valid: {', '.join(TASKS)})")
    if c.model not in MODELS:
        errs.append(f"unknown model {c.model!r} (valid: {', '.join(MODELS)})")
    elif c.task in TASKS and (c.task in IMAGE_TASKS) != (c.model == 'vit'):
        need = "'vit'" if c.task in IMAGE_TASKS else f"one of {', '.join(SEQ_MODELS)}"
        errs.append(f"task {c.task!r} needs model {need}, got {c.model!r}")
    # ints
    for name, lo in (('batch_size', 1), ('warmup_steps', 0), ('eval_every', 0), ('log_every', 1),
                     ('full_log_steps', 0), ('profile_n_snapshots', 2), ('seed', None)):
        v = getattr(c, name)
        if not is_int(v) or (lo is not None and v < lo):
            errs.append(f"{name} must be an integer{f' >= {lo}' if lo is not None else ''}, got {v!r}")
    for name, lo in (('steps', 1), ('seq_len', 2), ('vocab_size', 2), ('n_pairs', 1), ('n_train', 1),
                     ('n_val', 1), ('eval_batch_size', 1), ('profile_batch_size', 1), ('data_seed', None)):
        v = getattr(c, name)
        if v is not None and (not is_int(v) or (lo is not None and v < lo)):
            errs.append(f"{name} must be None or an integer{f' >= {lo}' if lo is not None else ''}, got {v!r}")
    if c.steps is not None and c.epochs is not None:
        errs.append("give steps or epochs, not both")
    if c.epochs is not None and (not is_number(c.epochs) or not c.epochs > 0 or not math.isfinite(c.epochs)):
        errs.append(f"epochs must be > 0, got {c.epochs!r}")
    # floats
    if not is_number(c.lr) or not (c.lr > 0) or not math.isfinite(c.lr):
        errs.append(f"lr must be a finite number > 0, got {c.lr!r}")
    if not is_number(c.weight_decay) or not c.weight_decay >= 0:
        errs.append(f"weight_decay must be >= 0, got {c.weight_decay!r}")
    if not is_number(c.eps) or not c.eps > 0:
        errs.append(f"eps must be > 0, got {c.eps!r}")
    if (not isinstance(c.betas, tuple) or len(c.betas) != 2
            or not all(is_number(b) and 0 <= b < 1 for b in c.betas)):
        errs.append(f"betas must be two numbers in [0, 1), got {c.betas!r}")
    if not is_number(c.min_lr_ratio) or not 0 <= c.min_lr_ratio <= 1:
        errs.append(f"min_lr_ratio must be in [0, 1], got {c.min_lr_ratio!r}")
    if c.grad_clip is not None and (not is_number(c.grad_clip) or not c.grad_clip > 0):
        errs.append(f"grad_clip must be None or > 0, got {c.grad_clip!r}")
    if c.schedule not in SCHEDULES:
        errs.append(f"unknown schedule {c.schedule!r} (valid: {', '.join(SCHEDULES)})")
    if c.div_grad not in DIV_GRAD_CHOICES:
        errs.append(f"div_grad must be one of {DIV_GRAD_CHOICES}, got {c.div_grad!r}")
    for name in ('profile_at_init', 'profile_at_end', 'deterministic'):
        if not isinstance(getattr(c, name), bool):
            errs.append(f"{name} must be true or false, got {getattr(c, name)!r}")
    if not isinstance(c.device, str) or (c.device != 'auto' and not _valid_device(c.device)):
        errs.append(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {c.device!r}")
    for name in ('data_kwargs', 'model_cfg', 'optimizer_kwargs'):
        v = getattr(c, name)
        if not isinstance(v, dict):
            errs.append(f"{name} must be a mapping, got {type(v).__name__}")
        else:
            try:
                json.dumps(v, allow_nan=False)
            except (TypeError, ValueError):
                errs.append(f"{name} must hold plain JSON values, got {v!r}")
    if c.task != 'recall' and c.n_pairs is not None:
        errs.append("n_pairs applies to task 'recall' only")
    if not isinstance(c.hooks, list):
        errs.append(f"hooks must be a list, got {type(c.hooks).__name__}")
    if c.profile_at_init is True and importlib.util.find_spec('rksp.core.profiling') is None:
        errs.append("profile_at_init=True but rksp.core.profiling is not available (set profile_at_init: false)")
    return errs


def task_and_model_valid(c: TrainConfig) -> bool:
    """Whether the task, model and their mappings passed the field checks (the model config can be built)."""
    return (c.task in TASKS and c.model in MODELS and (c.task in IMAGE_TASKS) == (c.model == 'vit')
            and isinstance(c.model_cfg, dict) and isinstance(c.data_kwargs, dict))


def _valid_device(s: str) -> bool:
    try:
        torch.device(s)
        return True
    except (RuntimeError, TypeError, ValueError):
        return False


def config_hash(cfg_dict: Dict[str, Any]) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces) of a config dict: 16 hex chars."""
    s = json.dumps(cfg_dict, sort_keys=True, separators=(',', ':'), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(s.encode('utf-8')).hexdigest()[:16]
