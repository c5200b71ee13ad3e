"""The method rows of the paper's tables (Tables 3, 4, 6, 13, 14) and two that are not the paper's
(TABLES['practice']: QK-LayerNorm, z-loss): one `MethodRow` entry each in `_ROWS`.

A row has a stable `id` (what code, notebooks and tests name: 'no_control', 'clip_1.0', 'kss_0.15',
'mup_kss', ...), its `display` string (the `method` column of every table and run label), its
TrainConfig `overrides`, the paper's numbers (`paper`) and other spellings (`aliases`). Lookups
(`method_row`, `canonical_method`, `apply_method`) take an id, a display string or an alias.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

from rksp import defaults
from rksp.errors import ConfigError
from rksp.harness.config import TrainConfig, planned_steps
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


def run_steps(base: Optional[Dict[str, Any]]) -> Optional[int]:
    """The number of steps a base config runs (`steps`, or epochs x n_train / batch_size rounded up,
    as `rksp.harness.loop` computes it), None when the config does not say."""
    b = base or {}
    ok = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0   # noqa: E731
    if isinstance(b.get('steps'), int) and ok(b['steps']):
        return int(b['steps'])
    if b.get('steps') is None and all(ok(b.get(k)) for k in ('epochs', 'n_train', 'batch_size')):
        return planned_steps(None, b['epochs'], b['n_train'], b['batch_size'])
    return None


def _optim(name: str) -> Callable[[Optional[Dict[str, Any]]], Dict[str, Any]]:
    """Overrides of an optimizer-side row from `rksp.methods.optim.method_overrides` (imported when
    first needed; importing it registers 'lion', 'lamb', 'sam', 'mup'). Given the base config,
    its run length is passed on (it sets the warmup length of 'lamb_warmup'): `steps`, or for a run
    set in epochs, ceil(epochs x n_train / batch_size) as the loop computes it."""
    def get(base: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        from rksp.methods.optim import method_overrides
        return copy.deepcopy(method_overrides(name, steps=run_steps(base)))
    get.__name__ = f'optim:{name}'
    return get


def _combo(*parts) -> Callable[[Optional[Dict[str, Any]]], Dict[str, Any]]:
    def get(base: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        return merge_overrides(*[p(base) if callable(p) else p for p in parts])
    return get


def kss_display(alpha: float, every_step_all_layers: bool = False) -> str:
    """The display string of a KSS row: 'KSS α=0.15' (every 10 steps, half the layers), or with
    ', every step, all layers' (issue 21's frequency rows)."""
    return f'KSS α={alpha:.2f}' + (', every step, all layers' if every_step_all_layers else '')


def kss_id(alpha: float, every_step_all_layers: bool = False) -> str:
    """The id of a KSS row: 'kss_0.15', 'kss_0.15_every_step_all_layers'."""
    return f'kss_{alpha:.2f}' + ('_every_step_all_layers' if every_step_all_layers else '')


Overrides = Union[Dict[str, Any], Callable[[Optional[Dict[str, Any]]], Dict[str, Any]]]


@dataclass(frozen=True)
class MethodRow:
    """One method row. `overrides`: a dict, or f(base cfg or None) -> dict (rows from
    rksp.methods.optim). `paper`: div_pct, acc_pct, m_near_unit (Tables 3, 4, 6, 13, 14),
    overhead (Tables 3, 4, 13, 14, as printed), mechanism (Table 6), best_lr (Table 14); empty
    for rows the paper has no numbers for (their paper columns are NaN)."""
    id: str
    display: str
    overrides: Overrides
    paper: Mapping[str, Any] = field(default_factory=dict)
    aliases: Tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, 'paper', MappingProxyType(dict(self.paper)))
        object.__setattr__(self, 'aliases', tuple(self.aliases))

    def config(self, base: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """The overrides (a fresh copy); `base` lets a row see the run ('LAMB + warmup': `steps`)."""
        return self.overrides(base) if callable(self.overrides) else copy.deepcopy(self.overrides)


def _paper(div_pct: float, acc_pct: float, m_near_unit: Optional[float] = None, **printed) -> Dict[str, Any]:
    return {'div_pct': div_pct, 'acc_pct': acc_pct,
            **({} if m_near_unit is None else {'m_near_unit': m_near_unit}), **printed}


def _kss_row(alpha: float, paper: Optional[Dict[str, Any]] = None, aliases: Tuple[str, ...] = (),
             every_step_all_layers: bool = False) -> MethodRow:
    kw = dict(every=1, layer_fraction=1.0) if every_step_all_layers else {}
    return MethodRow(kss_id(alpha, every_step_all_layers), kss_display(alpha, every_step_all_layers),
                     _kss(alpha, **kw), paper or {}, aliases)


# every row, in the order of METHODS; the paper's numbers as printed (Div.% k/24, Acc.%, M≈1)
_ROWS: List[MethodRow] = [
    # Table 3 (and the baseline of every table)
    MethodRow('no_control', 'No control', {}, _paper(66.7, 28.5, 0.85, mechanism='—', best_lr=0.003),
              ('AdamW', 'No stabilization, AdamW', 'No regularization', 'Standard init, AdamW')),
    MethodRow('clip_0.5', 'Grad clip 0.5', {'grad_clip': 0.5}, _paper(50.0, 32.1, 0.82, overhead='<1%')),
    MethodRow('clip_1.0', 'Grad clip 1.0', {'grad_clip': 1.0}, _paper(58.3, 30.8, 0.83, overhead='<1%', best_lr=0.005),
              ('Gradient clipping at 1.0', 'AdamW + grad clip')),
    # the α sweep (KSS_ALPHA_SWEEP; Fig. 2), every 10 steps on half the layers
    _kss_row(0.01),
    _kss_row(0.05),
    _kss_row(0.10, _paper(25.0, 42.3, 0.68, overhead='9.5%'), ('KSS α=0.1',)),
    _kss_row(0.15, _paper(12.5, 48.2, 0.58, overhead='10.8%', mechanism='Both mechanisms', best_lr=0.008),
             ('KSS', 'KSS, full')),
    _kss_row(0.20, _paper(8.3, 46.5, 0.52, overhead='11.2%'), ('KSS α=0.2',)),
    # Table 4
    MethodRow('spectral_norm', 'Spectral normalization', _hook('spectral_norm'), _paper(41.7, 35.2, overhead='5.2%')),
    MethodRow('weight_norm', 'Weight normalization', _hook('weight_norm'), _paper(54.2, 32.8, overhead='3.8%')),
    MethodRow('grad_penalty_0.1', 'Gradient penalty λ=0.1', _hook('grad_penalty', lam=GRAD_PENALTY_LAMBDA),
              _paper(45.8, 33.1, overhead='6.4%'), ('Gradient penalty, λ=0.1',)),
    MethodRow('sam_0.05', 'SAM ρ=0.05', _optim('sam_0.05'), _paper(37.5, 38.6, overhead='~100%')),
    MethodRow('sam_0.10', 'SAM ρ=0.10', _optim('sam_0.10'), _paper(33.3, 40.2, overhead='~100%'), ('SAM ρ=0.1',)),
    MethodRow('lion', 'Lion', _optim('lion'), _paper(45.8, 36.5, 0.78, overhead='~15%', best_lr=0.001),
              ('Lion optimizer',)),
    MethodRow('kss_0.10_sam_0.05', 'KSS + SAM (α=0.10, ρ=0.05)', _combo(_optim('sam_0.05'), _kss(0.10)),
              _paper(8.3, 45.8, overhead='~112%'), ('KSS + SAM',)),
    # Table 14
    MethodRow('lamb', 'LAMB', _optim('lamb'), _paper(45.8, 36.2, 0.75, overhead='~5%', best_lr=0.01)),
    MethodRow('lamb_warmup', 'LAMB + warmup', _optim('lamb_warmup'),
              _paper(37.5, 40.8, 0.68, overhead='~5%', best_lr=0.02)),
    MethodRow('lamb_kss', 'LAMB + KSS', _combo(_optim('lamb'), _kss(defaults.KSS_ALPHA)),
              _paper(8.3, 52.8, 0.52, overhead='~16%', best_lr=0.015)),
    # Table 13
    MethodRow('mup', 'μP', _optim('mup'), _paper(41.7, 35.8, 0.72, overhead='<1%'), ('μP, width transfer', 'mup')),
    MethodRow('mup_higher_lr', 'μP + higher LR', _optim('mup_higher_lr'), _paper(50.0, 38.2, 0.78, overhead='<1%')),
    MethodRow('mup_kss', 'μP + KSS', _combo(_optim('mup'), _kss(defaults.KSS_ALPHA)),
              _paper(8.3, 51.5, 0.52, overhead='11.2%')),
    # Table 6
    MethodRow('random_l2', 'Random ℓ2 on residuals', _hook('random_l2', lam=GENERIC_LAMBDA),
              _paper(54.2, 31.2, 0.81, mechanism='Magnitude damping')),
    MethodRow('jacobian_penalty', 'Jacobian penalty', _hook('jacobian_penalty', lam=GENERIC_LAMBDA),
              _paper(45.8, 33.8, 0.78, mechanism='Gradient smoothness')),
    MethodRow('activation_variance', 'Activation variance reg.', _hook('activation_variance', lam=GENERIC_LAMBDA),
              _paper(50.0, 32.5, 0.80, mechanism='Distribution control')),
    MethodRow('kss_unstable_only', 'KSS unstable only', _kss(defaults.KSS_ALPHA, near_unit=False),
              _paper(33.3, 38.5, 0.68, mechanism='Spectral stability'), ('KSS, unstable penalty only',)),
    MethodRow('kss_near_unit_only', 'KSS near-unit only', _kss(defaults.KSS_ALPHA, unstable=False),
              _paper(41.7, 36.2, 0.72, mechanism='Damping control'), ('KSS, near-unit guidance only',)),
    # issue 21's dose and frequency grid (docs/regime.md Part 5), TABLES['dose_frequency'] only: larger α at the
    # paper's frequency (every 10 steps, half the layers), and every step on all layers
    *[_kss_row(a) for a in KSS_DOSE_EXTRA],
    *[_kss_row(a, every_step_all_layers=True) for a in KSS_DOSES],
    # not the paper's: two stabilizers practitioners use (issue 21), TABLES['practice'] only
    MethodRow('qk_layernorm', 'QK-LayerNorm', {'model_cfg': {'qk_norm': True}}),        # GPT only (rksp.models.gpt)
    MethodRow('z_loss_1e-4', 'z-loss 1e-4', _hook('z_loss', coeff=Z_LOSS_COEFF)),
]

# id -> row, in table order
ROWS: 'OrderedDict[str, MethodRow]' = OrderedDict((r.id, r) for r in _ROWS)
_BY_DISPLAY: Dict[str, MethodRow] = {r.display: r for r in _ROWS}


class _MethodTable(OrderedDict):
    """Ordered display string -> overrides (a fresh copy on every read). Rows from rksp.methods.optim
    are built on first read; `overrides(name, base)` lets them see the base config (run length)."""

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


REFERENCE_ID = 'no_control'
REFERENCE = ROWS[REFERENCE_ID].display   # the reference row of every recall method table ('No control')

# display string -> overrides (the older by-name view; new code goes through ROWS / method_row)
METHODS: 'OrderedDict[str, Dict[str, Any]]' = _MethodTable((r.display, r.overrides) for r in _ROWS)

# other spellings of the same rows (the paper's tables name them differently) -> display string
ALIASES: Dict[str, str] = {a: r.display for r in _ROWS for a in r.aliases}

# each table's rows, in the paper's order, by id (`table_displays` gives their display strings)
TABLES: Dict[str, List[str]] = {
    'table3': ['no_control', 'clip_0.5', 'clip_1.0', 'kss_0.10', 'kss_0.15', 'kss_0.20'],
    'table4': ['no_control', 'clip_1.0', 'spectral_norm', 'weight_norm', 'grad_penalty_0.1', 'sam_0.05',
               'sam_0.10', 'lion', 'kss_0.15', 'kss_0.10_sam_0.05'],
    'table6': ['no_control', 'random_l2', 'jacobian_penalty', 'activation_variance', 'kss_unstable_only',
               'kss_near_unit_only', 'kss_0.15'],
    'table13': ['no_control', 'mup', 'mup_higher_lr', 'kss_0.15', 'mup_kss'],
    'table14': ['no_control', 'clip_1.0', 'lamb', 'lamb_warmup', 'lion', 'kss_0.15', 'lamb_kss'],
    'alpha_sweep': [kss_id(a) for a in KSS_ALPHA_SWEEP],
    # not a paper table: the reference and the two rows practitioners use (issue 21)
    'practice': ['no_control', 'qk_layernorm', 'z_loss_1e-4'],
    # issue 21: KSS dose x frequency (docs/regime.md Part 5)
    'dose_frequency': ['no_control', *[kss_id(a) for a in KSS_DOSES],
                       *[kss_id(a, every_step_all_layers=True) for a in KSS_DOSES]],
}


def _check_rows() -> None:
    """Ids, display strings and aliases name one row each; TABLES name rows by id."""
    names = [n for r in _ROWS for n in dict.fromkeys((r.id, r.display, *r.aliases))]
    dup = sorted({n for n in names if names.count(n) > 1})
    missing = [i for t in TABLES.values() for i in t if i not in ROWS]
    if dup or missing:
        raise ValueError(f"method rows: names used twice {dup}, TABLES ids without a row {missing}")


_check_rows()


def method_row(name: str) -> MethodRow:
    """The row of an id, a display string or an alias; ConfigError with suggestions if unknown."""
    if isinstance(name, str):
        row = ROWS.get(name) or _BY_DISPLAY.get(name) or _BY_DISPLAY.get(ALIASES.get(name, ''))
        if row is not None:
            return row
    import difflib
    close = difflib.get_close_matches(str(name), list(ROWS) + list(_BY_DISPLAY) + list(ALIASES), n=3)
    raise ConfigError(f"unknown method {name!r}" + (f" (did you mean {', '.join(map(repr, close))}?)"
                                                     if close else f"; known ids: {', '.join(ROWS)}"))


def display(name: str) -> str:
    """The display string (table `method` column) of a row id, display string or alias."""
    return method_row(name).display


def table_displays(table: str) -> List[str]:
    """The display strings of a table's rows (TABLES key), in order."""
    return [ROWS[i].display for i in TABLES[table]]


def canonical_method(name: str) -> str:
    """The display string (METHODS key, run label) of a row id, display string or alias (YAML sweeps
    use all three); ConfigError with suggestions if unknown."""
    return method_row(name).display


def method_config(name: str, base_cfg: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The TrainConfig overrides of a row (a copy); `base_cfg` lets a row depend on the run
    (only 'LAMB + warmup': its warmup is a quarter of `steps`, rksp.methods.optim)."""
    return method_row(name).config(base_cfg)


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
