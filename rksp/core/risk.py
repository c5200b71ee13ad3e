"""A small divergence-risk model: P(diverge) from the RKSP profile at init and the learning rate.

:class:`RiskModel` is an L2 logistic regression (sklearn ``LogisticRegression``, C = 1) on
standardized features, by default ``[M≈1 at init, log10 LR]`` — the cross-validated predictor of
notebook 02/03 (paper Table 2 and App. H calibrate the init score alone; an init-time score
cannot see the learning rate, so we add it). It is fitted on a runs DataFrame
(:func:`rksp.experiments.runs.run_labeled` / :func:`rksp.harness.record.load_records` rows) and saved as plain
JSON (coefficients, scaler means / scales, feature names, n, what it was fitted on)::

    m = RiskModel.fit(runs, fitted_on={'profile': 'small', 'data': 'associative recall'})
    m.to_json('results/small/risk_model.json')
    RiskModel.from_json('results/small/risk_model.json').predict(score=0.8, lr=5e-3)
    rksp.profile(model, x).divergence_risk(lr=5e-3, model='results/small/risk_model.json')

**Scope.** The probabilities are only as good as the runs the model was fitted on: one task,
architecture family, size, optimizer, schedule, training length and divergence label. Outside
that regime they are extrapolations with no guarantee; ``fitted_on`` records the regime.

Features (raw quantity -> feature): ``m_near_unit`` = the profile's score (mean M≈1 over layers;
runs column ``prof_score``), ``log10_lr`` = log10(lr), ``rho`` = mean spectral radius
(``prof_rho_mean``), ``log10_kappa`` = log10 of the mean κ(V) (``prof_kappa_mean``),
``m_x_log10_kappa`` = m_near_unit × log10_kappa.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd

from rksp.errors import RKSPInputError

__all__ = ['RiskModel', 'FEATURES', 'DEFAULT_FEATURES', 'feature_frame']

KIND = 'rksp.RiskModel'
VERSION = 1
DEFAULT_FEATURES = ('m_near_unit', 'log10_lr')

# feature -> (raw quantities it needs, description). Raw quantities: score, lr, rho, kappa.
FEATURES: Dict[str, tuple] = {
    'm_near_unit': (('score',), 'M≈1 at init: mean near-unit mass over layers (Profile.score, runs prof_score)'),
    'log10_lr': (('lr',), 'log10 of the peak learning rate'),
    'rho': (('rho',), 'mean spectral radius over layers at init (summary rho_mean, runs prof_rho_mean)'),
    'log10_kappa': (('kappa',), 'log10 of the mean eigenvector condition number κ(V) at init'),
    'm_x_log10_kappa': (('score', 'kappa'), 'M≈1 × log10 κ(V) at init'),
}
# raw quantity -> column of a runs frame / key of Profile.summary
RUNS_COLUMNS = {'score': 'prof_score', 'lr': 'lr', 'rho': 'prof_rho_mean', 'kappa': 'prof_kappa_mean'}
SUMMARY_KEYS = {'score': 'score', 'rho': 'rho_mean', 'kappa': 'kappa_mean'}


def _check_features(features: Sequence[str]) -> list:
    if isinstance(features, str):
        features = [features]
    features = list(features)
    if not features:
        raise RKSPInputError('a RiskModel needs at least one feature')
    bad = [f for f in features if f not in FEATURES]
    if bad:
        raise RKSPInputError(f'unknown feature(s) {bad}; valid: {", ".join(FEATURES)}')
    if len(set(features)) != len(features):
        raise RKSPInputError(f'duplicate features in {features}')
    return features


def _positive_log10(v: np.ndarray, name: str, strict: bool) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    bad = ~(v > 0) & np.isfinite(v)
    if bad.any():
        if strict:
            raise RKSPInputError(f'{name} must be > 0 for log10, got {v[bad].ravel()[:3].tolist()}')
        v = np.where(bad, np.nan, v)
    with np.errstate(divide='ignore', invalid='ignore'):
        return np.log10(v)


def _features_from_raw(raw: Mapping[str, Any], features: Sequence[str], strict: bool) -> np.ndarray:
    """(n, k) feature matrix from raw quantities (arrays broadcast together)."""
    need = sorted({r for f in features for r in FEATURES[f][0]})
    missing = [r for r in need if raw.get(r) is None]
    if missing:
        raise RKSPInputError(f'features {list(features)} need {missing}; not given')
    arrs = np.broadcast_arrays(*[np.asarray(raw[r], dtype=float) for r in need])
    vals = {r: a.ravel() for r, a in zip(need, arrs)}
    cols = []
    for f in features:
        if f == 'm_near_unit':
            cols.append(vals['score'])
        elif f == 'log10_lr':
            cols.append(_positive_log10(vals['lr'], 'lr', strict))
        elif f == 'rho':
            cols.append(vals['rho'])
        elif f == 'log10_kappa':
            cols.append(_positive_log10(vals['kappa'], 'kappa', strict))
        elif f == 'm_x_log10_kappa':
            cols.append(vals['score'] * _positive_log10(vals['kappa'], 'kappa', strict))
    return np.column_stack(cols) if cols else np.zeros((0, 0))


def feature_frame(runs: pd.DataFrame, features: Sequence[str] = DEFAULT_FEATURES) -> pd.DataFrame:
    """The model's features for every row of a runs frame (NaN where a raw column is NaN / None /
    not positive for a log). A column already named like the feature is used as is."""
    features = _check_features(features)
    out = pd.DataFrame(index=runs.index)
    for f in features:
        if f in runs.columns:
            out[f] = pd.to_numeric(runs[f], errors='coerce')
            continue
        raw = {}
        for r in FEATURES[f][0]:
            col = RUNS_COLUMNS[r]
            if col not in runs.columns:
                raise RKSPInputError(f'feature {f!r} needs column {col!r} (or {f!r}) in the runs frame')
            raw[r] = pd.to_numeric(runs[col], errors='coerce').to_numpy(dtype=float)
        out[f] = _features_from_raw(raw, [f], strict=False)[:, 0] if len(runs) else []
    return out.replace([np.inf, -np.inf], np.nan)


@dataclass
class RiskModel:
    """Logistic regression P(diverge) = sigmoid(intercept + coef · (x - mean) / scale).

    Only as good as the runs it was fitted on (see the module doc); ``fitted_on`` says which."""

    features: list
    coef: np.ndarray
    intercept: float
    scaler_mean: np.ndarray
    scaler_scale: np.ndarray
    n: int
    n_pos: int
    n_neg: int
    C: float = 1.0
    label: str = 'diverged'
    fitted_on: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.features = _check_features(self.features)
        k = len(self.features)
        self.coef = np.asarray(self.coef, dtype=float).ravel()
        self.scaler_mean = np.asarray(self.scaler_mean, dtype=float).ravel()
        self.scaler_scale = np.asarray(self.scaler_scale, dtype=float).ravel()
        for name in ('coef', 'scaler_mean', 'scaler_scale'):
            v = getattr(self, name)
            if v.size != k:
                raise RKSPInputError(f'{name} has {v.size} values for {k} feature(s)')
            if not np.isfinite(v).all():
                raise RKSPInputError(f'{name} must be finite, got {v.tolist()}')
        if (self.scaler_scale <= 0).any():
            raise RKSPInputError(f'scaler_scale must be > 0, got {self.scaler_scale.tolist()}')
        self.intercept = float(self.intercept)
        if not math.isfinite(self.intercept):
            raise RKSPInputError(f'intercept must be finite, got {self.intercept}')

    # ------------------------------------------------------------------ fit
    @classmethod
    def fit(cls, runs: pd.DataFrame, features: Sequence[str] = DEFAULT_FEATURES, label: str = 'diverged',
            C: float = 1.0, fitted_on: Optional[Mapping[str, Any]] = None) -> 'RiskModel':
        """Fit on a runs frame (one row per run; ``label`` 0/1 or bool). Rows with a NaN feature or
        label are dropped (counted in ``fitted_on['n_dropped']``). Needs both classes."""
        from sklearn.linear_model import LogisticRegression
        if not isinstance(runs, pd.DataFrame):
            raise RKSPInputError(f'runs must be a pandas DataFrame, got {type(runs).__name__}')
        features = _check_features(features)
        if label not in runs.columns:
            raise RKSPInputError(f'label column {label!r} not in the runs frame')
        if not (isinstance(C, (int, float)) and C > 0):
            raise RKSPInputError(f'C must be > 0, got {C!r}')
        X = feature_frame(runs, features).to_numpy(dtype=float)
        try:
            y = pd.Series(runs[label], dtype=object).map(lambda v: np.nan if v is None else v).astype('float64')
        except (TypeError, ValueError):
            raise RKSPInputError(f'label {label!r} must be 0/1 or bool') from None
        y = y.to_numpy(dtype=float)
        bad = ~np.isnan(y) & (y != 0) & (y != 1)
        if bad.any():
            raise RKSPInputError(f'label {label!r} must be 0/1 or bool, got {np.unique(y[bad])[:5].tolist()}')
        keep = np.isfinite(X).all(axis=1) & ~np.isnan(y)
        X, y = X[keep], y[keep].astype(int)
        n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
        if n_pos == 0 or n_neg == 0:
            raise RKSPInputError(f'cannot fit a risk model: need diverged and non-diverged runs, got '
                                 f'n_pos={n_pos}, n_neg={n_neg} (after dropping {int((~keep).sum())} '
                                 f'row(s) with NaN features or label)')
        mean = X.mean(axis=0)
        scale = X.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)          # as sklearn's StandardScaler
        lr = LogisticRegression(C=float(C), max_iter=1000).fit((X - mean) / scale, y)
        info = {**dict(fitted_on or {}), 'n_dropped': int((~keep).sum())}
        return cls(features=features, coef=lr.coef_.ravel(), intercept=float(lr.intercept_[0]),
                   scaler_mean=mean, scaler_scale=scale, n=int(y.size), n_pos=n_pos, n_neg=n_neg,
                   C=float(C), label=label, fitted_on=info)

    # ------------------------------------------------------------------ predict
    def _proba(self, X: np.ndarray) -> np.ndarray:
        if not np.isfinite(X).all():
            raise RKSPInputError('features must be finite (NaN or inf given)')
        z = self.intercept + ((X - self.scaler_mean) / self.scaler_scale) @ self.coef
        return 1.0 / (1.0 + np.exp(-z))

    def _needs(self) -> list:
        return sorted({r for f in self.features for r in FEATURES[f][0]})

    def _predict_raw(self, raw: Mapping[str, Any]):
        need = self._needs()
        missing = [r for r in need if raw.get(r) is None]
        if missing:
            raise RKSPInputError(f'this model uses features {self.features}: give {missing}')
        if 'score' in need:
            s = np.asarray(raw['score'], dtype=float)
            if np.isfinite(s).all() and ((s < 0) | (s > 1)).any():
                raise RKSPInputError(f'score (M≈1) must lie in [0, 1], got {s.ravel()[:3].tolist()}')
        X = _features_from_raw(raw, self.features, strict=True)
        p = self._proba(X)
        shapes = [np.shape(raw[r]) for r in need]
        return float(p[0]) if all(len(sh) == 0 for sh in shapes) else p.reshape(np.broadcast_shapes(*shapes))

    def predict(self, score: Any = None, lr: Any = None, *, rho: Any = None, kappa: Any = None):
        """P(diverge) for an init score (mean M≈1 over layers, in [0, 1]) and a learning rate
        (> 0); scalars or arrays that broadcast (a scalar in gives a float out). ``rho`` / ``kappa``
        only for models that use them. Non-finite inputs raise."""
        return self._predict_raw({'score': score, 'lr': lr, 'rho': rho, 'kappa': kappa})

    def predict_frame(self, runs: pd.DataFrame) -> pd.Series:
        """P(diverge) for every row of a runs frame (NaN where a feature is NaN)."""
        X = feature_frame(runs, self.features).to_numpy(dtype=float)
        out = np.full(len(runs), np.nan)
        ok = np.isfinite(X).all(axis=1)
        if ok.any():
            out[ok] = self._proba(X[ok])
        return pd.Series(out, index=runs.index, name='p_diverge')

    def predict_summary(self, summary: Mapping[str, Any], lr: Any) -> Any:
        """P(diverge) from a profile summary (``Profile.summary``: score, rho_mean, kappa_mean) and a
        learning rate."""
        raw = {r: summary.get(k) for r, k in SUMMARY_KEYS.items()}
        for r in self._needs():
            if r != 'lr' and (raw.get(r) is None or not np.isfinite(np.asarray(raw[r], dtype=float)).all()):
                raise RKSPInputError(f'the profile summary has no finite {SUMMARY_KEYS[r]!r} '
                                     f'(got {raw.get(r)!r}); this model needs it')
        return self._predict_raw({**raw, 'lr': lr})

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        return {'kind': KIND, 'version': VERSION, 'features': list(self.features),
                'feature_definitions': {f: FEATURES[f][1] for f in self.features},
                'coef': [float(v) for v in self.coef], 'intercept': float(self.intercept),
                'scaler_mean': [float(v) for v in self.scaler_mean],
                'scaler_scale': [float(v) for v in self.scaler_scale],
                'n': int(self.n), 'n_pos': int(self.n_pos), 'n_neg': int(self.n_neg), 'C': float(self.C),
                'label': self.label, 'fitted_on': _jsonable(self.fitted_on),
                'scope': 'P(diverge) is only valid for the training regime of the runs it was fitted on '
                         '(fitted_on); elsewhere it is an extrapolation.'}

    def to_json(self, path: Union[str, Path, None] = None) -> str:
        """JSON text (written to ``path`` too when given)."""
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False, ensure_ascii=False)
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text + '\n', encoding='utf-8')
        return text

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> 'RiskModel':
        if not isinstance(d, Mapping):
            raise RKSPInputError(f'a risk model must be a JSON object, got {type(d).__name__}')
        if d.get('kind') != KIND:
            raise RKSPInputError(f"not a risk model: 'kind' is {d.get('kind')!r}, expected {KIND!r}")
        if d.get('version') != VERSION:
            raise RKSPInputError(f"unsupported risk model version {d.get('version')!r} (this code reads {VERSION})")
        need = ('features', 'coef', 'intercept', 'scaler_mean', 'scaler_scale', 'n', 'n_pos', 'n_neg')
        missing = [k for k in need if k not in d]
        if missing:
            raise RKSPInputError(f'risk model JSON lacks {missing}')
        try:
            return cls(features=list(d['features']), coef=d['coef'], intercept=d['intercept'],
                       scaler_mean=d['scaler_mean'], scaler_scale=d['scaler_scale'], n=int(d['n']),
                       n_pos=int(d['n_pos']), n_neg=int(d['n_neg']), C=float(d.get('C', 1.0)),
                       label=str(d.get('label', 'diverged')), fitted_on=dict(d.get('fitted_on') or {}))
        except (TypeError, ValueError) as e:
            if isinstance(e, RKSPInputError):
                raise
            raise RKSPInputError(f'malformed risk model JSON: {e}') from None

    @classmethod
    def from_json(cls, source: Union[str, Path]) -> 'RiskModel':
        """From a path to a JSON file, or from JSON text. A missing file raises FileNotFoundError,
        malformed content RKSPInputError, both saying what to do."""
        if isinstance(source, Path) or (isinstance(source, str) and not source.lstrip().startswith('{')):
            p = Path(source)
            if not p.is_file():
                raise FileNotFoundError(f'risk model file not found: {p} (fit one with RiskModel.fit(...).to_json(path); '
                                        'notebook 03 writes results/<profile>/risk_model.json)')
            text = p.read_text(encoding='utf-8')
            where = str(p)
        elif isinstance(source, str):
            text, where = source, 'the given text'
        else:
            raise RKSPInputError(f'from_json takes a path or JSON text, got {type(source).__name__}')
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise RKSPInputError(f'malformed risk model JSON in {where}: {e}') from None
        return cls.from_dict(d)

    def __repr__(self) -> str:
        terms = ', '.join(f'{f}: {c:+.3g}' for f, c in zip(self.features, self.coef))
        return (f'RiskModel({terms}; intercept {self.intercept:+.3g}; n={self.n}, n_pos={self.n_pos}; '
                f'fitted_on={self.fitted_on})')


def _jsonable(d: Any) -> Any:
    if isinstance(d, Mapping):
        return {str(k): _jsonable(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_jsonable(v) for v in d]
    if isinstance(d, (np.integer,)):
        return int(d)
    if isinstance(d, (np.floating, float)):
        v = float(d)
        return v if math.isfinite(v) else None
    if isinstance(d, (str, int, bool)) or d is None:
        return d
    return str(d)
