"""Registries of optimizers and hooks: `@register_optimizer`, `@register_hooks`, and name lookup.

Imports nothing from the harness at run time: `rksp.harness.resolve` turns a config's names and
arguments into objects through these registries."""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

from rksp.errors import ConfigError

if TYPE_CHECKING:  # annotations only
    from rksp.harness.config import TrainConfig
    from rksp.harness.hooks import TrainHooks

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
# imports once (so a sweep worker resolves 'kss' without importing rksp.methods.stabilizers first).
OPTIMIZERS: Dict[str, OptimizerFactory] = {
    'adamw': _make_adamw,
    'adam': _make_adam,
    'sgd': _make_sgd,
}

# name -> factory(**kwargs) -> TrainHooks
HOOKS: Dict[str, Callable[..., Any]] = {}

PLUGIN_MODULES = ('rksp.methods.stabilizers', 'rksp.methods.optim')


def lookup(registry: Dict[str, Any], name: str) -> Any:
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
    f = lookup(OPTIMIZERS, name)
    if f is None:
        raise ConfigError(f"unknown optimizer {name!r}; registered: {', '.join(sorted(OPTIMIZERS))}"
                          " (or give 'package.module:factory')")
    return _import_target(f) if isinstance(f, str) else f


def hook_spec(spec) -> Tuple[str, dict]:
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


def resolve_hook_factory(target: str):
    f = lookup(HOOKS, target)
    if f is None:
        raise ValueError(f"unknown hook {target!r}; registered: {', '.join(sorted(HOOKS)) or '(none)'}"
                         " (or give 'package.module:factory')")
    return _import_target(f) if isinstance(f, str) else f


def resolve_hooks(specs: Sequence) -> List['TrainHooks']:
    """Instantiate config-level hook specs."""
    out = []
    for spec in specs:
        target, kwargs = hook_spec(spec)
        out.append(resolve_hook_factory(target)(**kwargs))
    return out
