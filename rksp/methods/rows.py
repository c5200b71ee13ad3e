"""The named method rows of the paper's tables: row name -> config overrides (Tables 3, 4, 6, 13, 14),
and two rows that are not the paper's (TABLES['practice']: QK-LayerNorm, z-loss)."""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional

from rksp import defaults
from rksp.errors import ConfigError
from rksp.harness.config import TrainConfig
from rksp.harness.registry import resolve_hooks
from rksp.methods.stabilizers import GENERIC_LAMBDA, GRAD_PENALTY_LAMBDA, Z_LOSS_COEFF

KSS_ALPHA_SWEEP = (0.01, 0.05, 0.10, 0.15, 0.20)   # (paper) alpha sweep
KSS_DOSE_EXTRA = (0.50, 2.00)                      # (ours, issue 21) doses beyond the paper's sweep
KSS_DOSES = (0.15, *KSS_DOSE_EXTRA)                # the dose x frequency grid of docs/regime.md Part 5

_DICT_FIELDS = ('model_cfg', 'optimizer_kwargs', 'data_kwargs')


def merge_overrides(*parts: Dict[str, Any]) -> Dict[str, Any]:
    """Merge override dicts left to right: `hooks` lists are concatenated, the dict fields
    (model_cfg, optimizer_kwargs, data_kwargs) are merged key by key, other keys replaced."""
    out: Dict[str, Any] = {}
    for p in parts:
        for k, v in (p or {}).items():
            v = copy.deepcopy(v)
            if k == 'hooks':
                out['hooks'] = list(out.get('hooks', [])) + list(v)
            elif k in _DICT_FIELDS and isinstance(v, dict) and isinstance(out.get(k), dict):
                out[k] = {**out[k], **v}
            else:
                out[k] = v
    return out


def _kss(alpha: float, **kw) -> Dict[str, Any]:
    # the projection order is written into every KSS row (issue 13): runs cached under the old
    # order (no 'projection' key) then have another config hash and are not reused as the default
    return {'hooks': [{'target': 'kss', 'kwargs': {'alpha': alpha, 'projection': defaults.RDMD_PROJECTION, **kw}}]}


def _hook(name: str, **kw) -> Dict[str, Any]:
    return {'hooks': [{'target': name, 'kwargs': kw}]}


def _optim(name: str) -> Callable[[Optional[Dict[str, Any]]], Dict[str, Any]]:
    """Overrides of an optimizer-side row from `rksp.methods.optim.method_overrides` (imported when
    first needed; importing it registers 'lion', 'lamb', 'sam', 'mup'). Given the base config,
    its `steps` is passed on (it sets the warmup length of 'lamb_warmup')."""
    def get(base: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        from rksp.methods.optim import method_overrides
        steps = (base or {}).get('steps')
        steps = steps if isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1 else None
        return copy.deepcopy(method_overrides(name, steps=steps))
    get.__name__ = f'optim:{name}'
    return get


def _combo(*parts) -> Callable[[Optional[Dict[str, Any]]], Dict[str, Any]]:
    def get(base: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        return merge_overrides(*[p(base) if callable(p) else p for p in parts])
    return get


def _alpha_name(a: float) -> str:
    return f'KSS α={a:.2f}'

# row name -> overrides: a dict, or a callable f(base_cfg or None) -> dict for rows from rksp.methods.optim
_METHOD_SPECS: List[tuple] = [
    # Table 3 (and the baseline of every table)
    ('No control', {}),
    ('Grad clip 0.5', {'grad_clip': 0.5}),
    ('Grad clip 1.0', {'grad_clip': 1.0}),
    *[(_alpha_name(a), _kss(a)) for a in KSS_ALPHA_SWEEP],
    # Table 4
    ('Spectral normalization', _hook('spectral_norm')),
    ('Weight normalization', _hook('weight_norm')),
    ('Gradient penalty λ=0.1', _hook('grad_penalty', lam=GRAD_PENALTY_LAMBDA)),
    ('SAM ρ=0.05', _optim('sam_0.05')),
    ('SAM ρ=0.10', _optim('sam_0.10')),
    ('Lion', _optim('lion')),
    ('KSS + SAM (α=0.10, ρ=0.05)', _combo(_optim('sam_0.05'), _kss(0.10))),
    # Table 14
    ('LAMB', _optim('lamb')),
    ('LAMB + warmup', _optim('lamb_warmup')),
    ('LAMB + KSS', _combo(_optim('lamb'), _kss(defaults.KSS_ALPHA))),
    # Table 13
    ('μP', _optim('mup')),
    ('μP + higher LR', _optim('mup_higher_lr')),
    ('μP + KSS', _combo(_optim('mup'), _kss(defaults.KSS_ALPHA))),
    # Table 6
    ('Random ℓ2 on residuals', _hook('random_l2', lam=GENERIC_LAMBDA)),
    ('Jacobian penalty', _hook('jacobian_penalty', lam=GENERIC_LAMBDA)),
    ('Activation variance reg.', _hook('activation_variance', lam=GENERIC_LAMBDA)),
    ('KSS unstable only', _kss(defaults.KSS_ALPHA, near_unit=False)),
    ('KSS near-unit only', _kss(defaults.KSS_ALPHA, unstable=False)),
    # issue 21's dose and frequency grid (docs/regime.md Part 5), TABLES['dose_frequency'] only: larger α at the
    # paper's frequency (every 10 steps, half the layers), and every step on all layers
    *[(_alpha_name(a), _kss(a)) for a in KSS_DOSE_EXTRA],
    *[(f'{_alpha_name(a)}, every step, all layers', _kss(a, every=1, layer_fraction=1.0)) for a in KSS_DOSES],
    # not the paper's: two stabilizers practitioners use (issue 21), TABLES['practice'] only
    ('QK-LayerNorm', {'model_cfg': {'qk_norm': True}}),        # GPT only (rksp.models.gpt)
    ('z-loss 1e-4', _hook('z_loss', coeff=Z_LOSS_COEFF)),
]


class _MethodTable(OrderedDict):
    """Ordered row name -> overrides (a fresh copy on every read). Rows from rksp.methods.optim are
    built on first read; `overrides(name, base)` lets them see the base config (run length)."""

    def overrides(self, key, base: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        v = super().__getitem__(key)
        return v(base) if callable(v) else copy.deepcopy(v)

    def __getitem__(self, key):
        return self.overrides(key)

    def get(self, key, default=None):
        return self[key] if key in self else default

    def items(self):
        return [(k, self[k]) for k in self.keys()]

    def values(self):
        return [self[k] for k in self.keys()]

REFERENCE = 'No control'          # the reference row of every recall method table

METHODS: 'OrderedDict[str, Dict[str, Any]]' = _MethodTable(_METHOD_SPECS)

# other spellings of the same rows (the paper's tables name them differently)
ALIASES: Dict[str, str] = {
    'AdamW': 'No control',
    'No stabilization, AdamW': 'No control',
    'No regularization': 'No control',
    'Standard init, AdamW': 'No control',
    'Gradient clipping at 1.0': 'Grad clip 1.0',
    'AdamW + grad clip': 'Grad clip 1.0',
    'KSS': _alpha_name(defaults.KSS_ALPHA),
    'KSS, full': _alpha_name(defaults.KSS_ALPHA),
    'KSS α=0.1': _alpha_name(0.10),
    'KSS α=0.2': _alpha_name(0.20),
    'Gradient penalty, λ=0.1': 'Gradient penalty λ=0.1',
    'SAM ρ=0.1': 'SAM ρ=0.10',
    'Lion optimizer': 'Lion',
    'μP, width transfer': 'μP',
    'mup': 'μP',
    'KSS, unstable penalty only': 'KSS unstable only',
    'KSS, near-unit guidance only': 'KSS near-unit only',
    'KSS + SAM': 'KSS + SAM (α=0.10, ρ=0.05)',
}

# each table's rows, in the paper's order, by METHODS name
TABLES: Dict[str, List[str]] = {
    'table3': ['No control', 'Grad clip 0.5', 'Grad clip 1.0', 'KSS α=0.10', 'KSS α=0.15', 'KSS α=0.20'],
    'table4': ['No control', 'Grad clip 1.0', 'Spectral normalization', 'Weight normalization',
               'Gradient penalty λ=0.1', 'SAM ρ=0.05', 'SAM ρ=0.10', 'Lion', 'KSS α=0.15',
               'KSS + SAM (α=0.10, ρ=0.05)'],
    'table6': ['No control', 'Random ℓ2 on residuals', 'Jacobian penalty', 'Activation variance reg.',
               'KSS unstable only', 'KSS near-unit only', 'KSS α=0.15'],
    'table13': ['No control', 'μP', 'μP + higher LR', 'KSS α=0.15', 'μP + KSS'],
    'table14': ['No control', 'Grad clip 1.0', 'LAMB', 'LAMB + warmup', 'Lion', 'KSS α=0.15', 'LAMB + KSS'],
    'alpha_sweep': [_alpha_name(a) for a in KSS_ALPHA_SWEEP],
    # not a paper table: the reference and the two rows practitioners use (issue 21)
    'practice': ['No control', 'QK-LayerNorm', 'z-loss 1e-4'],
    # issue 21: KSS dose x frequency (docs/regime.md Part 5)
    'dose_frequency': ['No control', *[_alpha_name(a) for a in KSS_DOSES],
                       *[f'{_alpha_name(a)}, every step, all layers' for a in KSS_DOSES]],
}


def canonical_method(name: str) -> str:
    """The METHODS key of a row name or alias; ConfigError with suggestions if unknown."""
    if name in METHODS:
        return name
    if name in ALIASES:
        return ALIASES[name]
    import difflib
    close = difflib.get_close_matches(name, list(METHODS) + list(ALIASES), n=3)
    raise ConfigError(f"unknown method {name!r}" + (f" (did you mean {', '.join(map(repr, close))}?)"
                                                     if close else f"; known: {', '.join(METHODS)}"))


def method_config(name: str, base_cfg: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The TrainConfig overrides of a row (a copy); `base_cfg` lets a row depend on the run
    (only 'LAMB + warmup': its warmup is a quarter of `steps`, rksp.methods.optim)."""
    return METHODS.overrides(canonical_method(name), base_cfg)


def apply_method(base_cfg: Dict[str, Any], name: str, validate: bool = True) -> Dict[str, Any]:
    """`base_cfg` (a TrainConfig dict) with the row `name`'s overrides merged in
    (`merge_overrides`: hooks appended after the base's, dict fields merged, scalars replaced).
    With `validate`, the result is checked as a TrainConfig and its hooks are instantiated
    once, so bad hook parameters raise ConfigError here, before any run."""
    if isinstance(base_cfg, TrainConfig):
        base_cfg = base_cfg.to_dict()
    out = merge_overrides(base_cfg, method_config(name, base_cfg))
    if validate:
        tc = TrainConfig.from_dict(copy.deepcopy(out))
        try:
            resolve_hooks(tc.hooks)
        except ConfigError:
            raise
        except (TypeError, ValueError) as e:
            raise ConfigError(f"method {name!r}: {e}") from e
    return out
