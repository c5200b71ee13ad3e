"""From a config to what a run is made of: the task, the model config, the hooks and the optimizer.

The second floor of the harness's one-way pipeline config -> resolve -> build -> loop. Everything
that turns names and arguments of a `TrainConfig` into objects happens here, so it fails while the
config is validated, before any run (a sweep reports it for every config at once, "nothing was run"):

    validated(cfg)                 TrainConfig from a dict, every check below run (ConfigError)
    config_errors(cfg)             the checks beyond the fields: optimizer name, hooks built with their
                                   arguments, the task's parameters and the model config; `TrainConfig.validate()`
                                   runs them (`config.add_check`, registered when this module is imported)
    make_synthetic_task(cfg)       the recall / synthetic-LM task object (cheap: no data is generated)
    make_model_config(cfg, data)   the resolved GPTConfig / ViTConfig (data=None: before any data is built)
    run_hooks(cfg, extra)          the run's hooks, the config's first, as one `HookList`
    make_optimizer(cfg, hooks, m)  the optimizer over `param_groups(m, weight_decay)` (a hook may build it)
    TaskData                       a run's data (`rksp.harness.build.load_task_data` builds it)
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn

from rksp.errors import ConfigError
from rksp.harness.config import SEQ_MODELS, TrainConfig, add_check, task_and_model_valid
from rksp.harness.hooks import HookList, TrainHooks
from rksp.harness.registry import OPTIMIZERS, hook_spec, lookup, resolve_hook_factory, resolve_hooks, resolve_optimizer


@dataclass
class TaskData:
    """A run's train / val data (built by `rksp.harness.build.load_task_data`; here because
    `make_model_config` reads it)."""
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
    unigram_ppl: float = float('nan')   # LM: add-one unigram perplexity of the val targets, counts of x_train

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_val(self) -> int:
        return int(self.x_val.shape[0])


# model config fields filled from the data (the user sets the task's fields instead)
DATA_MODEL_FIELDS = {**{m: ('vocab_size',) for m in SEQ_MODELS}, 'vit': ('img_size', 'in_chans', 'num_classes')}


# ----------------------------------------------------------------------------- config -> validated config

def validated(cfg: Union[TrainConfig, Dict[str, Any]]) -> TrainConfig:
    """The TrainConfig of `cfg` (a TrainConfig or a dict), every check run; ConfigError otherwise."""
    c = cfg if isinstance(cfg, TrainConfig) else TrainConfig.from_dict(cfg)
    c.validate()
    return c


def config_errors(c: TrainConfig) -> List[str]:
    """The checks of a config beyond its fields (each skips what the field checks reject)."""
    return optimizer_errors(c) + hook_errors(c) + task_and_model_errors(c)


def optimizer_errors(c: TrainConfig) -> List[str]:
    if not isinstance(c.optimizer, str) or lookup(OPTIMIZERS, c.optimizer) is None:
        return [f"unknown optimizer {c.optimizer!r} (registered: {', '.join(sorted(OPTIMIZERS))})"]
    if ':' in c.optimizer and c.optimizer not in OPTIMIZERS:
        try:
            resolve_optimizer(c.optimizer)
        except Exception as e:  # noqa: BLE001
            return [f"optimizer {c.optimizer!r} cannot be imported: {e}"]
    return []


def hook_errors(c: TrainConfig) -> List[str]:
    """Every hook of the config is built with its arguments (a bad KSS alpha fails here), then the
    hooks are combined as a run combines them."""
    if not isinstance(c.hooks, list):
        return []            # a field error
    errs, built = [], []
    for spec in c.hooks:
        try:
            target, kwargs = hook_spec(spec)
            json.dumps(kwargs, allow_nan=False)
            built.append(resolve_hook_factory(target)(**kwargs))
        except Exception as e:  # noqa: BLE001
            errs.append(f"hook {spec!r}: {e}")
    if not errs:
        try:
            combine_hooks(built)
        except (ConfigError, TypeError, ValueError) as e:
            errs.append(f"hooks: {e}")
    return errs


def task_and_model_errors(c: TrainConfig) -> List[str]:
    if not task_and_model_valid(c):
        return []            # field errors
    errs = []
    # task parameters: the task classes validate themselves cheaply
    try:
        if c.task in ('recall', 'synthetic_lm'):
            make_synthetic_task(c)
    except (TypeError, ValueError) as e:
        errs.append(f"task {c.task!r}: {e}")
    # model config
    cls = model_config_class(c.model)
    fnames = [f.name for f in dataclasses.fields(cls)]
    bad = [k for k in c.model_cfg if k not in fnames]
    if bad:
        errs.append(f"unknown {cls.__name__} field(s) {bad} in model_cfg (valid: {', '.join(fnames)})")
        return errs
    derived = [k for k in DATA_MODEL_FIELDS[c.model] if k in c.model_cfg]
    if derived:
        errs.append(f"model_cfg field(s) {derived} come from the data; set the task's fields "
                    "(vocab_size, data_kwargs) instead")
        return errs
    if c.model == 'gpt':
        from rksp.models.gpt import PRESETS
        if c.preset is not None and c.preset not in PRESETS:
            errs.append(f"unknown preset {c.preset!r} (valid: {', '.join(PRESETS)})")
            return errs
    elif c.preset is not None:
        errs.append(f"preset applies to model 'gpt' only; give {c.model} sizes in model_cfg")
        return errs
    try:
        make_model_config(c, data=None)
    except (TypeError, ValueError) as e:
        errs.append(f"model_cfg: {e}")
    return errs


add_check(config_errors)


# ----------------------------------------------------------------------------- task and model config

def data_seed(c: TrainConfig) -> int:
    """The seed of the run's data: `data_seed`, or the run seed when None."""
    return c.seed if c.data_seed is None else c.data_seed


def make_synthetic_task(c: TrainConfig):
    kw = {k: getattr(c, k) for k in ('seq_len', 'vocab_size', 'n_train', 'n_val') if getattr(c, k) is not None}
    if c.task == 'recall':
        from rksp.data.recall import RecallTask
        if c.n_pairs is not None:
            kw['n_pairs'] = c.n_pairs
        return RecallTask(seed=data_seed(c), **kw)
    from rksp.data.synthetic_lm import SyntheticLMTask
    return SyntheticLMTask(seed=data_seed(c), mode=c.lm_mode, **kw)


def seq_model_attr(model: str, which: int):
    """The config class (which=0) or the model class (which=1) of a sequence model."""
    mod, cfg_name, cls_name = SEQ_MODELS[model]
    return getattr(importlib.import_module(mod), (cfg_name, cls_name)[which])


def model_config_class(model: str):
    if model in SEQ_MODELS:
        return seq_model_attr(model, 0)
    from rksp.models.vit import ViTConfig
    return ViTConfig


def make_model_config(c: TrainConfig, data: Optional['TaskData']):
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


# ----------------------------------------------------------------------------- hooks and optimizer

def combine_hooks(hooks: Sequence[TrainHooks]) -> HookList:
    """`HookList(hooks)`, checking that a bound on the regularizer gradient is not combined with a
    hook that replaces the step (the bound is applied by the default step)."""
    hk = HookList(hooks)
    if hk.step_hook is not None and hk.extra_grad_bound is not None:
        raise ConfigError(f"a bound on the regularizer gradient (extra_grad_bound {hk.extra_grad_bound}, e.g. KSS "
                          f"grad_bound) is applied by the default step, but hook {type(hk.step_hook).__name__} "
                          "replaces the step (e.g. SAM)")
    return hk


def run_hooks(cfg: TrainConfig, extra: Union[None, TrainHooks, Sequence[TrainHooks]] = None) -> HookList:
    """The run's hooks: the config's (`cfg.hooks`, built fresh) first, then `extra`."""
    extra_hooks = [] if extra is None else ([extra] if isinstance(extra, TrainHooks) else list(extra))
    return combine_hooks(resolve_hooks(cfg.hooks) + extra_hooks)


def param_groups(model: nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
    """Weight decay on parameters with >= 2 dimensions (matrices, embeddings), none on the rest."""
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{'params': decay, 'weight_decay': weight_decay}]
    if no_decay:
        groups.append({'params': no_decay, 'weight_decay': 0.0})
    return groups


def make_optimizer(cfg: TrainConfig, hooks: TrainHooks, model: nn.Module) -> torch.optim.Optimizer:
    """The run's optimizer over `param_groups(model, cfg.weight_decay)`: the first hook that builds one
    (μP), else `cfg.optimizer` from the registry."""
    groups = param_groups(model, cfg.weight_decay)
    opt = hooks.make_optimizer(groups, cfg, model)
    if opt is None:
        opt = resolve_optimizer(cfg.optimizer)(groups, cfg)
    return opt
