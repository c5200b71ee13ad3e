"""The normalizations: one registry that the GPT, the ViT and the MoE / KAN transformers read.

A normalization is one `NormSpec` entry (built-ins in `_BUILTIN`, others through `register_norm`):

  id          `GPTConfig.norm` / `ViTConfig.norm` / `MoEConfig.norm`
  display     its name in tables and figures (the paper's spelling for its six)
  layer       the norm module: 'ln' (LayerNorm), 'rms' (RMSNorm), 'none' (Identity) or a
              constructor f(dim, bias) -> nn.Module
  placement   'pre': h <- α h + f(norm(h));  'post': h <- norm(α h + f(h))   (No-Norm: 'pre', layer 'none')
  final       a norm of `layer` before the head
  deepnet     α = (2N)^1/4 and the DeepNet init (GPT under init='gpt2', ViT); else α = 1
  inner       SubLN: an extra LayerNorm before each sub-layer's output projection
  sweep       in `NORMS`, the normalization sweep of Tables 1, 2, 5 (the paper's six)
  models      the models that build it: 'gpt', 'vit', 'moe' (MoE and KAN transformers: no
              `deepnet`, no `inner`)
  paper       its Table 1 row (n, div_pct, m_near_unit, m_expansive, rho, acc_pct); empty when the
              paper has none: paper columns are then NaN (`rksp.experiments.paper.table1_row`)
  paper_row   the norm whose Table 1 row it is compared with, when not its own (deepnorm_pre)
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Dict, Mapping, Optional, Tuple, Union

import torch.nn as nn

LN_EPS = 1e-5  # LayerNorm / RMSNorm epsilon (PyTorch's LayerNorm default)

LAYERS = ('ln', 'rms', 'none')
PLACEMENTS = ('pre', 'post')
MODELS = ('gpt', 'vit', 'moe')


@dataclass(frozen=True)
class NormSpec:
    id: str
    display: str
    layer: Union[str, Callable[[int, bool], nn.Module]] = 'ln'
    placement: str = 'pre'
    final: bool = True
    deepnet: bool = False
    inner: bool = False
    sweep: bool = False
    models: Tuple[str, ...] = MODELS
    paper: Mapping[str, float] = field(default_factory=dict)
    paper_row: Optional[str] = None

    def __post_init__(self):
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"a norm id must be a non-empty string, got {self.id!r}")
        if not (self.layer in LAYERS if isinstance(self.layer, str) else callable(self.layer)):
            raise ValueError(f"norm {self.id!r}: layer must be one of {LAYERS} or f(dim, bias) -> nn.Module, "
                             f"got {self.layer!r}")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"norm {self.id!r}: placement must be one of {PLACEMENTS}, got {self.placement!r}")
        bad = [m for m in self.models if m not in MODELS]
        if bad:
            raise ValueError(f"norm {self.id!r}: unknown model(s) {bad} (valid: {', '.join(MODELS)})")
        if 'moe' in self.models and (self.deepnet or self.inner):
            raise ValueError(f"norm {self.id!r}: the MoE / KAN blocks have no DeepNet init and no inner norms; "
                             "leave 'moe' out of `models`")
        object.__setattr__(self, 'models', tuple(self.models))
        object.__setattr__(self, 'paper', MappingProxyType(dict(self.paper)))

    def compared_with(self) -> str:
        """The id of the Table 1 row this norm is compared with (its own unless `paper_row`)."""
        return self.paper_row or self.id


_BUILTIN = (
    # the paper's six (Table 1: n, Div.%, M≈1, M>1, ρ, Acc.%)
    NormSpec('pre_ln', 'Pre-LN', 'ln', 'pre', final=True, sweep=True,
             paper=dict(n=25, div_pct=0.0, m_near_unit=0.16, m_expansive=0.54, rho=2.29, acc_pct=7.5)),
    NormSpec('post_ln', 'Post-LN', 'ln', 'post', final=False, sweep=True,
             paper=dict(n=69, div_pct=0.0, m_near_unit=0.66, m_expansive=0.31, rho=7.48, acc_pct=1.4)),
    NormSpec('rmsnorm', 'RMSNorm', 'rms', 'pre', final=True, sweep=True,
             paper=dict(n=12, div_pct=0.0, m_near_unit=0.16, m_expansive=0.54, rho=2.28, acc_pct=13.1)),
    NormSpec('deepnorm', 'DeepNorm', 'ln', 'post', final=False, deepnet=True, sweep=True, models=('gpt', 'vit'),
             paper=dict(n=12, div_pct=0.0, m_near_unit=0.00, m_expansive=1.00, rho=3.94, acc_pct=20.0)),
    NormSpec('subln', 'SubLN', 'ln', 'pre', final=True, inner=True, sweep=True, models=('gpt', 'vit'),
             paper=dict(n=12, div_pct=0.0, m_near_unit=0.13, m_expansive=0.54, rho=2.23, acc_pct=9.0)),
    NormSpec('none', 'No-Norm', 'none', 'pre', final=False, sweep=True,
             paper=dict(n=84, div_pct=96.4, m_near_unit=0.80, m_expansive=0.19, rho=1.11, acc_pct=54.2)),
    # not one of the paper's six (issue 14, rksp.models.gpt): GPT only, compared with the paper's DeepNorm row
    NormSpec('deepnorm_pre', 'DeepNorm (α-skip, pre-LN capture)', 'ln', 'pre', final=True, deepnet=True,
             models=('gpt',), paper_row='deepnorm'),
)

_REGISTRY: 'OrderedDict[str, NormSpec]' = OrderedDict((s.id, s) for s in _BUILTIN)


def register_norm(spec: NormSpec, replace: bool = False) -> NormSpec:
    """Add a normalization (one entry); ValueError if its id is taken (unless `replace`)."""
    if not isinstance(spec, NormSpec):
        raise TypeError(f"register_norm takes a NormSpec, got {type(spec).__name__}")
    if spec.id in _REGISTRY and not replace:
        raise ValueError(f"norm {spec.id!r} is already registered (replace=True to redefine it)")
    _REGISTRY[spec.id] = spec
    return spec


def unregister_norm(norm_id: str) -> None:
    """Remove a registered normalization (the built-ins stay)."""
    if norm_id in {s.id for s in _BUILTIN}:
        raise ValueError(f"norm {norm_id!r} is built in")
    _REGISTRY.pop(norm_id, None)


def norm_ids(model: Optional[str] = None, sweep: Optional[bool] = None) -> Tuple[str, ...]:
    """The registered norm ids in order: those `model` builds (any when None), only the sweep's with `sweep`."""
    return tuple(s.id for s in _REGISTRY.values()
                 if (model is None or model in s.models) and (sweep is None or s.sweep == sweep))


def norm_spec(norm: str, model: Optional[str] = None, model_name: Optional[str] = None) -> NormSpec:
    """The entry of `norm`; ValueError listing the valid ids if `model` does not build it."""
    s = _REGISTRY.get(norm) if isinstance(norm, str) else None
    if s is None or (model is not None and model not in s.models):
        where = f" for {model_name}" if model_name else ''
        raise ValueError(f"unknown norm {norm!r}{where}; valid norms are {', '.join(norm_ids(model))}")
    return s


def norm_name(norm: str) -> str:
    """The display name of a registered norm (the id itself when unknown)."""
    s = _REGISTRY.get(norm)
    return s.display if s is not None else str(norm)


def make_norm(kind, dim: int, bias: bool = True) -> nn.Module:
    """'ln' -> LayerNorm, 'rms' -> RMSNorm (Zhang & Sennrich 2019), 'none' -> Identity, or kind(dim, bias)."""
    if callable(kind):
        return kind(dim, bias)
    if kind == 'ln':
        return nn.LayerNorm(dim, eps=LN_EPS, bias=bias)
    if kind == 'rms':
        return nn.RMSNorm(dim, eps=LN_EPS)
    return nn.Identity()


def final_norm(spec: NormSpec, dim: int, bias: bool = True) -> nn.Module:
    """The norm before the head: `spec.layer` when `spec.final`, else Identity."""
    return make_norm(spec.layer if spec.final else 'none', dim, bias)


def norm_names(model: Optional[str] = None, sweep: Optional[bool] = None) -> Dict[str, str]:
    """id -> display name of the registered norms (filtered as `norm_ids`)."""
    return {n: _REGISTRY[n].display for n in norm_ids(model, sweep)}


__all__ = ['NormSpec', 'LN_EPS', 'register_norm', 'unregister_norm', 'norm_ids', 'norm_spec', 'norm_name',
           'norm_names', 'make_norm', 'final_norm']
