"""Optimizer baselines of the paper's Tables 4, 13 and 14 as training-harness options.

Everything here is selected from a JSON-able `TrainConfig` (so a sweep can hash it):

  optimizer='lion'                          Lion (Chen et al. 2023)          -> `make_lion`
  optimizer='lamb'                          LAMB (You et al. 2020)           -> `make_lamb`
  hooks=[{'target': 'sam', 'kwargs': {'rho': 0.05}}]   SAM (Foret et al. 2021)  -> `SAMHooks`
  hooks=[{'target': 'mup', 'kwargs': {'base_width': 32}}]  μP (Yang et al. 2022)  -> `MuPHooks`

and `method_overrides(name)` gives the TrainConfig overrides of each named row
('adamw', 'lion', 'lamb', 'lamb_warmup', 'sam_0.05', 'sam_0.10', 'mup',
'mup_higher_lr'); its 'hooks' list is fresh, so a caller can append e.g. a KSS
hook entry to it (KSS + SAM, μP + KSS, LAMB + KSS).

Each of the four names is registered where it is defined (`@register_optimizer`,
`@register_hooks`); `rksp.harness` imports this module on the first lookup of a name it does not
know yet (`rksp.harness.registry.PLUGIN_MODULES`), so a config naming them works without importing it first.

Implementations and why
-----------------------
Lion, LAMB: `timm.optim.Lion` / `timm.optim.Lamb` (maintained; timm>=1.0 comes with
the project's 'vision' extra, which `make` installs; imported on first use, a
one-time cost per process since timm pulls in torchvision). The harness's param
groups are kept (weight decay on >=2-D parameters only), `cfg.lr`, `cfg.betas`, `cfg.weight_decay`,
`cfg.eps` (LAMB) are passed through and `cfg.optimizer_kwargs` override anything
(e.g. {'caution': True}, {'max_grad_norm': 1.0}).
  * Lion: update -lr * sign(beta1 m + (1-beta1) g), decoupled decay p *= 1 - lr*wd.
    Its authors' betas are (0.9, 0.99) (the TrainConfig default (0.9, 0.999) is
    AdamW's): `method_overrides('lion')` sets them; weight decay stays the
    harness's (0.01; Lion's authors suggest 3-10x AdamW's for a 3-10x lower lr).
  * LAMB: the per-layer trust ratio ||w|| / ||adam_step + wd*w|| multiplies the
    step, so ||Δw|| = lr * ||w|| on every adapted tensor. Our settings (not timm's
    defaults): no built-in global-norm clipping (max_grad_norm=None: clipping is
    the harness's `grad_clip`, as for every other optimizer, so "LAMB" and
    "AdamW + grad clip" stay separate rows), L2 decay inside the adaptive step
    (original LAMB, decoupled_decay=False), and the trust ratio is applied to
    every >=2-D group even when weight_decay = 0 (always_adapt on those groups);
    1-D parameters (biases, norm gains) take the plain Adam step, as in
    NVLAMB/BERT.
  * "LAMB + warmup" (Table 14) = LAMB with a longer linear warmup of the
    harness's schedule: a quarter of the run (`LAMB_WARMUP_FRACTION`) when
    `method_overrides('lamb_warmup', steps=S)` knows the run length, at least the
    harness default (100); `LAMB_WARMUP_STEPS` = 500 when it does not. Plain
    'lamb' keeps the harness default warmup (100 steps), like the AdamW row, so
    that row differs from AdamW only in the optimizer.

SAM: written here as a `train_step` hook (`SAMHooks`) rather than wrapping
`pytorch_optimizer.SAM`: that class owns the step (closure + first_step /
second_step), while this harness owns it (grad norm, divergence check, clipping,
optimizer.step()); the hook needs ~30 lines and leaves the base optimizer
(`cfg.optimizer`, AdamW by default) untouched.

μP: a minimal, documented μP for Adam-type optimizers (`MuPHooks`), not the `mup`
package: the package needs its `MuReadout` / `MuSharedReadout` layers, infshapes
from base/delta models and its own optimizer constructors, would still need
a patch for the attention scale of this GPT, and cannot wrap the harness's
optimizer registry (Lion). The rules below are those of `mup.MuAdamW` +
`MuSharedReadout` + 1/d attention (Yang et al. 2022, Table 3 / App. B); for this
GPT the per-parameter lr and weight decay were checked to equal those of mup
1.0.0's `MuAdamW` after `set_base_shapes` (base 32, delta 64, width 128).

Exactly what `MuPHooks(base_width=B, lr_mult=k)` does to a GPT of width
d = d_model (width multiplier m = d / B; "hidden matrices" = every 2-D
parameter inside `model.blocks`: attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj,
whose fan-in and fan-out both grow with d; everything else — token/position
embeddings, the (tied) readout, biases, norm gains — is "vector-like"):
  1. init: hidden matrices are multiplied by 1/sqrt(m), i.e. their std is the
     base model's std * sqrt(B / d) ∝ 1/sqrt(fan_in). Skipped for
     norm='deepnorm', whose DeepNet xavier init already scales as 1/sqrt(d).
     Embeddings and the readout keep their init (std init_std, Θ(1)).
  2. attention logits: q·k * sqrt(B_head) / d_head instead of q·k / sqrt(d_head)
     (B_head = d_head / m), i.e. the 1/d_head scaling, equal to the usual one at
     the base width; applied as a forward hook scaling the q part of
     attn.c_attn's output by 1/sqrt(m).
  3. readout: the head's input is multiplied by 1/m (MuReadout's 1/width_mult,
     bias not scaled); with tied embeddings the embedding lookup is unchanged.
  4. optimizer: the harness's groups are split; hidden matrices get
     lr = cfg.lr * k / m and weight_decay = wd * m (so the decay per step,
     lr * wd, is width-independent, as MuAdamW with decoupled_wd=False); every
     other parameter gets lr = cfg.lr * k. The optimizer is `cfg.optimizer`,
     which must be Adam-type: 'adamw', 'adam' or 'lion' (per-coordinate update
     size Θ(lr)); SGD and LAMB need other rules and raise.
At m = 1 (d == base_width) μP is the identity (nothing is changed). The forward
hooks live on the model object: a state_dict reloaded into a plain GPT loses the
multipliers. "μP + higher LR" (Table 13) is `lr_mult` = `MUP_HIGHER_LR_MULT` (2);
it equals setting cfg.lr twice as high (the record's lr curve shows cfg.lr times
the schedule; `extras['mup']` holds the multipliers).
What this guarantees (tests/test_optim.py "coordinate check"): after a few Adam
steps at a fixed lr, the change of the logits and of the residual stream per
coordinate is roughly width-independent under μP, while under the standard
parametrization it grows with width. At init, μP logits shrink as 1/sqrt(d)
(readout 1/m on a Θ(1)-std readout), as in `mup` without a zero-init readout.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Dict, List, Optional

import torch
import torch.nn as nn

from rksp.errors import ConfigError
from rksp.harness.config import TrainConfig
from rksp.harness.hooks import TrainHooks
from rksp.harness.registry import resolve_optimizer, register_hooks, register_optimizer

__all__ = [
    'make_lion', 'make_lamb', 'SAMHooks', 'MuPHooks', 'method_overrides', 'OPTIMIZER_ROWS', 'SAM_RHOS',
    'LION_BETAS', 'LAMB_WARMUP_FRACTION', 'LAMB_WARMUP_STEPS', 'MUP_BASE_WIDTH', 'MUP_HIGHER_LR_MULT',
    'MUP_OPTIMIZERS', 'mup_hidden_matrices',
]

# ----------------------------------------------------------------------------- constants (ours unless noted)

SAM_RHOS = (0.05, 0.10)          # (paper, Table 4)
SAM_EPS = 1e-12                  # added to ||g|| in the ascent step
LION_BETAS = (0.9, 0.99)         # Lion's authors' default (Chen et al. 2023)
LAMB_WARMUP_FRACTION = 0.25      # "LAMB + warmup": warm up over a quarter of the run
LAMB_WARMUP_STEPS = 500          # ... or 500 steps when the run length is not given
MUP_BASE_WIDTH = 32              # the 'tiny' preset's d_model
MUP_HIGHER_LR_MULT = 2.0         # "μP + higher learning rate" (Table 13)
MUP_OPTIMIZERS = ('adamw', 'adam', 'lion')   # Adam-type: the μP rule below applies


def _default_warmup() -> int:
    return TrainConfig.__dataclass_fields__['warmup_steps'].default


# ----------------------------------------------------------------------------- Lion / LAMB

def _timm_optim(name: str):
    try:
        import timm.optim as topt
    except ImportError as e:  # pragma: no cover - timm ships with the project's extras
        raise ConfigError(f"optimizer {name!r} needs timm (pip install 'timm>=1.0'): {e}") from e
    return getattr(topt, name)


def _construct(cls, params, kwargs: Dict[str, Any]):
    try:
        return cls(params, **kwargs)
    except TypeError as e:
        raise ConfigError(f"{cls.__module__}.{cls.__name__} rejected its arguments {sorted(kwargs)} "
                          f"(check optimizer_kwargs): {e}") from e


@register_optimizer('lion')
def make_lion(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    """`timm.optim.Lion` with lr, betas, weight_decay from `cfg`; `cfg.optimizer_kwargs` override.
    Note: cfg.betas is used as given; Lion's own default is LION_BETAS (method_overrides sets it)."""
    kw = dict(lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    kw.update(cfg.optimizer_kwargs)
    return _construct(_timm_optim('Lion'), params, kw)


@register_optimizer('lamb')
def make_lamb(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    """`timm.optim.Lamb` with lr, betas, eps, weight_decay from `cfg`, no built-in clipping
    (max_grad_norm=None), L2 decay inside the step, trust ratio on every >=2-D group
    (module docstring); `cfg.optimizer_kwargs` override."""
    kw = dict(lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay,
              max_grad_norm=None, decoupled_decay=False)
    kw.update(cfg.optimizer_kwargs)
    params = list(params)
    if 'always_adapt' not in cfg.optimizer_kwargs and params and isinstance(params[0], dict):
        groups = []
        for g in params:
            g = dict(g)
            ps = list(g['params'])
            g['params'] = ps
            if ps and all(p.dim() >= 2 for p in ps):
                g.setdefault('always_adapt', True)
            groups.append(g)
        params = groups
    return _construct(_timm_optim('Lamb'), params, kw)


# ----------------------------------------------------------------------------- SAM

def _check_positive(name: str, v, allow_zero: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
            or (v < 0 if allow_zero else v <= 0):
        raise ConfigError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {v!r}")
    return float(v)


@register_hooks('sam')
class SAMHooks(TrainHooks):
    """Sharpness-Aware Minimization (Foret et al. 2021) as the harness's `train_step`.

    Each step: (1) forward/backward of the full objective (task + every hook's
    extra loss, via `ctx.forward`) at w, giving g; (2) move to w + rho * g / (||g|| + 1e-12)
    (||g|| the global L2 norm over all parameters with a gradient); (3) zero the
    gradients, forward/backward of the full objective again at the perturbed
    weights; (4) restore w exactly (saved copies). The harness then measures,
    checks and clips this second gradient and calls `cfg.optimizer`'s step at w.
    Recorded loss / extra loss are those at w (first pass); the recorded grad
    norm is the applied (perturbed-point) gradient's. Cost: two forward/backward
    passes per step. The extra loss of a stochastic hook (KSS draws layers and
    snapshots) is evaluated afresh in the second pass.
    Our choices: the perturbation uses the gradient of the whole objective and
    skips weight decay; batch (and dropout masks) are shared by both passes only
    as far as the model is deterministic.
    """

    def __init__(self, rho: float = SAM_RHOS[0]):
        self.rho = _check_positive('SAM rho', rho)
        self.n_steps = 0

    def __repr__(self) -> str:
        return f'SAMHooks(rho={self.rho})'

    def train_step(self, step, model, optimizer, batch, ctx):
        task_loss, total, _, extra = ctx.forward(batch, step)
        total.backward()
        params = [p for p in model.parameters() if p.grad is not None]
        if not params:
            return task_loss, extra
        grads = [p.grad for p in params]
        gnorm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.detach().float())
                                                      for g in grads]))
        scale = self.rho / (gnorm + SAM_EPS)
        with torch.no_grad():
            backup = [p.detach().clone() for p in params]
            for p, g in zip(params, grads):
                p.add_(g * scale.to(g.dtype))
        try:
            model.zero_grad(set_to_none=True)
            _, total2, _, _ = ctx.forward(batch, step)
            total2.backward()
        finally:
            with torch.no_grad():
                for p, b in zip(params, backup):
                    p.copy_(b)
        self.n_steps += 1
        return task_loss, extra

    def on_end(self, record, model):
        record['extras']['sam'] = {'rho': self.rho, 'sam_steps': self.n_steps}


# ----------------------------------------------------------------------------- μP

def mup_hidden_matrices(model: nn.Module) -> List[nn.Parameter]:
    """μP's matrix-like parameters of a GPT: every 2-D parameter inside `model.blocks`."""
    seen, out = set(), []
    for p in model.blocks.parameters():
        if p.dim() == 2 and id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


@register_hooks('mup')
class MuPHooks(TrainHooks):
    """μP width transfer for the project's GPT (module docstring: exactly what it does).

    kwargs: base_width (> 0; the width at which μP equals the standard model),
    lr_mult (> 0; multiplies every group's lr, 2.0 for "μP + higher LR").
    """

    def __init__(self, base_width: int = MUP_BASE_WIDTH, lr_mult: float = 1.0):
        if isinstance(base_width, bool) or not isinstance(base_width, int) or base_width <= 0:
            raise ConfigError(f"μP base_width must be a positive integer, got {base_width!r}")
        self.base_width = base_width
        self.lr_mult = _check_positive('μP lr_mult', lr_mult)
        self.width: Optional[int] = None
        self.width_mult: Optional[float] = None
        self._hidden_ids: Optional[set] = None
        self._made_optimizer = False

    def __repr__(self) -> str:
        return f'MuPHooks(base_width={self.base_width}, lr_mult={self.lr_mult})'

    # -- model
    def transform_model(self, model, cfg):
        from rksp.models.gpt import GPT
        if not isinstance(model, GPT):
            raise ConfigError(f"the μP hook supports the project's GPT only, got {type(model).__name__}")
        if cfg.optimizer not in MUP_OPTIMIZERS:
            raise ConfigError(f"the μP hook implements the Adam-type rule (hidden lr / width_mult) and "
                              f"supports optimizer in {MUP_OPTIMIZERS}, got {cfg.optimizer!r}")
        if getattr(model, '_rksp_mup', None) is not None:
            raise ConfigError("μP was already applied to this model")
        d = model.config.d_model
        m = d / self.base_width
        self.width, self.width_mult = d, m
        hidden = mup_hidden_matrices(model)
        self._hidden_ids = {id(p) for p in hidden}
        model._rksp_mup = {'base_width': self.base_width, 'width_mult': m}
        if m == 1.0:
            return model     # μP == the standard model at its base width
        if model.config.norm != 'deepnorm':
            with torch.no_grad():
                for p in hidden:
                    p.mul_(m ** -0.5)
        q_mult = m ** -0.5

        def scale_q(mod, args, out):
            q, kv = out.split([d, out.shape[-1] - d], dim=-1)
            return torch.cat([q * q_mult, kv], dim=-1)

        for blk in model.blocks:
            blk.attn.c_attn.register_forward_hook(scale_q)
        inv_m = 1.0 / m
        model.head.register_forward_pre_hook(lambda mod, args: (args[0] * inv_m,) + tuple(args[1:]))
        return model

    # -- optimizer
    def make_optimizer(self, params, cfg, model):
        if self._hidden_ids is None:
            raise ConfigError("MuPHooks.make_optimizer needs transform_model to have run on the model first")
        m, k = self.width_mult, self.lr_mult
        groups = []
        for g in params:
            g = dict(g) if isinstance(g, dict) else {'params': [g]}
            ps = list(g.pop('params'))
            wd = g.get('weight_decay', cfg.weight_decay)
            lr = g.get('lr', cfg.lr)
            hid = [p for p in ps if id(p) in self._hidden_ids]
            rest = [p for p in ps if id(p) not in self._hidden_ids]
            if hid:
                groups.append({**g, 'params': hid, 'lr': lr * k / m, 'weight_decay': wd * m})
            if rest:
                groups.append({**g, 'params': rest, 'lr': lr * k, 'weight_decay': wd})
        self._made_optimizer = True
        return resolve_optimizer(cfg.optimizer)(groups, cfg)

    def on_start(self, model, optimizer, cfg, ctx):
        if not self._made_optimizer:
            raise ConfigError("another hook built the optimizer before μP could split its groups; "
                              "put the 'mup' hook first")

    def on_end(self, record, model):
        m = self.width_mult
        record['extras']['mup'] = {
            'base_width': self.base_width, 'width': self.width, 'width_mult': m, 'lr_mult': self.lr_mult,
            'hidden_lr_scale': None if m is None else self.lr_mult / m,
            'hidden_wd_scale': m, 'readout_mult': None if m is None else 1.0 / m,
            'attn_logit_mult': None if m is None else m ** -0.5,
            'n_hidden_matrices': None if self._hidden_ids is None else len(self._hidden_ids),
        }


# ----------------------------------------------------------------------------- named methods

OPTIMIZER_ROWS = ('adamw', 'lion', 'lamb', 'lamb_warmup', 'sam_0.05', 'sam_0.10', 'mup', 'mup_higher_lr')


def method_overrides(name: str, *, steps: Optional[int] = None) -> Dict[str, Any]:
    """TrainConfig overrides of a named baseline (Tables 4, 13, 14): always 'optimizer' and a fresh
    'hooks' list, plus the fields the method changes. `steps` (the run length) only matters for
    'lamb_warmup' (module docstring). Unknown names raise ConfigError."""
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ConfigError(f"steps must be None or a positive integer, got {steps!r}")
    table: Dict[str, Dict[str, Any]] = {
        'adamw': {'optimizer': 'adamw', 'hooks': []},
        'lion': {'optimizer': 'lion', 'betas': list(LION_BETAS), 'hooks': []},
        'lamb': {'optimizer': 'lamb', 'hooks': []},
        'lamb_warmup': {'optimizer': 'lamb', 'hooks': [],
                        'warmup_steps': (LAMB_WARMUP_STEPS if steps is None else
                                         max(_default_warmup(), round(LAMB_WARMUP_FRACTION * steps)))},
        'sam_0.05': {'optimizer': 'adamw', 'hooks': [{'target': 'sam', 'kwargs': {'rho': 0.05}}]},
        'sam_0.10': {'optimizer': 'adamw', 'hooks': [{'target': 'sam', 'kwargs': {'rho': 0.10}}]},
        'mup': {'optimizer': 'adamw',
                'hooks': [{'target': 'mup', 'kwargs': {'base_width': MUP_BASE_WIDTH}}]},
        'mup_higher_lr': {'optimizer': 'adamw',
                          'hooks': [{'target': 'mup', 'kwargs': {'base_width': MUP_BASE_WIDTH,
                                                                 'lr_mult': MUP_HIGHER_LR_MULT}}]},
    }
    if name not in table:
        raise ConfigError(f"unknown method {name!r}; known: {', '.join(OPTIMIZER_ROWS)}")
    return copy.deepcopy(table[name])


