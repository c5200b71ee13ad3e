"""Time to divergence as an endpoint (issue 21): Kaplan–Meier, median, log-rank, Cox hazard ratio, paired test.

A fixed short horizon mistakes delay for prevention: "diverged by step H" counts a run that diverges
at H+1 as stable. These functions read the divergence *step* instead, with right-censoring: a run
without a divergence is known only to have survived the steps it ran.

Data. Each run gives `event` (the divergence step; NaN / None = no divergence) and `steps` (the steps
it ran; a diverged run's `steps_done` is its divergence step). Its time is the event step (observed)
or `steps` (right-censored there). A `horizon` H censors every run at H as well (administrative
censoring: an event after H counts as censored at H), so groups run for different lengths are compared
on the same window. Steps are numbers >= 0; an event after the steps run, a negative or non-finite
step, an empty group or arrays of different lengths raise `RKSPInputError`. At a time where a run
diverges and another is censored, the censored run counts as at risk (censoring after the event).

Methods (alpha = 0.05 unless given):
  kaplan_meier      the product-limit estimate S(t) at every distinct time (events and censorings),
                    Greenwood's variance  Var log S(t) = sum_{t_i <= t} d_i / (n_i (n_i - d_i)), and the
                    pointwise **log-log** CI (Kalbfleisch & Prentice; R's conf.type='log-log'):
                    S(t)^exp(±z sqrt(Var log S) / log S(t)); it stays inside [0, 1]. `se` is Greenwood's
                    SE of S itself, S sqrt(Var log S).
  km_median         the median divergence step, min{t : S(t) <= 1/2} (NaN = not reached: more than half
                    of the runs never diverged), with the Brookmeyer–Crowley-style CI read off the
                    log-log band (as R's survfit prints it): lower = min{t : S_lo(t) <= 1/2},
                    upper = min{t : S_hi(t) <= 1/2} (NaN = not reached).
  logrank           the Mantel–Haenszel log-rank test of two groups: O - E of the first group summed over
                    the pooled event times, hypergeometric variance n1 n2 d (n - d) / (n^2 (n - 1)),
                    chi^2 = (O - E)^2 / V on 1 df.
  cox_binary        Cox proportional hazards with one 0/1 covariate (1 = the group, 0 = the reference),
                    fitted by Newton–Raphson on the log partial likelihood with Breslow's handling of
                    ties; hazard ratio exp(beta) with the Wald CI exp(beta ± z se), se from the observed
                    information. When one group has no event (or every event precedes the other group's
                    first) the likelihood is monotone and beta runs off to ±inf: then hr is 0 or inf,
                    the CI and Wald p are NaN and `note` says so (the log-rank test still applies).
  gehan_scores /    runs paired by (LR, seed): per pair the Gehan (generalized Wilcoxon) score of a run A
  sign_flip_test    against its reference B: +1 when A is known to diverge later than B (B diverged at
                    t_B and A's time t_A > t_B, or A censored at t_A = t_B), -1 when A is known to diverge
                    earlier (A diverged at t_A < t_B, or at t_A = t_B with B censored), 0 when the order
                    cannot be decided (both censored; the one censored first is censored before the
                    other's event; both diverged at the same step). The statistic is the sum of the
                    scores; under H0 (A and B exchangeable within a pair) each score's sign is a fair coin:
                    the two-sided p is P(|sum of sign-flipped scores| >= |observed|), enumerated over
                    all 2^m sign patterns of the m nonzero scores when m <= 16 (exact), else from
                    `n_resamples` random patterns with a fixed seed, p = (1 + #{>=}) / (1 + n_resamples).
                    All 5 pairs in one direction give p = 2/32. Beside it, the paired difference of the
                    divergence steps censored at the horizon, min(t_A, H) - min(t_B, H) (with a censored
                    run at its censoring time: a bound, not the true difference).

Frames (one tidy DataFrame per function; `group` names the column of the groups, e.g. 'method'):
`km_table` (row per group and time), `median_table` (row per group), `logrank_table`,
`hazard_ratio_table`, `paired_table` (row per group against `reference`), `km_figure(km_table, title)`.
The column names follow `rksp.experiments.tables.methods.survival_curve` (step, n_at_risk, n_events,
frac_surviving), so that function can delegate to `km_table`.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
from scipy import stats as sps

from rksp.errors import RKSPInputError

EXACT_MAX_PAIRS = 16           # exact sign-flip enumeration up to 2^16 patterns
N_RESAMPLES = 20000            # Monte Carlo sign flips above that
MC_SEED = 0                    # fixed seed of the Monte Carlo sign flips
CI_TYPE = 'log-log'
KM_COLUMNS = ['step', 'n_at_risk', 'n_events', 'n_censored', 'frac_surviving', 'se', 'ci_lo', 'ci_hi']


def _z(alpha: float) -> float:
    if not 0 < alpha < 1:
        raise RKSPInputError(f"alpha must be in (0, 1), got {alpha!r}")
    return float(sps.norm.ppf(1 - alpha / 2))


# ----------------------------------------------------------------------------- data

def survival_times(events: Any, steps: Any, horizon: Optional[float] = None,
                   what: str = 'runs') -> Tuple[np.ndarray, np.ndarray]:
    """(time, observed) of runs from their divergence steps (`events`, NaN/None = none) and the steps
    they ran (`steps`), censored at `horizon` when given (module docstring). RKSPInputError on bad input."""
    try:
        ev = np.array([np.nan if v is None else v for v in np.atleast_1d(np.asarray(events, dtype=object))],
                      dtype=float)
        st = np.asarray(steps, dtype=float).reshape(-1)
    except (TypeError, ValueError) as e:
        raise RKSPInputError(f"{what}: divergence steps and steps run must be numbers ({e})") from e
    if len(ev) != len(st):
        raise RKSPInputError(f"{what}: {len(ev)} divergence steps but {len(st)} steps-run values "
                             "(one of each per run)")
    if len(ev) == 0:
        raise RKSPInputError(f"{what}: no runs (an empty group)")
    if not np.all(np.isfinite(st)):
        raise RKSPInputError(f"{what}: steps run must be finite, got {st[~np.isfinite(st)][:3].tolist()}")
    if np.any(st < 0):
        raise RKSPInputError(f"{what}: negative steps run {st[st < 0][:3].tolist()}")
    has = ~np.isnan(ev)
    if np.any(np.isinf(ev)):
        raise RKSPInputError(f"{what}: a divergence step is infinite (use NaN for 'did not diverge')")
    if np.any(ev[has] < 0):
        raise RKSPInputError(f"{what}: negative divergence step(s) {ev[has & (ev < 0)][:3].tolist()}")
    late = has & (ev > st)
    if np.any(late):
        i = int(np.flatnonzero(late)[0])
        raise RKSPInputError(f"{what}: divergence step {ev[i]:g} is beyond the {st[i]:g} steps the run ran "
                             f"(run {i}); a divergence step must be <= the steps run")
    t = np.where(has, ev, st)
    obs = has.copy()
    if horizon is not None:
        if not isinstance(horizon, (int, float, np.integer, np.floating)) or isinstance(horizon, bool) \
                or not math.isfinite(horizon) or horizon <= 0:
            raise RKSPInputError(f"horizon must be None or a finite number > 0, got {horizon!r}")
        obs &= t <= horizon
        t = np.minimum(t, float(horizon))
    return t, obs


def _group_data(runs: pd.DataFrame, group: str, event: str, steps: str, horizon, groups) -> Dict[Any, Tuple]:
    for col in (group, steps):
        if col not in runs:
            raise RKSPInputError(f"runs have no column {col!r} (columns: {', '.join(map(str, runs.columns))})")
    names = list(dict.fromkeys(runs[group])) if groups is None else list(groups)
    out = {}
    for g in names:
        sub = runs[runs[group] == g]
        if not len(sub):
            raise RKSPInputError(f"group {g!r} has no runs (an empty group)")
        ev = pd.to_numeric(sub[event], errors='coerce') if event in sub else pd.Series(np.nan, index=sub.index)
        out[g] = survival_times(ev.to_numpy(float), pd.to_numeric(sub[steps], errors='coerce').to_numpy(float),
                                horizon, what=f"group {g!r}")
    return out


# ----------------------------------------------------------------------------- Kaplan–Meier

def kaplan_meier(time: Any, observed: Any, alpha: float = 0.05) -> pd.DataFrame:
    """Kaplan–Meier table (`KM_COLUMNS`): a row at step 0 (S = 1), then one per distinct time;
    Greenwood SE and the pointwise log-log CI (module docstring)."""
    t = np.asarray(time, dtype=float).reshape(-1)
    d = np.asarray(observed, dtype=bool).reshape(-1)
    if len(t) != len(d):
        raise RKSPInputError(f"{len(t)} times but {len(d)} event flags")
    if len(t) == 0:
        raise RKSPInputError("Kaplan–Meier of no runs (an empty group)")
    if not np.all(np.isfinite(t)) or np.any(t < 0):
        raise RKSPInputError("times must be finite and >= 0")
    z = _z(alpha)
    rows = [{'step': 0.0, 'n_at_risk': len(t), 'n_events': 0, 'n_censored': 0, 'frac_surviving': 1.0,
             'se': 0.0, 'ci_lo': 1.0, 'ci_hi': 1.0}]
    s, gw = 1.0, 0.0
    for u in np.unique(t):
        n = int((t >= u).sum())
        e = int(((t == u) & d).sum())
        c = int(((t == u) & ~d).sum())
        if e:
            s *= 1 - e / n
            gw = gw + e / (n * (n - e)) if n > e else math.inf
        lo, hi = loglog_ci(s, gw, z)
        row = {'step': float(u), 'n_at_risk': n, 'n_events': e, 'n_censored': c, 'frac_surviving': s,
               'se': s * math.sqrt(gw) if math.isfinite(gw) else 0.0, 'ci_lo': lo, 'ci_hi': hi}
        if u == 0:
            rows[0] = row
        else:
            rows.append(row)
    return pd.DataFrame(rows, columns=KM_COLUMNS)


def loglog_ci(s: float, var_log_s: float, z: float) -> Tuple[float, float]:
    """Pointwise log-log CI of a survival value s with Greenwood variance of log s."""
    if s >= 1.0 or var_log_s == 0:
        return s, s
    if s <= 0.0 or not math.isfinite(var_log_s):
        return 0.0, 0.0
    w = z * math.sqrt(var_log_s) / abs(math.log(s))
    return s ** math.exp(w), s ** math.exp(-w)


def km_median(km: pd.DataFrame) -> Dict[str, float]:
    """Median step and its CI from a Kaplan–Meier table (module docstring); NaN = not reached."""
    def first_below(col):
        hit = km[km[col] <= 0.5 + 1e-12]
        return float(hit['step'].iloc[0]) if len(hit) else math.nan
    return {'median_step': first_below('frac_surviving'), 'median_ci_lo': first_below('ci_lo'),
            'median_ci_hi': first_below('ci_hi')}


def km_table(runs: pd.DataFrame, group: str = 'method', event: str = 'div_step', steps: str = 'steps_done',
             horizon: Optional[float] = None, groups: Optional[Sequence[Any]] = None,
             alpha: float = 0.05) -> pd.DataFrame:
    """Kaplan–Meier curve of every group: `group` + `KM_COLUMNS`, a row per group and time."""
    parts = []
    for g, (t, d) in _group_data(runs, group, event, steps, horizon, groups).items():
        km = kaplan_meier(t, d, alpha)
        km.insert(0, group, g)
        parts.append(km)
    return pd.concat(parts, ignore_index=True)


def median_table(runs: pd.DataFrame, group: str = 'method', event: str = 'div_step', steps: str = 'steps_done',
                 horizon: Optional[float] = None, groups: Optional[Sequence[Any]] = None,
                 alpha: float = 0.05) -> pd.DataFrame:
    """Per group: runs, events, censored, the longest time seen, the median divergence step with its CI."""
    rows = []
    for g, (t, d) in _group_data(runs, group, event, steps, horizon, groups).items():
        m = km_median(kaplan_meier(t, d, alpha))
        note = 'median not reached (fewer than half diverged)' if math.isnan(m['median_step']) else ''
        rows.append({group: g, 'n_runs': len(t), 'n_events': int(d.sum()), 'n_censored': int((~d).sum()),
                     'max_step': float(t.max()), **m, 'ci': CI_TYPE, 'note': note})
    return pd.DataFrame(rows, columns=[group, 'n_runs', 'n_events', 'n_censored', 'max_step', 'median_step',
                                       'median_ci_lo', 'median_ci_hi', 'ci', 'note'])


# ----------------------------------------------------------------------------- log-rank and Cox

def logrank(t1: Any, d1: Any, t2: Any, d2: Any) -> Dict[str, float]:
    """Two-group log-rank test (module docstring): observed / expected events of group 1 and 2,
    the variance, chi^2 (1 df) and p."""
    t1, t2 = np.asarray(t1, float), np.asarray(t2, float)
    d1, d2 = np.asarray(d1, bool), np.asarray(d2, bool)
    for name, t, d in (('first', t1, d1), ('second', t2, d2)):
        if len(t) == 0:
            raise RKSPInputError(f"log-rank: the {name} group is empty")
        if len(t) != len(d):
            raise RKSPInputError(f"log-rank: the {name} group has {len(t)} times but {len(d)} event flags")
    o1 = e1 = v = 0.0
    for u in np.unique(np.concatenate([t1[d1], t2[d2]])):
        n1, n2 = (t1 >= u).sum(), (t2 >= u).sum()
        a = ((t1 == u) & d1).sum()
        dd = a + ((t2 == u) & d2).sum()
        n = n1 + n2
        o1 += a
        e1 += dd * n1 / n
        if n > 1:
            v += n1 * n2 * dd * (n - dd) / (n * n * (n - 1))
    chi2 = (o1 - e1) ** 2 / v if v > 0 else math.nan
    o2 = float(d1.sum() + d2.sum() - o1)
    return {'observed_1': float(o1), 'expected_1': float(e1), 'observed_2': o2,
            'expected_2': float(d1.sum() + d2.sum() - e1), 'variance': float(v), 'chi2': float(chi2),
            'p': float(sps.chi2.sf(chi2, 1)) if v > 0 else math.nan}


def cox_binary(time: Any, observed: Any, x: Any, alpha: float = 0.05, max_iter: int = 50,
               tol: float = 1e-10) -> Dict[str, Any]:
    """Cox PH with one 0/1 covariate, Breslow ties, Newton–Raphson (module docstring). Returns beta, se,
    hr, hr_ci_lo/hi (Wald), p_wald, score_chi2 (score test at beta = 0), iterations, converged, note."""
    t = np.asarray(time, float)
    d = np.asarray(observed, bool)
    x = np.asarray(x, float)
    if not (len(t) == len(d) == len(x)):
        raise RKSPInputError(f"Cox: {len(t)} times, {len(d)} event flags, {len(x)} covariates (one each per run)")
    if not np.isin(x, (0.0, 1.0)).all() or x.min() == x.max():
        raise RKSPInputError("Cox: the covariate must be 0/1 with both values present (two groups)")
    z = _z(alpha)
    ut = np.unique(t[d])
    # per event time: events (total, with x=1), at risk (total, with x=1)
    dk = np.array([((t == u) & d).sum() for u in ut], float)
    d1k = np.array([((t == u) & d & (x == 1)).sum() for u in ut], float)
    nk0 = np.array([((t >= u) & (x == 0)).sum() for u in ut], float)
    nk1 = np.array([((t >= u) & (x == 1)).sum() for u in ut], float)

    def score_info(b):
        w1 = nk1 * math.exp(b)
        p = w1 / (nk0 + w1)                      # weighted share of x=1 in each risk set
        return float((d1k - dk * p).sum()), float((dk * p * (1 - p)).sum())

    u0, i0 = score_info(0.0)
    beta, it, converged, note = 0.0, 0, False, ''
    for it in range(1, max_iter + 1):
        u, info = score_info(beta)
        if info <= 1e-300:
            break
        step = u / info
        step = max(-5.0, min(5.0, step))          # step halving is not needed: the likelihood is concave
        beta += step
        if abs(step) < tol:
            converged = True
            break
        if abs(beta) > 30:
            break
    monotone = d1k.sum() == 0 or d1k.sum() == dk.sum() or abs(beta) > 30 or not converged
    if monotone:
        # no finite maximum: all events in one group, or one group's events all before the other's
        direction = (d1k - dk * nk1 / (nk0 + nk1)).sum()
        beta = math.inf if direction > 0 else -math.inf
        note = 'monotone likelihood: no finite hazard ratio (one group has no event, or the groups do ' \
               'not overlap); use the log-rank test'
        return {'beta': beta, 'se': math.nan, 'hr': math.exp(beta), 'hr_ci_lo': math.nan, 'hr_ci_hi': math.nan,
                'p_wald': math.nan, 'score_chi2': u0 * u0 / i0 if i0 > 0 else math.nan, 'iterations': it,
                'converged': False, 'note': note}
    _, info = score_info(beta)
    se = 1 / math.sqrt(info)
    return {'beta': beta, 'se': se, 'hr': math.exp(beta), 'hr_ci_lo': math.exp(beta - z * se),
            'hr_ci_hi': math.exp(beta + z * se), 'p_wald': float(2 * sps.norm.sf(abs(beta) / se)),
            'score_chi2': u0 * u0 / i0 if i0 > 0 else math.nan, 'iterations': it, 'converged': True, 'note': note}


def _others(data: Dict[Any, Tuple], reference: Any) -> List[Any]:
    if reference not in data:
        raise RKSPInputError(f"reference group {reference!r} has no runs (groups: {', '.join(map(str, data))})")
    others = [g for g in data if g != reference]
    if not others:
        raise RKSPInputError(f"no group to compare with the reference {reference!r}")
    return others


def logrank_table(runs: pd.DataFrame, reference: Any, group: str = 'method', event: str = 'div_step',
                  steps: str = 'steps_done', horizon: Optional[float] = None,
                  groups: Optional[Sequence[Any]] = None) -> pd.DataFrame:
    """Log-rank test of every group against `reference`: a row per group (O, E of each, chi^2, p)."""
    data = _group_data(runs, group, event, steps, horizon, groups if groups is None else [reference, *groups])
    rows = []
    for g in _others(data, reference):
        r = logrank(*data[g], *data[reference])
        rows.append({group: g, 'reference': reference, 'n': len(data[g][0]), 'n_reference': len(data[reference][0]),
                     'observed': r['observed_1'], 'expected': r['expected_1'],
                     'observed_reference': r['observed_2'], 'expected_reference': r['expected_2'],
                     'chi2': r['chi2'], 'p': r['p']})
    return pd.DataFrame(rows, columns=[group, 'reference', 'n', 'n_reference', 'observed', 'expected',
                                       'observed_reference', 'expected_reference', 'chi2', 'p'])


def hazard_ratio_table(runs: pd.DataFrame, reference: Any, group: str = 'method', event: str = 'div_step',
                       steps: str = 'steps_done', horizon: Optional[float] = None,
                       groups: Optional[Sequence[Any]] = None, alpha: float = 0.05) -> pd.DataFrame:
    """Cox hazard ratio of every group against `reference` (HR < 1: the group diverges later)."""
    data = _group_data(runs, group, event, steps, horizon, groups if groups is None else [reference, *groups])
    rows = []
    for g in _others(data, reference):
        (tg, dg), (tr, dr) = data[g], data[reference]
        r = cox_binary(np.concatenate([tg, tr]), np.concatenate([dg, dr]),
                       np.concatenate([np.ones(len(tg)), np.zeros(len(tr))]), alpha)
        rows.append({group: g, 'reference': reference, 'n_events': int(dg.sum()), 'n_events_reference': int(dr.sum()),
                     **{k: r[k] for k in ('hr', 'hr_ci_lo', 'hr_ci_hi', 'beta', 'se', 'p_wald', 'converged',
                                          'note')}})
    return pd.DataFrame(rows, columns=[group, 'reference', 'n_events', 'n_events_reference', 'hr', 'hr_ci_lo',
                                       'hr_ci_hi', 'beta', 'se', 'p_wald', 'converged', 'note'])


# ----------------------------------------------------------------------------- paired runs

def gehan_scores(t_a: Any, d_a: Any, t_b: Any, d_b: Any) -> np.ndarray:
    """Per pair, +1 (A known to diverge later than B), -1 (earlier) or 0 (undecidable) (module docstring)."""
    t_a, t_b = np.asarray(t_a, float), np.asarray(t_b, float)
    d_a, d_b = np.asarray(d_a, bool), np.asarray(d_b, bool)
    if not (len(t_a) == len(d_a) == len(t_b) == len(d_b)):
        raise RKSPInputError(f"paired scores: {len(t_a)}, {len(d_a)}, {len(t_b)}, {len(d_b)} values; "
                             "pairs need one time and one event flag per run on both sides")
    later = d_b & ((t_a > t_b) | ((t_a == t_b) & ~d_a))
    earlier = d_a & ((t_a < t_b) | ((t_a == t_b) & ~d_b))
    return later.astype(int) - earlier.astype(int)


def sign_flip_test(scores: Any, n_resamples: int = N_RESAMPLES, seed: int = MC_SEED) -> Dict[str, Any]:
    """Sign-flip permutation test of sum(scores): two-sided p, one-sided p (sum >= observed), exact when
    at most EXACT_MAX_PAIRS scores are nonzero, else Monte Carlo (module docstring)."""
    s = np.asarray(scores, float).reshape(-1)
    if len(s) == 0:
        raise RKSPInputError("sign-flip test of no pairs")
    nz = s[s != 0]
    obs = float(s.sum())
    m = len(nz)
    if m == 0:
        return {'statistic': obs, 'p': 1.0, 'p_greater': 1.0, 'exact': True, 'n_patterns': 1}
    if m <= EXACT_MAX_PAIRS:
        bits = (np.arange(2 ** m)[:, None] >> np.arange(m)) & 1
        null = (1 - 2 * bits) @ nz
        return {'statistic': obs, 'p': float(np.mean(np.abs(null) >= abs(obs) - 1e-9)),
                'p_greater': float(np.mean(null >= obs - 1e-9)), 'exact': True, 'n_patterns': 2 ** m}
    rng = np.random.default_rng(seed)
    ge = gt = 0
    left = int(n_resamples)
    while left > 0:
        k = min(left, 4096)
        null = rng.choice((-1.0, 1.0), size=(k, m)) @ nz
        ge += int((np.abs(null) >= abs(obs) - 1e-9).sum())
        gt += int((null >= obs - 1e-9).sum())
        left -= k
    return {'statistic': obs, 'p': (1 + ge) / (1 + n_resamples), 'p_greater': (1 + gt) / (1 + n_resamples),
            'exact': False, 'n_patterns': int(n_resamples)}


def paired_table(runs: pd.DataFrame, reference: Any, pair_on: Sequence[str] = ('lr', 'seed'),
                 group: str = 'method', event: str = 'div_step', steps: str = 'steps_done',
                 horizon: Optional[float] = None, groups: Optional[Sequence[Any]] = None,
                 n_resamples: int = N_RESAMPLES, seed: int = MC_SEED) -> pd.DataFrame:
    """Every group against `reference`, runs paired on `pair_on` (e.g. LR and seed): pairs, Gehan scores
    (later / earlier / undecided), the paired step difference censored at the horizon (median, mean),
    the sign-flip statistic and p (two-sided; p_later one-sided: the group diverges later)."""
    pair_on = list(pair_on)
    miss = [c for c in [group, steps, *pair_on] if c not in runs]
    if miss:
        raise RKSPInputError(f"runs have no column(s) {miss}")
    names = list(dict.fromkeys(runs[group])) if groups is None else [reference, *groups]
    ref = runs[runs[group] == reference]
    if not len(ref):
        raise RKSPInputError(f"reference group {reference!r} has no runs")
    if ref.duplicated(pair_on).any():
        raise RKSPInputError(f"reference group {reference!r} has several runs with the same {pair_on}")
    rows = []
    for g in [n for n in dict.fromkeys(names) if n != reference]:
        sub = runs[runs[group] == g]
        if not len(sub):
            raise RKSPInputError(f"group {g!r} has no runs (an empty group)")
        if sub.duplicated(pair_on).any():
            raise RKSPInputError(f"group {g!r} has several runs with the same {pair_on}")
        m = sub.merge(ref, on=pair_on, suffixes=('_a', '_b'))
        if not len(m):
            raise RKSPInputError(f"group {g!r} shares no {pair_on} with the reference {reference!r}")

        def col(name, side):
            c = f'{name}_{side}'
            return pd.to_numeric(m[c], errors='coerce').to_numpy(float) if c in m else np.full(len(m), np.nan)
        ta, da = survival_times(col(event, 'a'), col(steps, 'a'), horizon, what=f"group {g!r}")
        tb, db = survival_times(col(event, 'b'), col(steps, 'b'), horizon, what=f"group {reference!r}")
        sc = gehan_scores(ta, da, tb, db)
        r = sign_flip_test(sc, n_resamples, seed)
        diff = ta - tb
        rows.append({group: g, 'reference': reference, 'n_pairs': len(m), 'n_later': int((sc > 0).sum()),
                     'n_earlier': int((sc < 0).sum()), 'n_undecided': int((sc == 0).sum()),
                     'n_both_censored': int((~da & ~db).sum()), 'median_step_diff': float(np.median(diff)),
                     'mean_step_diff': float(diff.mean()), 'statistic': r['statistic'], 'p': r['p'],
                     'p_later': r['p_greater'], 'exact': r['exact'],
                     'unpaired': int(len(sub) - len(m)) + int(len(ref) - len(m))})
    return pd.DataFrame(rows, columns=[group, 'reference', 'n_pairs', 'n_later', 'n_earlier', 'n_undecided',
                                       'n_both_censored', 'median_step_diff', 'mean_step_diff', 'statistic',
                                       'p', 'p_later', 'exact', 'unpaired'])


# ----------------------------------------------------------------------------- figure

def km_figure(km: pd.DataFrame, title: str, group: Optional[str] = None, ax=None):
    """Kaplan–Meier step curves of a `km_table`, with the CI bands and a tick at every censoring time."""
    import matplotlib.pyplot as plt
    if group is None:
        extra = [c for c in km.columns if c not in KM_COLUMNS]
        group = extra[0] if extra else None
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.5, 4))
    else:
        fig = ax.figure
    parts: Iterable = km.groupby(group, sort=False) if group is not None else [('', km)]
    for i, (g, k) in enumerate(parts):
        k = k.sort_values('step')
        x, y = k['step'].to_numpy(float), k['frac_surviving'].to_numpy(float)
        line, = ax.step(x, y, where='post', lw=1.6, ls=['-', '--', ':', '-.'][i % 4],
                        label=f"{g} (n={int(k['n_at_risk'].iloc[0])})" if group is not None else None)
        ax.fill_between(x, k['ci_lo'].to_numpy(float), k['ci_hi'].to_numpy(float), step='post',
                        color=line.get_color(), alpha=0.15, lw=0)
        cens = k[k['n_censored'] > 0]
        ax.plot(cens['step'], cens['frac_surviving'], '|', ms=9, mew=1.4, color=line.get_color())
    ax.set(xlabel='training step', ylabel='fraction of runs not yet diverged', ylim=(-0.03, 1.03))
    ax.set_title(title, fontsize=9)
    if group is not None:
        ax.legend(fontsize=7, loc='lower left')
    fig.tight_layout()
    return fig
