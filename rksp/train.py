"""Training harness: one run = one `TrainConfig` -> one JSON-able record.

A run builds the task data and the model, profiles the model at initialization
with RKSP (`rksp.profiling.profile`, one batch of training inputs), trains it
while watching for divergence, evaluates it and returns a record (schema below).
`rksp.sweep` runs many of these and stores one JSON file per run.

Divergence (paper Sec. 3.1; METHOD.md §0): a run has diverged at step s when,
at that step, the task loss > DIVERGE_LOSS (50) or the L2 norm of all
gradients, taken *before* clipping, > DIVERGE_GRAD_NORM (500). A non-finite
loss or gradient norm also counts (ours). The run stops at that step, before
the optimizer update, and the step is recorded; `train` never raises for
divergence. Steps are numbered from 1. Only the task loss is judged: a hook's
extra loss (e.g. the KSS regularizer) is recorded separately and not compared
to the threshold. Which gradient is judged is `div_grad` (defaults.DIV_GRAD):
'task' (default) = the gradient of the task loss alone (on steps with extra
losses the default step backprops the task loss first and reads its norm; a
hook with its own `train_step`, e.g. SAM, is judged on the total gradient),
'total' = the gradient actually applied (task + extra losses). Either way the
record's `div_step_total_grad` is the first step at which the 'total' reading
would have fired (runs agree up to that step), so both labels are available.
On every step with that separate regularizer backward, `extras['reg_grad']` holds
{'step','task_grad_norm','reg_grad_norm','scale'}: the two gradient norms (before
any bound) and the scale applied to the regularizer's gradient (1 without a bound;
a hook's `extra_grad_bound` c scales it to <= c x the task gradient, e.g. KSS
grad_bound; a bound also makes 'total' take the two-pass step).

Gradient baselines (Table 2), from the per-step curves (see `gradient_baselines`):
  grad_norm_step1     grad norm after step 1's backward
  grad_norm_step100   grad norm at step 100
  grad_var_1_100      population variance (ddof=0) of the grad norms of steps 1..100
  loss_spikes_1_500   steps s in 1..500 whose loss > SPIKE_FACTOR x the median of
                      the previous SPIKE_WINDOW steps' losses
When a run stops before step 100/500 (divergence, or fewer steps), each uses
what exists: grad_norm_step100 is the grad norm at the run's last step (for a
diverged run the divergence step), the variance and the spike count run over
steps 1..last. Details: the spike window at step s is the previous
min(SPIKE_WINDOW, s-1) steps (step 1 never counts), only their finite losses
enter the median, and a non-finite loss counts as a spike; non-finite grad
norms are left out of the variance (NaN when none is finite).

Choices beyond the paper (defaults of `TrainConfig`; README "Choices beyond the
paper"): AdamW with betas (0.9, 0.999), eps 1e-8, weight decay 0.01 on
parameters with >= 2 dimensions only (matrices and embeddings; biases and norm
gains are not decayed); linear warmup over `warmup_steps` (default 100, the
paper's lower end) then cosine decay to `min_lr_ratio` x lr at the last step;
no gradient clipping; batches drawn without replacement from a fresh
permutation each epoch (torch.Generator seeded by the run seed); the RKSP
profile at init runs on `profile_batch_size` (default: batch_size) training
inputs drawn with their own generator, inside `torch.random.fork_rng`, so
turning the profile on or off never changes the training trajectory.

Record schema (`train` returns it; every value is JSON-serializable; NaN/inf
are kept and written by `json` as NaN/Infinity):
  schema_version, status ('ok'), hash (config_hash of `config`), config (dict),
  task_kind ('recall'|'lm'|'image'), data_name, data_is_standin, n_train, n_val,
  seq_len, model_config (resolved GPTConfig/ViTConfig as dict), n_params,
  init, init_std (the weight init, `model_cfg.init` / `init_std`: 'gpt2' | 'normal' | 'torch' for
  GPT, 'gpt2' for MoE, 'model_default' for the other models; a config without `init` is 'gpt2'),
  device (the torch device the run used, e.g. 'cpu' or 'cuda:0'; `config.device` may say 'auto'),
  profile ({'summary': {...}, 'layers': [...], 'meta': {...}} or None), profile_error,
  profile_end (same, of the trained model on the same inputs; only with profile_at_end and no divergence)
  (None, or 'ExcType: message' when the profiler raised: the run still trains, profile=None),
  steps_planned, steps_done, diverged, div_step (int|None),
  div_reason (None|'loss'|'grad_norm'|'nonfinite_loss'|'nonfinite_grad'),
  div_value (the offending loss / grad norm), final_train_loss,
  grad_norm_step1, grad_norm_step100, grad_var_1_100, loss_spikes_1_500,
  curves {'step','loss','grad_norm','lr'[,'extra_loss']}: every step up to
  `full_log_steps` (500), then every `log_every` steps, and always the last step,
  eval_curve {'step','val_loss','val_acc'[,'val_ppl']} (every `eval_every` steps),
  val_loss, val_acc, val_ppl (LM tasks; None otherwise),
  wall_time, train_time, train_cpu_time (process CPU seconds of the loop), profile_time,
  eval_time, steps_per_sec,
  started_at, finished_at, env {'torch','device','num_threads','python'},
  extras (dict filled by hooks; 'reg_grad' by the harness, see above).
`VOLATILE_FIELDS` lists the fields that may differ between two runs of the same
config; `comparable(record)` drops them.

Hooks (`TrainHooks`; several combine, config hooks first) let later features
change the run without copying the loop:
  transform_model(model, cfg) -> model          before profiling and the optimizer (μP, spectral norm)
  make_optimizer(params, cfg, model) -> opt|None  override the optimizer (params = param groups)
  on_start(model, optimizer, cfg, ctx)
  needs_hidden(step) -> bool                   capture the residual stream h_0..h_L this step
  extra_loss(model, batch, outputs, step) -> tensor|None   added to the task loss (KSS);
                                               outputs.hidden holds h_0..h_L when requested
  train_step(step, model, optimizer, batch, ctx) -> task_loss | (task_loss, extra) | None
                                               replace forward/backward (SAM: two passes); the
                                               harness then takes the grad norm, checks divergence,
                                               clips and calls optimizer.step()
  before_step(step, model, optimizer, info) / after_step(step, model, optimizer, info)
                                               after_step runs for completed steps only (not the
                                               divergence step); info has step, lr, loss, grad_norm
  on_end(record, model)                        add fields to record['extras']
Config-level hooks (`TrainConfig.hooks`, serializable, part of the hash) are
names registered in `HOOKS` (`@register_hooks(name)`; the package's own register on first lookup,
see `PLUGIN_MODULES`) or 'package.module:factory' strings, or {'target': ..., 'kwargs': {...}}.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.util
import json
import math
import os
import platform
import random
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .defaults import (INIT as DEFAULT_INIT, DIV_GRAD, DIV_GRAD_CHOICES, DIVERGE_GRAD_NORM, DIVERGE_LOSS, N_SNAPSHOTS,
                       SNAPSHOT_SEED, SPIKE_FACTOR, SPIKE_WINDOW)
from .errors import RKSPInputError
from .snapshots import find_blocks, residual_states as capture_residuals

__all__ = [
    'TrainConfig', 'ConfigError', 'TrainHooks', 'FunctionHooks', 'HookList', 'StepContext',
    'StepOutputs', 'train', 'evaluate', 'gradient_baselines', 'loss_spike_count',
    'divergence_check', 'lr_factor', 'capture_residuals', 'find_blocks', 'register_optimizer',
    'register_hooks', 'resolve_optimizer', 'OPTIMIZERS', 'HOOKS', 'PLUGIN_MODULES', 'TASKS', 'MODELS', 'SCHEDULES', 'VOLATILE_FIELDS',
    'comparable', 'config_hash', 'to_jsonable', 'GRAD_BASELINE_STEP', 'SPIKE_HORIZON',
]

SCHEMA_VERSION = 1

# (paper, Table 2) horizons of the gradient baselines
GRAD_BASELINE_STEP = 100   # "gradient norm at step 100", "variance, steps 1-100"
SPIKE_HORIZON = 500        # "loss spike count, steps 1-500"

TASKS = ('recall', 'synthetic_lm', 'wikitext103', 'cifar10')
# sequence models: (module, config class, model class); all take idx [B, T] -> logits
SEQ_MODELS = {
    'gpt': ('rksp.models.gpt', 'GPTConfig', 'GPT'),
    'moe': ('rksp.models.moe', 'MoEConfig', 'MoEGPT'),
    'mamba': ('rksp.models.mamba', 'MambaConfig', 'Mamba'),
    'kan': ('rksp.models.kan', 'KANConfig', 'KANTransformer'),
}
MODELS = (*SEQ_MODELS, 'vit')
_IMAGE_TASKS = ('cifar10',)
SCHEDULES = ('cosine', 'constant', 'linear')

# fields that may differ between two runs of one config (timings, machine)
VOLATILE_FIELDS = ('wall_time', 'train_time', 'train_cpu_time', 'profile_time', 'eval_time', 'steps_per_sec',
                   'started_at', 'finished_at', 'env')


class ConfigError(RKSPInputError):
    """An invalid TrainConfig (raised before anything runs)."""


# ----------------------------------------------------------------------------- registries

OptimizerFactory = Callable[..., torch.optim.Optimizer]


def _make_adamw(params, cfg: 'TrainConfig') -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                             weight_decay=cfg.weight_decay, **cfg.optimizer_kwargs)


def _make_adam(params, cfg: 'TrainConfig') -> torch.optim.Optimizer:
    # decoupled decay is AdamW's; plain Adam gets L2 weight decay through its groups
    return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                            weight_decay=cfg.weight_decay, **cfg.optimizer_kwargs)


def _make_sgd(params, cfg: 'TrainConfig') -> torch.optim.Optimizer:
    kw = {'momentum': 0.9, **cfg.optimizer_kwargs}
    return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **kw)


# name -> factory(param_groups, cfg) -> Optimizer. The built-in three are here; every other named
# optimizer or hook registers itself where it is defined (`@register_optimizer('lion')`,
# `@register_hooks('kss')`) in one of PLUGIN_MODULES, which a lookup of a name not yet registered
# imports once (so a sweep worker resolves 'kss' without importing rksp.stabilizers first).
OPTIMIZERS: Dict[str, OptimizerFactory] = {
    'adamw': _make_adamw,
    'adam': _make_adam,
    'sgd': _make_sgd,
}

# name -> factory(**kwargs) -> TrainHooks
HOOKS: Dict[str, Callable[..., Any]] = {}

PLUGIN_MODULES = ('rksp.stabilizers', 'rksp.optim')


def _lookup(registry: Dict[str, Any], name: str) -> Any:
    """registry[name], importing PLUGIN_MODULES once if the name is not registered yet; a
    'package.module:factory' string is returned as is; None if unknown."""
    if name not in registry and ':' not in name:
        for mod in PLUGIN_MODULES:
            importlib.import_module(mod)
    return registry.get(name, name if ':' in name else None)


def register_optimizer(name: str, factory: Optional[Union[OptimizerFactory, str]] = None):
    """Register an optimizer factory `factory(param_groups, cfg) -> Optimizer` under `name`.
    Usable as a decorator: `@register_optimizer('lion')`."""
    def deco(f):
        OPTIMIZERS[name] = f
        return f
    return deco(factory) if factory is not None else deco


def register_hooks(name: str, factory: Optional[Union[Callable[..., Any], str]] = None):
    """Register a hook factory `factory(**kwargs) -> TrainHooks` under `name` (config `hooks: [name]`)."""
    def deco(f):
        HOOKS[name] = f
        return f
    return deco(factory) if factory is not None else deco


def _import_target(target: str) -> Any:
    if ':' not in target:
        raise ValueError(f"{target!r} is not of the form 'package.module:attribute'")
    mod_name, attr = target.split(':', 1)
    mod = importlib.import_module(mod_name)
    obj = mod
    for part in attr.split('.'):
        obj = getattr(obj, part)
    return obj


def resolve_optimizer(name: str) -> OptimizerFactory:
    """The optimizer factory registered under `name` (or a 'package.module:factory' string)."""
    f = _lookup(OPTIMIZERS, name)
    if f is None:
        raise ConfigError(f"unknown optimizer {name!r}; registered: {', '.join(sorted(OPTIMIZERS))}"
                          " (or give 'package.module:factory')")
    return _import_target(f) if isinstance(f, str) else f


def _hook_spec(spec) -> Tuple[str, dict]:
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, dict):
        target = spec.get('target', spec.get('name'))
        extra = set(spec) - {'target', 'name', 'kwargs'}
        if not isinstance(target, str) or extra:
            raise ValueError(f"hook spec {spec!r} must be {{'target': str, 'kwargs': dict}}")
        kwargs = spec.get('kwargs') or {}
        if not isinstance(kwargs, dict):
            raise ValueError(f"hook spec {spec!r}: kwargs must be a dict")
        return target, kwargs
    raise ValueError(f"hook spec {spec!r} must be a name, 'module:factory' or a dict")


def _resolve_hook_factory(target: str):
    f = _lookup(HOOKS, target)
    if f is None:
        raise ValueError(f"unknown hook {target!r}; registered: {', '.join(sorted(HOOKS)) or '(none)'}"
                         " (or give 'package.module:factory')")
    return _import_target(f) if isinstance(f, str) else f


def resolve_hooks(specs: Sequence) -> List['TrainHooks']:
    """Instantiate config-level hook specs."""
    out = []
    for spec in specs:
        target, kwargs = _hook_spec(spec)
        out.append(_resolve_hook_factory(target)(**kwargs))
    return out


# ----------------------------------------------------------------------------- config

_FLOAT_FIELDS = ('lr', 'weight_decay', 'eps', 'min_lr_ratio', 'grad_clip', 'epochs')
_DEFAULT_STEPS = 1000  # (ours) when neither steps nor epochs is given


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
    full_log_steps: int = SPIKE_HORIZON    # every step is kept up to here
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
        errs = _validate(self)
        if errs:
            raise ConfigError('invalid TrainConfig: ' + '; '.join(errs))


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _seq_model_attr(model: str, which: int):
    mod, cfg_name, cls_name = SEQ_MODELS[model]
    return getattr(importlib.import_module(mod), (cfg_name, cls_name)[which])


def _model_config_class(model: str):
    if model in SEQ_MODELS:
        return _seq_model_attr(model, 0)
    from .models.vit import ViTConfig
    return ViTConfig


# fields filled from the data (the user sets the task's fields instead)
_DATA_MODEL_FIELDS = {**{m: ('vocab_size',) for m in SEQ_MODELS}, 'vit': ('img_size', 'in_chans', 'num_classes')}


def _validate(c: TrainConfig) -> List[str]:
    errs: List[str] = []
    if c.task not in TASKS:
        errs.append(f"unknown task {c.task!r} (valid: {', '.join(TASKS)})")
    if c.model not in MODELS:
        errs.append(f"unknown model {c.model!r} (valid: {', '.join(MODELS)})")
    elif c.task in TASKS and (c.task in _IMAGE_TASKS) != (c.model == 'vit'):
        need = "'vit'" if c.task in _IMAGE_TASKS else f"one of {', '.join(SEQ_MODELS)}"
        errs.append(f"task {c.task!r} needs model {need}, got {c.model!r}")
    # ints
    for name, lo in (('batch_size', 1), ('warmup_steps', 0), ('eval_every', 0), ('log_every', 1),
                     ('full_log_steps', 0), ('profile_n_snapshots', 2), ('seed', None)):
        v = getattr(c, name)
        if not _is_int(v) or (lo is not None and v < lo):
            errs.append(f"{name} must be an integer{f' >= {lo}' if lo is not None else ''}, got {v!r}")
    for name, lo in (('steps', 1), ('seq_len', 2), ('vocab_size', 2), ('n_pairs', 1), ('n_train', 1),
                     ('n_val', 1), ('eval_batch_size', 1), ('profile_batch_size', 1), ('data_seed', None)):
        v = getattr(c, name)
        if v is not None and (not _is_int(v) or (lo is not None and v < lo)):
            errs.append(f"{name} must be None or an integer{f' >= {lo}' if lo is not None else ''}, got {v!r}")
    if c.steps is not None and c.epochs is not None:
        errs.append("give steps or epochs, not both")
    if c.epochs is not None and (not _is_num(c.epochs) or not c.epochs > 0 or not math.isfinite(c.epochs)):
        errs.append(f"epochs must be > 0, got {c.epochs!r}")
    # floats
    if not _is_num(c.lr) or not (c.lr > 0) or not math.isfinite(c.lr):
        errs.append(f"lr must be a finite number > 0, got {c.lr!r}")
    if not _is_num(c.weight_decay) or not c.weight_decay >= 0:
        errs.append(f"weight_decay must be >= 0, got {c.weight_decay!r}")
    if not _is_num(c.eps) or not c.eps > 0:
        errs.append(f"eps must be > 0, got {c.eps!r}")
    if (not isinstance(c.betas, tuple) or len(c.betas) != 2
            or not all(_is_num(b) and 0 <= b < 1 for b in c.betas)):
        errs.append(f"betas must be two numbers in [0, 1), got {c.betas!r}")
    if not _is_num(c.min_lr_ratio) or not 0 <= c.min_lr_ratio <= 1:
        errs.append(f"min_lr_ratio must be in [0, 1], got {c.min_lr_ratio!r}")
    if c.grad_clip is not None and (not _is_num(c.grad_clip) or not c.grad_clip > 0):
        errs.append(f"grad_clip must be None or > 0, got {c.grad_clip!r}")
    if c.schedule not in SCHEDULES:
        errs.append(f"unknown schedule {c.schedule!r} (valid: {', '.join(SCHEDULES)})")
    if not isinstance(c.optimizer, str) or _lookup(OPTIMIZERS, c.optimizer) is None:
        errs.append(f"unknown optimizer {c.optimizer!r} (registered: {', '.join(sorted(OPTIMIZERS))})")
    elif ':' in c.optimizer and c.optimizer not in OPTIMIZERS:
        try:
            resolve_optimizer(c.optimizer)
        except Exception as e:  # noqa: BLE001
            errs.append(f"optimizer {c.optimizer!r} cannot be imported: {e}")
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
    else:
        for spec in c.hooks:
            try:
                target, kwargs = _hook_spec(spec)
                json.dumps(kwargs, allow_nan=False)
                _resolve_hook_factory(target)
            except Exception as e:  # noqa: BLE001
                errs.append(f"hook {spec!r}: {e}")
    if c.profile_at_init is True and importlib.util.find_spec('rksp.profiling') is None:
        errs.append("profile_at_init=True but rksp.profiling is not available (set profile_at_init: false)")
    if (c.task in TASKS and c.model in MODELS and (c.task in _IMAGE_TASKS) == (c.model == 'vit')
            and isinstance(c.model_cfg, dict) and isinstance(c.data_kwargs, dict)):
        errs.extend(_validate_task_and_model(c))
    return errs


def _valid_device(s: str) -> bool:
    try:
        torch.device(s)
        return True
    except (RuntimeError, TypeError, ValueError):
        return False


def _validate_task_and_model(c: TrainConfig) -> List[str]:
    errs = []
    # task parameters: the task classes validate themselves cheaply
    try:
        if c.task in ('recall', 'synthetic_lm'):
            _make_synthetic_task(c)
    except (TypeError, ValueError) as e:
        errs.append(f"task {c.task!r}: {e}")
    # model config
    cls = _model_config_class(c.model)
    fnames = [f.name for f in dataclasses.fields(cls)]
    bad = [k for k in c.model_cfg if k not in fnames]
    if bad:
        errs.append(f"unknown {cls.__name__} field(s) {bad} in model_cfg (valid: {', '.join(fnames)})")
        return errs
    derived = [k for k in _DATA_MODEL_FIELDS[c.model] if k in c.model_cfg]
    if derived:
        errs.append(f"model_cfg field(s) {derived} come from the data; set the task's fields "
                    "(vocab_size, data_kwargs) instead")
        return errs
    if c.model == 'gpt':
        from .models.gpt import PRESETS
        if c.preset is not None and c.preset not in PRESETS:
            errs.append(f"unknown preset {c.preset!r} (valid: {', '.join(PRESETS)})")
            return errs
    elif c.preset is not None:
        errs.append(f"preset applies to model 'gpt' only; give {c.model} sizes in model_cfg")
        return errs
    try:
        _model_config(c, data=None)
    except (TypeError, ValueError) as e:
        errs.append(f"model_cfg: {e}")
    return errs


def config_hash(cfg_dict: Dict[str, Any]) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces) of a config dict: 16 hex chars."""
    import hashlib
    s = json.dumps(cfg_dict, sort_keys=True, separators=(',', ':'), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(s.encode('utf-8')).hexdigest()[:16]


# ----------------------------------------------------------------------------- data

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


def _make_synthetic_task(c: TrainConfig):
    kw = {k: getattr(c, k) for k in ('seq_len', 'vocab_size', 'n_train', 'n_val') if getattr(c, k) is not None}
    if c.task == 'recall':
        from .data.recall import RecallTask
        if c.n_pairs is not None:
            kw['n_pairs'] = c.n_pairs
        return RecallTask(seed=_data_seed(c), **kw)
    from .data.synthetic_lm import SyntheticLMTask
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
        task = _make_synthetic_task(c)
        if c.task == 'recall':
            (xt, yt), (xv, yv) = task.train(), task.val()
            return TaskData('recall', xt, yt, xv, yv, task.data_name, bool(task.is_standin),
                            vocab_size=task.vocab_size, num_classes=task.vocab_size, seq_len=task.seq_len)
        xt, xv = task.train(), task.val()
        return TaskData('lm', xt, None, xv, None, task.data_name, bool(task.is_standin),
                        vocab_size=task.vocab_size, seq_len=task.seq_len)
    if c.task == 'wikitext103':
        from .data import load_lm_corpus
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
        from .data import load_image_data
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


# ----------------------------------------------------------------------------- model

def _model_config(c: TrainConfig, data: Optional[TaskData]):
    """The resolved GPTConfig / ViTConfig; with data=None, data-derived fields take
    the values the config implies (used for validation before any data is built)."""
    cls = _model_config_class(c.model)
    if c.model in SEQ_MODELS:
        from .models.gpt import PRESETS
        kw = dict(PRESETS[c.preset]) if c.preset is not None else {}
        kw.update(c.model_cfg)
        if data is not None:
            vocab, seq_len = data.vocab_size, data.seq_len
        elif c.task in ('recall', 'synthetic_lm'):
            task = _make_synthetic_task(c)   # cheap: no data is generated
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
    mcfg = _model_config(c, data)
    if c.model in SEQ_MODELS:
        model = _seq_model_attr(c.model, 1)(mcfg)
    else:
        from .models.vit import build_vit
        model = build_vit(mcfg)
    return model, dataclasses.asdict(mcfg)


# ----------------------------------------------------------------------------- hooks

@dataclass
class StepOutputs:
    logits: torch.Tensor
    loss: torch.Tensor                       # task loss
    hidden: Optional[List[torch.Tensor]]     # [h_0..h_L] when needs_hidden(step), else None


class TrainHooks:
    """Base class of training hooks; override what you need (all are optional)."""

    def transform_model(self, model: nn.Module, cfg: TrainConfig) -> nn.Module:
        return model

    def make_optimizer(self, params, cfg: TrainConfig, model: nn.Module) -> Optional[torch.optim.Optimizer]:
        return None

    def on_start(self, model, optimizer, cfg, ctx: 'StepContext') -> None:
        pass

    def needs_hidden(self, step: int) -> bool:
        return False

    def extra_loss(self, model, batch, outputs: StepOutputs, step: int) -> Optional[torch.Tensor]:
        return None

    def train_step(self, step, model, optimizer, batch, ctx: 'StepContext'):
        return None

    def before_step(self, step, model, optimizer, info: Dict[str, Any]) -> None:
        pass

    def after_step(self, step, model, optimizer, info: Dict[str, Any]) -> None:
        pass

    def on_end(self, record: Dict[str, Any], model: nn.Module) -> None:
        pass


class FunctionHooks(TrainHooks):
    """Hooks from plain callables: FunctionHooks(after_step=f, extra_loss=g, ...)."""

    _NAMES = ('transform_model', 'make_optimizer', 'on_start', 'needs_hidden', 'extra_loss',
              'train_step', 'before_step', 'after_step', 'on_end')

    def __init__(self, **fns):
        bad = set(fns) - set(self._NAMES)
        if bad:
            raise TypeError(f"unknown hook(s) {sorted(bad)}; valid: {self._NAMES}")
        for k, f in fns.items():
            setattr(self, k, f)


def _overrides(h, name: str) -> bool:
    if isinstance(h, FunctionHooks):
        return name in h.__dict__
    base = getattr(TrainHooks, name, None)
    impl = getattr(type(h), name, None)
    return impl is not None and impl is not base or name in getattr(h, '__dict__', {})


class HookList(TrainHooks):
    """Several hooks as one: model transforms chain, extra losses add up, the first
    non-None optimizer wins, at most one hook may replace the step."""

    def __init__(self, hooks: Sequence[TrainHooks] = ()):
        self.hooks = list(hooks)
        for h in self.hooks:
            if not isinstance(h, TrainHooks):
                raise TypeError(f"hooks must be TrainHooks instances (subclass it or use FunctionHooks), "
                                f"got {type(h).__name__}")

        def having(name):
            return [h for h in self.hooks if _overrides(h, name)]
        self._before = having('before_step')
        self._after = having('after_step')
        self._extra = having('extra_loss')
        self._hidden = having('needs_hidden')
        steppers = having('train_step')
        if len(steppers) > 1:
            raise ValueError(f"at most one hook may replace the step, got {len(steppers)}")
        self._step = steppers[0] if steppers else None

    @property
    def has_before(self):
        return bool(self._before)

    @property
    def has_after(self):
        return bool(self._after)

    @property
    def has_extra(self):
        return bool(self._extra)

    @property
    def has_step(self):
        return self._step is not None

    @property
    def has_hidden(self):
        return bool(self._hidden)

    def transform_model(self, model, cfg):
        for h in self.hooks:
            out = h.transform_model(model, cfg)
            model = model if out is None else out
        return model

    def make_optimizer(self, params, cfg, model):
        for h in self.hooks:
            opt = h.make_optimizer(params, cfg, model)
            if opt is not None:
                return opt
        return None

    def on_start(self, model, optimizer, cfg, ctx):
        for h in self.hooks:
            h.on_start(model, optimizer, cfg, ctx)

    def needs_hidden(self, step):
        return any(h.needs_hidden(step) for h in self._hidden)

    def extra_loss(self, model, batch, outputs, step):
        total = None
        for h in self._extra:
            v = h.extra_loss(model, batch, outputs, step)
            if v is not None:
                total = v if total is None else total + v
        return total

    def train_step(self, step, model, optimizer, batch, ctx):
        return self._step.train_step(step, model, optimizer, batch, ctx) if self._step else None

    @property
    def extra_grad_bound(self) -> Optional[float]:
        """Smallest `extra_grad_bound` any hook declares (None: none): the extra losses' gradient is
        scaled to <= that multiple of the task gradient (`StepContext.backward_rest`; KSS grad_bound)."""
        bs = [b for b in (getattr(h, 'extra_grad_bound', None) for h in self.hooks) if b is not None]
        return min(bs) if bs else None

    def before_step(self, step, model, optimizer, info):
        for h in self._before:
            h.before_step(step, model, optimizer, info)

    def after_step(self, step, model, optimizer, info):
        for h in self._after:
            h.after_step(step, model, optimizer, info)

    def on_end(self, record, model):
        for h in self.hooks:
            h.on_end(record, model)


class StepContext:
    """What a step (default or a hook's `train_step`) needs: `forward(batch, step)`
    returns (task_loss, total_loss, outputs, extra_loss) -- total = task + the hooks'
    extra losses (extra None when no hook added one); nothing is backpropagated."""

    def __init__(self, model, optimizer, cfg, hooks: HookList, loss_fn, device, extras):
        self.model = model
        self.optimizer = optimizer
        self.cfg = cfg
        self.hooks = hooks
        self.loss_fn = loss_fn
        self.device = device
        self.extras = extras        # == record['extras']
        self.task_grad_norm = None  # set by default_step when the step has extra losses (div_grad='task')
        self.reg_grad_norm = None   # set by backward_rest: norm of the extra losses' own gradient
        self.reg_grad_scale = None  # set by backward_rest under a bound (hooks' extra_grad_bound)
        self.rest_loss = None       # set by forward: the extra + auxiliary terms of the last forward
        aux = getattr(model, 'aux_loss', None)
        self._aux = aux if callable(aux) else None

    def forward(self, batch, step: int, need_hidden: Optional[bool] = None):
        x = batch[0]
        if need_hidden is None:
            need_hidden = self.hooks.has_hidden and self.hooks.needs_hidden(step)
        if need_hidden:
            with capture_residuals(self.model) as hs:
                logits = self.model(x)
            hidden = list(hs)
        else:
            logits = self.model(x)
            hidden = None
        task_loss = self.loss_fn(logits, batch)
        outputs = StepOutputs(logits, task_loss, hidden)
        extra = self.hooks.extra_loss(self.model, batch, outputs, step) if self.hooks.has_extra else None
        total = task_loss if extra is None else task_loss + extra
        rest = extra
        if self._aux is not None:          # MoE load-balancing term (lambda already applied)
            aux = self._aux()
            total = total + aux
            rest = aux if rest is None else rest + aux
        self.rest_loss = rest              # total - task_loss as its own graph (None: nothing added)
        return task_loss, total, outputs, extra

    def default_step(self, step: int, batch):
        task_loss, total, _, extra = self.forward(batch, step)
        rest = self.rest_loss
        bound = self.hooks.extra_grad_bound
        if rest is not None and rest.requires_grad and (self.cfg.div_grad == 'task' or bound is not None):
            # the label reads the task gradient: backprop it alone first, read its norm, then add the
            # rest's own graph. An off-schedule regularizer (a constant 0) takes the one-pass branch:
            # its gradient is the task gradient.
            task_loss.backward(retain_graph=True)
            self.task_grad_norm = _total_grad_norm(
                [p for p in self.model.parameters() if p.grad is not None]).detach()
            self.backward_rest(rest, bound)
        else:
            total.backward()
        return task_loss, extra

    def backward_rest(self, rest, bound: Optional[float] = None) -> None:
        """Add the gradient of the regularizer graph `rest` after the task backward (task_grad_norm
        set). Records its norm (`reg_grad_norm`) and, with `bound` c, scales it to
        ||g_rest|| <= c ||g_task|| (`reg_grad_scale`; no host sync). Same traversal as rest.backward()."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        grads = torch.autograd.grad(rest, params, allow_unused=True)
        used = [(p, g) for p, g in zip(params, grads) if g is not None]
        norm = _norm_of([g for _, g in used]).detach()
        self.reg_grad_norm = norm
        scale = None
        if bound is not None:
            scale = torch.clamp(bound * self.task_grad_norm.to(norm.device) / norm, max=1.0)
            scale = torch.nan_to_num(scale, nan=1.0)       # 0 / 0: nothing to scale
            self.reg_grad_scale = scale
        for p, g in used:
            if scale is not None:
                g = g * scale.to(g.dtype)
            if p.grad is None:
                p.grad = g
            else:
                p.grad.add_(g)


# ----------------------------------------------------------------------------- losses / eval

def _loss_fn_for(kind: str):
    if kind == 'recall':
        def loss(logits, batch):
            return F.cross_entropy(logits[:, -1, :], batch[1])
    elif kind == 'lm':
        def loss(logits, batch):
            x = batch[0]
            return F.cross_entropy(logits[:, :-1, :].reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1))
    else:
        def loss(logits, batch):
            return F.cross_entropy(logits, batch[1])
    return loss


@torch.no_grad()
def evaluate(model: nn.Module, data: TaskData, batch_size: int, device) -> Dict[str, Optional[float]]:
    """Validation loss and accuracy (recall: last position; LM: next-token, all
    positions t=1..T-1, token-weighted, plus ppl = exp(loss); image: top-1)."""
    was_training = model.training
    model.eval()
    tot_loss = torch.zeros((), dtype=torch.float64, device=device)
    tot_correct = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    n = data.n_val
    for i in range(0, n, batch_size):
        x = data.x_val[i:i + batch_size].to(device)
        logits = model(x)
        if data.kind == 'lm':
            lg = logits[:, :-1, :].reshape(-1, logits.size(-1))
            tgt = x[:, 1:].reshape(-1)
        else:
            y = data.y_val[i:i + batch_size].to(device)
            lg = logits[:, -1, :] if data.kind == 'recall' else logits
            tgt = y
        tot_loss += F.cross_entropy(lg.float(), tgt, reduction='sum').double()
        tot_correct += (lg.argmax(-1) == tgt).sum().double()
        count += tgt.numel()
    model.train(was_training)
    loss, correct = (tot_loss / count).item(), (tot_correct / count).item()
    out = {'val_loss': loss, 'val_acc': correct, 'val_ppl': None}
    if data.kind == 'lm':
        out['val_ppl'] = loss if math.isnan(loss) else (math.exp(loss) if loss < 700 else float('inf'))
    return out


# ----------------------------------------------------------------------------- baselines

def divergence_check(loss: float, grad_norm: float) -> Optional[str]:
    """The paper's label at one step: None, or the reason ('nonfinite_loss', 'loss',
    'nonfinite_grad', 'grad_norm', in that order of precedence)."""
    if not math.isfinite(loss):
        return 'nonfinite_loss'
    if loss > DIVERGE_LOSS:
        return 'loss'
    if not math.isfinite(grad_norm):
        return 'nonfinite_grad'
    if grad_norm > DIVERGE_GRAD_NORM:
        return 'grad_norm'
    return None


def loss_spike_count(losses: Sequence[float], factor: float = SPIKE_FACTOR, window: int = SPIKE_WINDOW,
                     horizon: int = SPIKE_HORIZON) -> int:
    """Steps s in 1..min(horizon, len) whose loss > factor x median of the previous
    min(window, s-1) steps' finite losses; a non-finite loss is a spike; step 1 never is."""
    arr = np.asarray(list(losses)[:horizon], dtype=np.float64)
    count = 0
    for i in range(1, len(arr)):
        if not np.isfinite(arr[i]):
            count += 1
            continue
        prev = arr[max(0, i - window):i]
        prev = prev[np.isfinite(prev)]
        if prev.size and arr[i] > factor * float(np.median(prev)):
            count += 1
    return count


def gradient_baselines(losses: Sequence[float], grad_norms: Sequence[float]) -> Dict[str, Optional[float]]:
    """Table 2's gradient baselines from per-step curves (index 0 = step 1).
    Runs shorter than 100 / 500 steps use what exists (module docstring)."""
    g = np.asarray(list(grad_norms), dtype=np.float64)
    if g.size == 0:
        return {'grad_norm_step1': None, 'grad_norm_step100': None, 'grad_var_1_100': None,
                'loss_spikes_1_500': None}
    head = g[:GRAD_BASELINE_STEP]
    fin = head[np.isfinite(head)]
    return {
        'grad_norm_step1': float(g[0]),
        'grad_norm_step100': float(g[min(GRAD_BASELINE_STEP, g.size) - 1]),
        'grad_var_1_100': float(np.var(fin)) if fin.size else float('nan'),
        'loss_spikes_1_500': int(loss_spike_count(losses)),
    }


def lr_factor(step: int, total: int, warmup: int, schedule: str, min_ratio: float = 0.0) -> float:
    """LR multiplier at `step` (1-based): linear warmup to 1 over `warmup` steps, then
    'cosine' (to min_ratio at `total`), 'linear' (to min_ratio) or 'constant'."""
    if warmup > 0 and step <= warmup:
        return step / warmup
    if schedule == 'constant':
        return 1.0
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == 'cosine':
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))
    return 1.0 - (1.0 - min_ratio) * p


# ----------------------------------------------------------------------------- utilities

def to_jsonable(obj):
    """Plain JSON types: numpy/torch scalars and arrays, tuples, complex ([re, im]), NaN kept."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (bool, str)) or obj is None:
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj)
    if isinstance(obj, (complex, np.complexfloating)):
        return [float(obj.real), float(obj.imag)]
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.detach().cpu().numpy())
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if hasattr(obj, 'to_dict'):
        return to_jsonable(obj.to_dict())
    return str(obj)


def comparable(record: Dict[str, Any]) -> Dict[str, Any]:
    """The record without fields that legitimately differ between identical runs."""
    return {k: v for k, v in record.items() if k not in VOLATILE_FIELDS}


def _param_groups(model: nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{'params': decay, 'weight_decay': weight_decay}]
    if no_decay:
        groups.append({'params': no_decay, 'weight_decay': 0.0})
    return groups


def _resolve_device(s: str) -> torch.device:
    if s == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    return torch.device(s)


def _total_grad_norm(params: Sequence[torch.Tensor]) -> torch.Tensor:
    return _norm_of([p.grad for p in params if p.grad is not None])


def _norm_of(grads: Sequence[torch.Tensor]) -> torch.Tensor:
    """2-norm of a list of tensors taken together (0 for an empty list)."""
    if not grads:
        return torch.zeros(())
    if hasattr(torch.nn.utils, 'get_total_norm'):
        return torch.nn.utils.get_total_norm(grads, 2.0, error_if_nonfinite=False)
    norms = torch._foreach_norm(grads, 2.0)
    return torch.linalg.vector_norm(torch.stack([n.to(grads[0].device) for n in norms]), 2.0)


def _clip(params: Sequence[torch.Tensor], max_norm: float, total: torch.Tensor) -> None:
    grads_params = [p for p in params if p.grad is not None]
    if hasattr(torch.nn.utils, 'clip_grads_with_norm_'):
        torch.nn.utils.clip_grads_with_norm_(grads_params, max_norm, total)
    else:  # pragma: no cover - older torch
        coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        torch._foreach_mul_([p.grad for p in grads_params], coef)


class _BatchSampler:
    """Batches without replacement; a fresh permutation each epoch (batches may straddle epochs)."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator):
        self.n, self.bs, self.g = n, batch_size, generator
        self.buf = torch.empty(0, dtype=torch.long)

    def next(self) -> torch.Tensor:
        while self.buf.numel() < self.bs:
            self.buf = torch.cat([self.buf, torch.randperm(self.n, generator=self.g)])
        idx, self.buf = self.buf[:self.bs], self.buf[self.bs:]
        return idx


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
    c = cfg if isinstance(cfg, TrainConfig) else TrainConfig.from_dict(dict(cfg))
    c.validate()
    data, model, _ = build_run(c)
    return model.eval(), data.x_train[profile_indices(c, data.n_train)]


def _downsample_idx(n: int, full: int, every: int) -> List[int]:
    idx = list(range(min(n, full)))
    idx += list(range(full + every - 1, n, every)) if n > full else []
    if n and (not idx or idx[-1] != n - 1):
        idx.append(n - 1)
    return idx


def _run_profile(model, inputs, cfg: TrainConfig):
    from .profiling import profile as rksp_profile
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            prof = rksp_profile(model, inputs, n_snapshots=cfg.profile_n_snapshots, seed=cfg.profile_seed,
                                progress=False)
    finally:
        model.train(was_training)
    d = prof.to_dict() if hasattr(prof, 'to_dict') else {'summary': prof.summary, 'layers': prof.layers}
    return to_jsonable(d)


# ----------------------------------------------------------------------------- train

def train(cfg: Union[TrainConfig, Dict[str, Any]], hooks: Union[None, TrainHooks, Sequence[TrainHooks]] = None,
          progress: bool = False) -> Dict[str, Any]:
    """Run one training run and return its record (module docstring: schema).

    `hooks` are added after the config's own hooks (`cfg.hooks`). Divergence never
    raises; any other error (bad data, a hook raising) propagates to the caller.
    """
    t_start = time.perf_counter()
    started_at = datetime.now(timezone.utc).isoformat(timespec='seconds')
    cfg = TrainConfig.from_dict(cfg) if not isinstance(cfg, TrainConfig) else cfg
    cfg.validate()
    cfg_dict = cfg.to_dict()
    extra_hooks = [] if hooks is None else ([hooks] if isinstance(hooks, TrainHooks) else list(hooks))
    hk = HookList(resolve_hooks(cfg.hooks) + extra_hooks)
    if hk.has_step and hk.extra_grad_bound is not None:
        raise ConfigError(f"a bound on the regularizer gradient (extra_grad_bound {hk.extra_grad_bound}, e.g. KSS "
                          f"grad_bound) is applied by the default step, but hook {type(hk._step).__name__} "
                          "replaces the step (e.g. SAM)")
    device = _resolve_device(cfg.device)

    prev_det = (torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled())
    det_mod = getattr(torch.utils, 'deterministic', None)
    prev_fill = getattr(det_mod, 'fill_uninitialized_memory', None)
    if cfg.deterministic:
        if device.type == 'cuda':
            os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')   # deterministic cuBLAS
        torch.use_deterministic_algorithms(True, warn_only=True)
        if prev_fill is not None:
            # deterministic mode NaN-fills every torch.empty: ~3-5% of a CPU step, and
            # nothing here reads uninitialized memory
            det_mod.fill_uninitialized_memory = False
    try:
        return _train(cfg, cfg_dict, hk, device, progress, t_start, started_at)
    finally:
        torch.use_deterministic_algorithms(prev_det[0], warn_only=prev_det[1])
        if prev_fill is not None:
            det_mod.fill_uninitialized_memory = prev_fill


def _train(cfg: TrainConfig, cfg_dict, hk: HookList, device, progress, t_start, started_at):
    data, model, model_config = build_run(cfg)
    model = hk.transform_model(model, cfg).to(device)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    params = [p for p in model.parameters() if p.requires_grad]

    steps = cfg.steps if cfg.steps is not None else max(1, math.ceil(cfg.epochs * data.n_train / cfg.batch_size))
    record: Dict[str, Any] = {
        'schema_version': SCHEMA_VERSION, 'status': 'ok', 'hash': config_hash(cfg_dict), 'config': cfg_dict,
        'task_kind': data.kind, 'data_name': data.data_name, 'data_is_standin': data.is_standin,
        'n_train': data.n_train, 'n_val': data.n_val, 'seq_len': data.seq_len,
        'model_config': to_jsonable(model_config), 'n_params': int(n_params),
        **init_fields(cfg.model, model_config), 'device': str(device),
        'profile': None, 'profile_error': None, 'steps_planned': int(steps), 'extras': {},
    }

    x_train = data.x_train.to(device)
    y_train = data.y_train.to(device) if data.y_train is not None else None

    # --- RKSP profile at init, on a batch of training inputs with its own generator
    t0 = time.perf_counter()
    if cfg.profile_at_init:
        pidx = profile_indices(cfg, data.n_train).to(device)
        try:
            record['profile'] = _run_profile(model, x_train[pidx], cfg)
        except Exception as e:  # noqa: BLE001 - the run (and its divergence label) still counts
            record['profile_error'] = f'{type(e).__name__}: {e}'
            warnings.warn(f"RKSP profile at init failed ({record['profile_error']}); training goes on "
                          "and the record carries profile=None", RuntimeWarning, stacklevel=2)
    profile_time = time.perf_counter() - t0

    # --- optimizer
    groups = _param_groups(model, cfg.weight_decay)
    opt = hk.make_optimizer(groups, cfg, model)
    if opt is None:
        opt = resolve_optimizer(cfg.optimizer)(groups, cfg)
    for gr in opt.param_groups:
        gr.setdefault('initial_lr', gr['lr'])
    init_lrs = [gr['initial_lr'] for gr in opt.param_groups]
    base_lr = cfg.lr

    loss_fn = _loss_fn_for(data.kind)
    ctx = StepContext(model, opt, cfg, hk, loss_fn, device, record['extras'])
    hk.on_start(model, opt, cfg, ctx)

    gen = torch.Generator().manual_seed(derive_seed(cfg.seed, 'batches'))
    sampler = _BatchSampler(data.n_train, cfg.batch_size, gen)
    eval_bs = cfg.eval_batch_size or cfg.batch_size

    losses: List[float] = []
    gnorms: List[float] = []
    lrs: List[float] = []
    extras_curve: List[float] = []
    any_extra = False
    # per step with a separate regularizer backward (StepContext.backward_rest): both norms, the bound's scale
    reg_grad: Dict[str, List[float]] = {'step': [], 'task_grad_norm': [], 'reg_grad_norm': [], 'scale': []}
    eval_curve: Dict[str, List] = {'step': [], 'val_loss': [], 'val_acc': [], 'val_ppl': []}
    diverged, div_step, div_reason, div_value = False, None, None, None
    strict_step = None
    eval_time = 0.0
    clip = cfg.grad_clip
    info: Dict[str, Any] = {}

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=steps, desc=f"train {record['hash'][:8]}", leave=False)

    t_train, c_train, eval_cpu = time.perf_counter(), time.process_time(), 0.0
    step = 0
    for step in range(1, steps + 1):
        f = lr_factor(step, steps, cfg.warmup_steps, cfg.schedule, cfg.min_lr_ratio)
        for gr, l0 in zip(opt.param_groups, init_lrs):
            gr['lr'] = l0 * f
        lr_now = base_lr * f
        idx = sampler.next()
        if device.type != 'cpu':
            idx = idx.to(device, non_blocking=True)
        batch = (x_train[idx], y_train[idx] if y_train is not None else None)
        if hk.has_before:
            hk.before_step(step, model, opt, {'step': step, 'lr': lr_now, 'batch': batch})

        opt.zero_grad(set_to_none=True)
        ctx.task_grad_norm = ctx.reg_grad_norm = ctx.reg_grad_scale = None
        out = hk.train_step(step, model, opt, batch, ctx) if hk.has_step else None
        if out is None:
            task_loss, extra = ctx.default_step(step, batch)
        elif isinstance(out, (tuple, list)):
            task_loss, extra = out[0], (out[1] if len(out) > 1 else None)
        else:
            task_loss, extra = out, None
        gn = _total_grad_norm(params)
        tgn = ctx.task_grad_norm
        vals = [task_loss.detach().float().reshape(()), gn.detach().float().reshape(()).to(task_loss.device),
                (tgn if tgn is not None else gn).detach().float().reshape(()).to(task_loss.device)]
        if extra is not None:
            vals.append(torch.as_tensor(extra).detach().float().reshape(()).to(task_loss.device))
        rgn = ctx.reg_grad_norm
        if rgn is not None:
            rsc = ctx.reg_grad_scale
            vals += [rgn.float().reshape(()).to(task_loss.device),
                     (rsc if rsc is not None else torch.ones(())).float().reshape(()).to(task_loss.device)]
        synced = torch.stack(vals).tolist()     # the one host sync per step
        if rgn is not None:                     # regularizer vs task gradient, before any bound
            reg_grad['step'].append(step)
            reg_grad['task_grad_norm'].append(synced[2])
            reg_grad['reg_grad_norm'].append(synced[-2])
            reg_grad['scale'].append(synced[-1])
            record['extras']['reg_grad'] = reg_grad
        loss_v, gn_v, label_gn = synced[0], synced[1], synced[2]
        if extra is not None:
            synced = [synced[0], synced[1], synced[3]]
        losses.append(loss_v)
        gnorms.append(gn_v)
        lrs.append(lr_now)
        if extra is not None:
            any_extra = True
            extras_curve.append(synced[2])
        else:
            extras_curve.append(float('nan'))

        if strict_step is None and divergence_check(loss_v, gn_v) is not None:
            strict_step = step          # the label on the total gradient ('total') would stop here
        reason = divergence_check(loss_v, label_gn)
        if reason is not None:
            diverged, div_step, div_reason = True, step, reason
            div_value = loss_v if reason in ('loss', 'nonfinite_loss') else label_gn
            break

        if clip is not None:
            _clip(params, clip, gn)
        opt.step()

        if hk.has_after:
            info = {'step': step, 'lr': lr_now, 'loss': loss_v, 'grad_norm': gn_v,
                    'extra_loss': synced[2] if extra is not None else None}
            hk.after_step(step, model, opt, info)
        if cfg.eval_every and step % cfg.eval_every == 0 and step < steps:
            te, ce = time.perf_counter(), time.process_time()
            ev = evaluate(model, data, eval_bs, device)
            eval_curve['step'].append(step)
            for k in ('val_loss', 'val_acc', 'val_ppl'):
                eval_curve[k].append(ev[k])
            eval_time += time.perf_counter() - te
            eval_cpu += time.process_time() - ce
        if bar is not None:
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f'{loss_v:.3f}', gn=f'{gn_v:.2f}')
    steps_done = step if steps >= 1 else 0
    train_time = time.perf_counter() - t_train - eval_time
    train_cpu_time = time.process_time() - c_train - eval_cpu     # CPU seconds of this process (robust to load)
    if bar is not None:
        bar.close()

    te = time.perf_counter()
    final = evaluate(model, data, eval_bs, device)
    eval_time += time.perf_counter() - te

    keep = _downsample_idx(len(losses), cfg.full_log_steps, cfg.log_every)
    curves = {'step': [i + 1 for i in keep], 'loss': [losses[i] for i in keep],
              'grad_norm': [gnorms[i] for i in keep], 'lr': [lrs[i] for i in keep]}
    if any_extra:
        curves['extra_loss'] = [extras_curve[i] for i in keep]
    if data.kind != 'lm':
        eval_curve.pop('val_ppl')

    record.update({
        'steps_done': int(steps_done), 'diverged': diverged, 'div_step': div_step, 'div_reason': div_reason,
        'div_value': div_value, 'div_step_total_grad': strict_step, 'final_train_loss': losses[-1] if losses else None,
        # baselines from the steps *before* a divergence: the divergence step itself is the label
        **gradient_baselines(losses[:-1] if diverged else losses, gnorms[:-1] if diverged else gnorms),
        'curves': curves, 'eval_curve': eval_curve,
        'val_loss': final['val_loss'], 'val_acc': final['val_acc'], 'val_ppl': final['val_ppl'],
    })
    if cfg.profile_at_end and cfg.profile_at_init and not diverged:
        try:
            record['profile_end'] = _run_profile(model, x_train[pidx], cfg)
        except Exception as e:  # noqa: BLE001
            record['profile_end'] = None
            record['profile_error'] = f'end: {type(e).__name__}: {e}'
    hk.on_end(record, model)
    record['extras'] = to_jsonable(record['extras'])
    wall = time.perf_counter() - t_start
    record.update({
        'wall_time': wall, 'train_time': train_time, 'train_cpu_time': train_cpu_time,
        'profile_time': profile_time, 'eval_time': eval_time,
        'steps_per_sec': steps_done / train_time if train_time > 0 else None,
        'started_at': started_at, 'finished_at': datetime.now(timezone.utc).isoformat(timespec='seconds'),
        'env': {'torch': torch.__version__, 'python': platform.python_version(), 'device': str(device),
                'num_threads': torch.get_num_threads(), 'pid': os.getpid()},
    })
    return record
