"""Table builders and run plans of notebooks 07-09: max stable LR (paper Table 5), language
modelling (Tables 7 and 8) and the ViT (Table 9).

* Table 5 (notebook 07) reads the recall runs of `rksp.experiments.maxlr_configs`:
  `maxlr_per_lr` (divergence per norm x KSS x LR, Wilson CI, Fisher p of with vs without KSS at
  each LR), `maxlr_table` (one row per norm: max stable LR without / with KSS under both readings
  of `rksp.stability.pick_max_stable_lr`, the increase, the paper's values) and `table5_claims`.
  A max stable LR equal to the top of the grid is only a lower bound ('≥ top of grid'); no stable
  LR at all is '< bottom of grid'. An increase is only computed from two measured values; its
  grid bracket (the range the true increase can take, given the grid) is its uncertainty.
* Tables 7-9 (notebooks 08, 09) train their own runs from `LM_PLANS` / `VIT_PLANS` (one plan per
  profile, like `rksp.experiments.PLANS`): every row is 'Baseline' (the plain harness, AdamW) or
  'KSS' (the METHODS row 'KSS α=0.15', the paper's recipe) over the plan's LRs x trial seeds
  (`rksp.stability.trial_seeds`), paired by (lr, seed). `kss_table` is `rksp.experiments.method_table`
  per group plus PPL; `table7`, `table8`, `table9` add the paper's columns; `lm_claims`,
  `vit_claims` build the claims (verdicts computed by `rksp.claims`).

Reading of "Div. of 24" (Tables 7-9; ours, the paper does not say how its 24 trials split): the
divergences of all runs of a row, pooled over the row's LRs and seeds, as for the recall LR band.
PPL / Acc. are means over the runs of the row that did not diverge; KSS vs Baseline effects are
paired by (lr, seed) (`paired_difference`).
"""
from __future__ import annotations

import copy
import re
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from . import defaults
from . import paper as P
from .claims import Claim
from .stabilizers import apply_method
from .stability import divergence_table, lr_increase, pick_max_stable_lr, trial_seeds
from .stats import fisher_exact, rate_difference, wilson

KSS_ROW = 'KSS α=0.15'            # the METHODS row the 'KSS' label trains
SCALE_ROWS = ('Baseline', 'KSS')  # the row labels of Tables 7-9 (not rksp.stabilizers.METHODS)
SCALE_REFERENCE = 'Baseline'      # their reference row (the recall tables' is stabilizers.REFERENCE)
BOUND_EXACT, BOUND_LOWER, BOUND_UPPER = '=', '≥ top of grid', '< bottom of grid'
PAPER_TABLE7_OVERHEAD = P.TABLE7_KSS_OVERHEAD   # (paper) Table 7's KSS overhead column

# ----------------------------------------------------------------------------- plans

_LM_COMMON = dict(model='gpt', optimizer='adamw', profile_at_end=True)

# Per profile: `common` TrainConfig fields, then one entry per table: task, norm, sizes
# (row label -> model_cfg), lrs x trials (seeds), `cfg` (further TrainConfig fields: data sizes, run length).
LM_PLANS: Dict[str, Dict[str, Any]] = {
    'smoke': dict(
        common=dict(schedule='constant', steps=12, warmup_steps=3, batch_size=8, profile_n_snapshots=256),
        table7=dict(task='synthetic_lm', norm='none', sizes={'d=32, L=2': dict(d_model=32, n_layer=2, n_head=2)},
                    lrs=(0.03,), trials=2,
                    cfg=dict(lm_mode='mixed', seq_len=32, vocab_size=64, n_train=128, n_val=32)),
        table8=dict(task='wikitext103', norm='pre_ln', sizes={'d=32, L=2': dict(d_model=32, n_layer=2, n_head=2)},
                    lrs=(3e-3, 3e-2), trials=1, cfg=dict(seq_len=32, vocab_size=1000, n_train=128, n_val=32)),
        n_boot=200),
    # CPU regime, timed single-threaded on the shared machine (notebook 08's title cell): one 100-step
    # run ~8 s (Baseline) / ~9 s (KSS) CPU; Table 7 uses No-Norm because a Pre-LN GPT of this size did not
    # reach the divergence label at any LR up to 0.1 (probed), and No-Norm diverges between 0.02 and 0.025.
    'small': dict(
        common=dict(schedule='constant', steps=100, warmup_steps=15, batch_size=16, profile_n_snapshots=1024),
        table7=dict(task='synthetic_lm', norm='none', sizes={'d=64, L=2': dict(d_model=64, n_layer=2, n_head=4)},
                    lrs=(0.02, 0.025), trials=6,
                    cfg=dict(lm_mode='mixed', seq_len=64, vocab_size=1000, n_train=2048, n_val=256)),
        table8=dict(task='wikitext103', norm='pre_ln', sizes={'d=64, L=2': dict(d_model=64, n_layer=2, n_head=4)},
                    lrs=(3e-3, 1e-2), trials=6, cfg=dict(seq_len=64, vocab_size=1000, n_val=128)),
        n_boot=1000),
    # METHOD.md §9: Table 7 350M d=1024 L=24, vocab 10K, seq 256, 20K/2K sequences, 24 trials (norm and LR
    # not stated: Pre-LN as in Table 8, LR 3e-4, 5 epochs, ours); Table 8 Pre-LN, three sizes, 10K steps,
    # 24 trials per configuration read as 8 LRs (spanning the paper's max LRs) x 3 seeds.
    'paper': dict(
        common=dict(schedule='cosine', warmup_steps=100, batch_size=32, profile_n_snapshots=2048),
        table7=dict(task='synthetic_lm', norm='pre_ln',
                    sizes={'Extra Large d=1024, L=24': dict(d_model=1024, n_layer=24, n_head=16)},
                    lrs=(3e-4,), trials=24,
                    cfg=dict(lm_mode='mixed', seq_len=256, vocab_size=10_000, n_train=20_000, n_val=2_000,
                             epochs=5)),
        table8=dict(task='wikitext103', norm='pre_ln',
                    sizes={'Small d=256, L=6': dict(d_model=256, n_layer=6, n_head=8),
                           'Medium d=512, L=12': dict(d_model=512, n_layer=12, n_head=8),
                           'Large d=768, L=12': dict(d_model=768, n_layer=12, n_head=12)},
                    lrs=(1e-4, 1.5e-4, 2e-4, 3e-4, 4e-4, 5e-4, 6e-4, 8e-4), trials=3,
                    cfg=dict(seq_len=256, vocab_size=10_000, n_val=2_000, steps=10_000)),
        n_boot=1000),
}

_VIT_COMMON = dict(task='cifar10', model='vit', optimizer='adamw', profile_at_end=True)

# Images are 32x32 (CIFAR-10, or the digits stand-in upsampled to 32x32): the loader has no 224 option,
# so `paper` uses ViT-Tiny (d=192, L=6, 3 heads) with patch 4 (64 patches) instead of 224 / patch 16.
VIT_PLANS: Dict[str, Dict[str, Any]] = {
    'smoke': dict(model_cfg=dict(d_model=32, n_layer=2, n_head=2, patch_size=8), norms=('pre_ln', 'rmsnorm'),
                  lrs=(1e-3,), trials=2,
                  cfg=dict(steps=10, warmup_steps=2, batch_size=16, n_train=128, n_val=64, profile_n_snapshots=256),
                  n_boot=200),
    'small': dict(model_cfg=dict(d_model=64, n_layer=2, n_head=4, patch_size=8), norms=('pre_ln', 'rmsnorm'),
                  lrs=(1e-3,), trials=6,
                  cfg=dict(epochs=4, warmup_steps=20, batch_size=32, schedule='cosine', profile_n_snapshots=1024),
                  n_boot=1000),
    'paper': dict(model_cfg=dict(d_model=192, n_layer=6, n_head=3, patch_size=4), norms=('pre_ln', 'rmsnorm'),
                  lrs=(1e-3,), trials=24,
                  cfg=dict(epochs=5, warmup_steps=100, batch_size=32, schedule='cosine', profile_n_snapshots=2048),
                  n_boot=1000),
}


def _plan(plans: Dict[str, Dict[str, Any]], profile: str) -> Dict[str, Any]:
    if profile not in plans:
        raise ValueError(f"unknown profile {profile!r} (valid: {', '.join(plans)})")
    return copy.deepcopy(plans[profile])


def lm_plan(profile: str) -> Dict[str, Any]:
    return _plan(LM_PLANS, profile)


def vit_plan(profile: str) -> Dict[str, Any]:
    return _plan(VIT_PLANS, profile)


def _with_method(cfg: Dict[str, Any], method: str) -> Dict[str, Any]:
    return apply_method(cfg, KSS_ROW, validate=False) if method == 'KSS' else cfg


def lm_configs(profile: str, table: str) -> List[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """[(labels, config)] of Table 7 ('table7', synthetic LM) or Table 8 ('table8', WikiText-103 or its
    labelled offline stand-in): size x (Baseline, KSS) x LR x trial seed. Labels: table, size, norm, method."""
    if table not in ('table7', 'table8'):
        raise ValueError(f"table must be 'table7' or 'table8', got {table!r}")
    p = lm_plan(profile)
    t = p[table]
    out = []
    for size, mc in t['sizes'].items():
        for m in SCALE_ROWS:
            for lr in t['lrs']:
                for s in trial_seeds(t['trials']):
                    cfg = {**_LM_COMMON, **p['common'], **t['cfg'], 'task': t['task'],
                           'model_cfg': {**mc, 'norm': t['norm']}, 'lr': lr, 'seed': s}
                    out.append(({'table': table, 'size': size, 'norm': t['norm'], 'method': m}, _with_method(cfg, m)))
    return out


def vit_configs(profile: str) -> List[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """[(labels, config)] of Table 9: norm x (Baseline, KSS) x LR x trial seed on task 'cifar10'
    (CIFAR-10, or offline the labelled sklearn-digits stand-in). Labels: norm, method."""
    p = vit_plan(profile)
    out = []
    for norm in p['norms']:
        for m in SCALE_ROWS:
            for lr in p['lrs']:
                for s in trial_seeds(p['trials']):
                    cfg = {**_VIT_COMMON, **p['cfg'], 'model_cfg': {**p['model_cfg'], 'norm': norm},
                           'lr': lr, 'seed': s}
                    out.append(({'norm': norm, 'method': m}, _with_method(cfg, m)))
    return out


# ----------------------------------------------------------------------------- helpers

def _ok(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows['status'] == 'ok'] if 'status' in rows else rows


def dedupe_runs(rows: pd.DataFrame, keys: Sequence[str] = ()) -> pd.DataFrame:
    """Drop repeated (keys, hash) rows: one config listed twice under the same labels (e.g. the No-Norm
    LR band and the normalization sweep share LR 0.01 x their common seeds) is one trial, not two."""
    if 'hash' not in rows:
        return rows
    return rows.drop_duplicates(subset=[*keys, 'hash']).reset_index(drop=True)


def _diverged(g: pd.DataFrame) -> pd.Series:
    return g['diverged'].fillna(False).astype(bool)


def _fmt_lr(x: float) -> str:
    return f"{float(x):g}"


def _n_per_lr(table: pd.DataFrame) -> str:
    return ', '.join(f"{_fmt_lr(lr)}: {int(nd)}/{int(n)}" for lr, n, nd in
                     zip(table['lr'], table['n'], table['n_diverged']))


def _bound(value: Optional[float], lrs: Sequence[float]) -> str:
    if value is None:
        return BOUND_UPPER
    return BOUND_LOWER if float(value) >= max(lrs) else BOUND_EXACT


def _next_lr(value: float, lrs: Sequence[float]) -> float:
    above = [x for x in sorted(lrs) if x > value]
    return above[0] if above else float('inf')


def increase_bracket(without: Optional[float], with_: Optional[float], lrs_without: Sequence[float],
                     lrs_with: Optional[Sequence[float]] = None) -> Dict[str, Any]:
    """Increase of the max stable LR in % (Table 5 "Increase", `lr_increase`) and its grid bracket.

    The true max stable LR lies in [v, next grid LR above v): so the true increase lies in
    (100 (w / next(u) - 1), 100 (next(w) / u - 1)) for u = without, w = with. `reading`:
    'exact' (both measured), 'lower bound' (without measured, with ≥ top of grid: the increase is
    at least `increase_pct`), 'undetermined' (without ≥ top of grid, or no stable LR on a side).
    The increase is NaN unless 'exact' (a bound is never reported as a value)."""
    lrs_with = lrs_without if lrs_with is None else lrs_with
    bw, bk = _bound(without, lrs_without), _bound(with_, lrs_with)
    nan = float('nan')
    if bw == BOUND_EXACT and bk == BOUND_EXACT:
        inc = lr_increase(without, with_)
        lo = 100.0 * (float(with_) / _next_lr(without, lrs_without) - 1.0)
        hi = 100.0 * (_next_lr(with_, lrs_with) / float(without) - 1.0)
        return dict(increase_pct=inc, bracket_lo=lo, bracket_hi=hi, reading='exact', at_least=nan)
    if bw == BOUND_EXACT and bk == BOUND_LOWER:
        return dict(increase_pct=nan, bracket_lo=nan, bracket_hi=nan, reading='lower bound',
                    at_least=lr_increase(without, with_))
    return dict(increase_pct=nan, bracket_lo=nan, bracket_hi=nan, reading='undetermined', at_least=nan)


def max_lr_summary(runs: pd.DataFrame, threshold: float = defaults.MAX_LR_DIVERGENCE) -> Dict[str, Any]:
    """Max stable LR of one group of runs (columns lr, diverged[, status]) under both readings of
    `pick_max_stable_lr`, whether each is a bound of the grid, and the per-LR counts."""
    t = divergence_table(runs, threshold)
    lrs = [float(x) for x in t['lr']]
    max_lr, contiguous = pick_max_stable_lr(t)
    return dict(table=t, lrs=lrs, max_lr=max_lr, max_lr_contiguous=contiguous,
                bound=_bound(max_lr, lrs) if lrs else BOUND_UPPER,
                bound_contiguous=_bound(contiguous, lrs) if lrs else BOUND_UPPER,
                any_diverged=bool(t['n_diverged'].sum() > 0), n_per_lr=_n_per_lr(t))


def _bound_note(label: str, s: Dict[str, Any]) -> str:
    if not s['lrs']:
        return f"{label}: no runs"
    if s['bound'] == BOUND_LOWER:
        why = "no LR of the grid diverged" if not s['any_diverged'] else "the top LR of the grid is stable"
        return f"{label}: {why}, max stable LR ≥ {_fmt_lr(max(s['lrs']))} (top of grid; a lower bound)"
    if s['bound'] == BOUND_UPPER:
        return f"{label}: no LR of the grid is stable, max stable LR < {_fmt_lr(min(s['lrs']))}"
    return ''


def _slug(s: str) -> str:
    return re.sub(r'[^A-Za-z0-9]+', '_', str(s)).strip('_')


def _num(x: Optional[float]) -> float:
    return float('nan') if x is None else float(x)


# ----------------------------------------------------------------------------- Table 5

def maxlr_per_lr(rows: pd.DataFrame, threshold: float = defaults.MAX_LR_DIVERGENCE) -> pd.DataFrame:
    """Table 5's evidence: one row per (norm, kss, lr) with n, divergences, rate (%) and its Wilson 95%
    CI, stable (< threshold), and on the KSS rows the Fisher p of with vs without KSS at that LR."""
    rows = dedupe_runs(_ok(rows), ['norm', 'kss'])
    out = []
    for norm in dict.fromkeys(rows['norm']):
        by_kss = {}
        for kss in (False, True):
            g = rows[(rows['norm'] == norm) & (rows['kss'].astype(bool) == kss)]
            if len(g):
                by_kss[kss] = divergence_table(g, threshold).set_index('lr')
        for kss, t in by_kss.items():
            for lr, r in t.iterrows():
                n, k = int(r['n']), int(r['n_diverged'])
                lo, hi = wilson(k, n) if n else (float('nan'), float('nan'))
                p = float('nan')
                if kss and False in by_kss and lr in by_kss[False].index:
                    b = by_kss[False].loc[lr]
                    p = fisher_exact(k, n, int(b['n_diverged']), int(b['n']))['p']
                out.append({'norm': norm, 'kss': kss, 'lr': float(lr), 'n': n, 'n_div': k,
                            'div_pct': 100.0 * k / n if n else float('nan'),
                            'div_ci_lo': 100.0 * lo, 'div_ci_hi': 100.0 * hi, 'stable': bool(r['stable']),
                            'fisher_p_vs_without_kss': p})
    return pd.DataFrame(out, columns=['norm', 'kss', 'lr', 'n', 'n_div', 'div_pct', 'div_ci_lo', 'div_ci_hi',
                                      'stable', 'fisher_p_vs_without_kss'])


def maxlr_table(rows: pd.DataFrame, norms: Optional[Sequence[str]] = None,
                threshold: float = defaults.MAX_LR_DIVERGENCE, norm_names: Optional[Dict[str, str]] = None,
                paper: Optional[Dict[str, Tuple[float, float, float]]] = None) -> pd.DataFrame:
    """Table 5: one row per norm. Max stable LR without / with KSS (< `threshold` divergence, largest
    stable LR of the grid) with its bound ('=', '≥ top of grid', '< bottom of grid'), the increase (%)
    only where both are measured, its grid bracket, the same under the contiguous reading, divergences
    per LR ('lr: k/n'), the paper's values (rksp.paper.TABLE5), a note and the data used."""
    from .experiments import NORM_NAMES, data_used
    names = NORM_NAMES if norm_names is None else norm_names
    paper = P.TABLE5 if paper is None else paper
    rows = dedupe_runs(_ok(rows), ['norm', 'kss'])
    norms = list(dict.fromkeys(rows['norm'])) if norms is None else list(norms)
    out = []
    for norm in norms:
        g = rows[rows['norm'] == norm]
        s = {kss: max_lr_summary(g[g['kss'].astype(bool) == kss], threshold) for kss in (False, True)}
        s0, s1 = s[False], s[True]
        both = bool(s0['lrs'] and s1['lrs'])
        inc = increase_bracket(s0['max_lr'], s1['max_lr'], s0['lrs'], s1['lrs']) if both \
            else increase_bracket(None, None, [1.0])
        incc = increase_bracket(s0['max_lr_contiguous'], s1['max_lr_contiguous'], s0['lrs'], s1['lrs']) if both \
            else increase_bracket(None, None, [1.0])
        notes = [x for x in (_bound_note('without KSS', s0), _bound_note('with KSS', s1)) if x]
        if inc['reading'] == 'lower bound':
            notes.append(f"increase ≥ {inc['at_least']:+.0f}% (a lower bound)")
        elif inc['reading'] == 'undetermined':
            notes.append("increase not measurable on this grid")
        pw, pk, pi = paper.get(norm, (float('nan'),) * 3)
        out.append({
            'norm': names.get(norm, norm), 'norm_key': norm,
            'div_per_lr_without': s0['n_per_lr'], 'div_per_lr_with': s1['n_per_lr'],
            'max_lr_without': _num(s0['max_lr']), 'bound_without': s0['bound'],
            'max_lr_with': _num(s1['max_lr']), 'bound_with': s1['bound'],
            'increase_pct': inc['increase_pct'], 'increase_reading': inc['reading'],
            'increase_at_least_pct': inc['at_least'],
            'increase_bracket_lo': inc['bracket_lo'], 'increase_bracket_hi': inc['bracket_hi'],
            'max_lr_contig_without': _num(s0['max_lr_contiguous']), 'bound_contig_without': s0['bound_contiguous'],
            'max_lr_contig_with': _num(s1['max_lr_contiguous']), 'bound_contig_with': s1['bound_contiguous'],
            'increase_contig_pct': incc['increase_pct'], 'increase_contig_reading': incc['reading'],
            'paper_max_lr_without': pw, 'paper_max_lr_with': pk, 'paper_increase_pct': pi,
            'note': '; '.join(notes), 'data': data_used(g),
        })
    return pd.DataFrame(out)


def table5_claims(t5: pd.DataFrame, paper_range: Tuple[float, float] = (50.0, 150.0),
                  max_width: float = 100.0) -> List[Claim]:
    """Per norm: "KSS raises the max stable LR by 50-150%" (paper text; Table 5: +60 / +67 / +150%).
    Rule `Claim.interval` on our increase with its grid bracket as the interval: reproduced when the
    bracket overlaps the paper's range and is at most `max_width` percentage points wide; not
    reproduced when it misses the range; inconclusive otherwise, and whenever a max LR is only a
    bound of the grid (the increase is then NaN)."""
    out = []
    for _, r in t5.iterrows():
        ours = r['increase_pct']
        ci = (r['increase_bracket_lo'], r['increase_bracket_hi']) if np.isfinite(ours) else None
        note = (f"paper {r['norm']}: {r['paper_increase_pct']:+.0f}%; ours: reading {r['increase_reading']}"
                + (f", ≥ {r['increase_at_least_pct']:+.0f}%" if r['increase_reading'] == 'lower bound' else '')
                + f"; contiguous reading {r['increase_contig_reading']} ({r['increase_contig_pct']:+.0f}%)"
                + (f"; {r['note']}" if r['note'] else ''))
        out.append(Claim.interval(f"T5.lr_increase.{r['norm_key']}",
                                  f"{r['norm']}: KSS raises the max stable LR by 50–150% (Table 5)",
                                  paper_range, ours, ci, notes=note, rel_tol=0.0, max_width=max_width))
    return out


# ----------------------------------------------------------------------------- Tables 7-9

def paired_difference(rows: pd.DataFrame, value: str, a: str = 'KSS', b: str = SCALE_REFERENCE,
                      group: str = 'method', pair_on: Sequence[str] = ('lr', 'seed'), n_boot: int = 1000,
                      seed: int = 0, scale: float = 1.0, alpha: float = 0.05) -> Dict[str, Any]:
    """Effect of `a` vs `b` on `value` over the runs that did not diverge (finite value):
    delta = mean(a) - mean(b) (x `scale`) and rel_pct = 100 (mean(a) / mean(b) - 1), each with a
    percentile bootstrap CI (`n_boot` resamples). Paired by `pair_on` when at least 2 pairs have
    both runs converged (pairs resampled); else unpaired (each group resampled) when each side has
    >= 2 runs; else NaN CIs. Returns dict(delta, lo, hi, rel_pct, rel_lo, rel_hi, n_a, n_b, n_pairs,
    pairing, mean_a, mean_b)."""
    nan = float('nan')
    ok = _ok(rows)
    ok = ok[~_diverged(ok)]
    v = pd.to_numeric(ok[value], errors='coerce')
    ok = ok.assign(_v=v)[np.isfinite(v)]
    ga, gb = ok[ok[group] == a], ok[ok[group] == b]
    keys = list(pair_on)
    pairs = ga[keys + ['_v']].merge(gb[keys + ['_v']], on=keys, suffixes=('_a', '_b')) if keys else pd.DataFrame()
    rng = np.random.default_rng(seed)
    q = (100 * alpha / 2, 100 * (1 - alpha / 2))
    res = dict(n_a=len(ga), n_b=len(gb), n_pairs=len(pairs))
    if len(pairs) >= 2:
        xa, xb = pairs['_v_a'].to_numpy(float), pairs['_v_b'].to_numpy(float)
        idx = rng.integers(0, len(xa), size=(n_boot, len(xa)))
        ba, bb = xa[idx].mean(1), xb[idx].mean(1)
        pairing = 'paired'
    elif len(ga) >= 2 and len(gb) >= 2:
        xa, xb = ga['_v'].to_numpy(float), gb['_v'].to_numpy(float)
        ba = xa[rng.integers(0, len(xa), size=(n_boot, len(xa)))].mean(1)
        bb = xb[rng.integers(0, len(xb), size=(n_boot, len(xb)))].mean(1)
        pairing = 'unpaired'
    else:
        xa, xb = ga['_v'].to_numpy(float), gb['_v'].to_numpy(float)
        ma, mb = (float(xa.mean()) if len(xa) else nan), (float(xb.mean()) if len(xb) else nan)
        rel = 100.0 * (ma / mb - 1.0) if (len(xa) and len(xb) and mb != 0) else nan
        return dict(res, delta=scale * (ma - mb), lo=nan, hi=nan, rel_pct=rel, rel_lo=nan, rel_hi=nan,
                    pairing='too few runs', mean_a=ma, mean_b=mb)
    ma, mb = float(xa.mean()), float(xb.mean())
    d = scale * (ba - bb)
    with np.errstate(divide='ignore', invalid='ignore'):
        r = 100.0 * (ba / bb - 1.0)
    r = r[np.isfinite(r)]
    lo, hi = np.percentile(d, q)
    rlo, rhi = np.percentile(r, q) if len(r) else (nan, nan)
    return dict(res, delta=scale * (ma - mb), lo=float(lo), hi=float(hi),
                rel_pct=100.0 * (ma / mb - 1.0) if mb != 0 else nan, rel_lo=float(rlo), rel_hi=float(rhi),
                pairing=pairing, mean_a=ma, mean_b=mb)


def divergence_effect(rows: pd.DataFrame, a: str = 'KSS', b: str = SCALE_REFERENCE, group: str = 'method') -> Dict[str, Any]:
    """KSS vs Baseline divergence: rate difference a - b in percentage points with Newcombe's 95% CI
    and the two-sided Fisher p (`rksp.stats.rate_difference`), plus the counts."""
    ok = _ok(rows)
    ga, gb = ok[ok[group] == a], ok[ok[group] == b]
    ka, kb = int(_diverged(ga).sum()), int(_diverged(gb).sum())
    r = rate_difference(ka, len(ga), kb, len(gb))
    return dict(delta_pp=100.0 * r['delta'], lo_pp=100.0 * r['lo'], hi_pp=100.0 * r['hi'], p=r['p'],
                k_a=ka, n_a=len(ga), k_b=kb, n_b=len(gb))


def kss_table(rows: pd.DataFrame, by: Sequence[str], methods: Sequence[str] = SCALE_ROWS,
              reference: str = SCALE_REFERENCE) -> pd.DataFrame:
    """`rksp.experiments.method_table` per group of `by` (Baseline vs KSS within each group: n, Div.
    k/n and %, Wilson CI, Fisher p vs Baseline, acc of converged runs, M≈1 at init and after
    training, per-step overhead), plus the group columns, LRs, parameters and PPL of the converged
    runs (mean, sd, n). The method_table's recall paper columns are dropped (the callers add theirs)."""
    from .experiments import method_table
    rows = _ok(rows)
    out = []
    groups = rows.groupby(list(by), sort=False, dropna=False) if by else [((), rows)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        t = method_table(g, methods, reference=reference, paper_rows={})
        t = t.drop(columns=[c for c in t.columns if c.startswith('paper_')])
        extra = []
        for m in methods:
            gm = g[g['method'] == m]
            conv = gm[~_diverged(gm)]
            ppl = pd.to_numeric(conv.get('val_ppl', pd.Series(dtype=float)), errors='coerce')
            ppl = ppl[np.isfinite(ppl)]
            acc = pd.to_numeric(conv.get('val_acc', pd.Series(dtype=float)), errors='coerce').dropna()
            params = pd.to_numeric(gm.get('n_params', pd.Series(dtype=float)), errors='coerce').dropna()
            extra.append({'lrs': ', '.join(_fmt_lr(x) for x in sorted(set(gm['lr']))) if 'lr' in gm else '',
                          'n_params': int(params.median()) if len(params) else np.nan,
                          'n_converged': int(len(conv)),
                          'acc_sd': 100.0 * float(acc.std(ddof=1)) if len(acc) > 1 else np.nan,
                          'ppl_mean': float(ppl.mean()) if len(ppl) else np.nan,
                          'ppl_sd': float(ppl.std(ddof=1)) if len(ppl) > 1 else np.nan,
                          'ppl_n': int(len(ppl))})
        t = pd.concat([t, pd.DataFrame(extra)], axis=1)
        for col, val in reversed(list(zip(by, key))):
            t.insert(0, col, val)
        out.append(t)
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def _div_of(k: int, n: int = 24) -> float:
    return 100.0 * k / n


def table7(rows: pd.DataFrame, paper: Optional[Dict[str, Tuple[int, float]]] = None) -> pd.DataFrame:
    """Table 7 (synthetic-LM scale-up): per size, Baseline vs KSS: Div. k/n (pooled over the row's LRs
    and seeds) with Fisher p, PPL of converged runs, overhead; paper columns from rksp.paper.TABLE7
    (the paper's single 350M row is put beside every size of ours)."""
    paper = P.TABLE7 if paper is None else paper
    t = kss_table(rows, ['size', 'norm'])
    t['paper_model'] = 'Extra Large d=1024, L=24 (350M)'
    t['paper_div_of_24'] = [paper.get(m, (np.nan, np.nan))[0] for m in t['method']]
    t['paper_div_pct'] = [_div_of(k) if np.isfinite(k) else np.nan for k in t['paper_div_of_24']]
    t['paper_ppl'] = [paper.get(m, (np.nan, np.nan))[1] for m in t['method']]
    t['paper_overhead'] = [PAPER_TABLE7_OVERHEAD if m == 'KSS' else '' for m in t['method']]
    return _data_last(t)


def max_lr_by_group(rows: pd.DataFrame, by: Sequence[str], threshold: float = defaults.MAX_LR_DIVERGENCE) -> pd.DataFrame:
    """Max stable LR (both readings, with its bound) of each group of `by` (e.g. size, method)."""
    out = []
    for key, g in _ok(rows).groupby(list(by), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        s = max_lr_summary(g, threshold)
        out.append({**dict(zip(by, key)), 'max_lr': _num(s['max_lr']), 'max_lr_bound': s['bound'],
                    'max_lr_contig': _num(s['max_lr_contiguous']), 'max_lr_contig_bound': s['bound_contiguous'],
                    'div_per_lr': s['n_per_lr'], 'max_lr_note': _bound_note('', s).lstrip(': '), 'grid': s['lrs']})
    return pd.DataFrame(out)


def table8(rows: pd.DataFrame, paper: Optional[Dict[Tuple[str, str], Tuple[int, float, float]]] = None) -> pd.DataFrame:
    """Table 8 (Pre-LN LM on WikiText-103, or its labelled offline stand-in): per size, Baseline vs KSS:
    Div. k/n pooled over the LR set with Fisher p, PPL of converged runs, max stable LR over the LR set
    (< 20% divergence; '≥ top of grid' when the top LR is stable) and the increase where both are
    measured; paper columns (rksp.paper.TABLE8) on the paper's sizes, matched by position."""
    paper = P.TABLE8 if paper is None else paper
    t = kss_table(rows, ['size', 'norm'])
    mx = max_lr_by_group(rows, ['size', 'method'])
    t = t.merge(mx.drop(columns=['grid']), on=['size', 'method'], how='left')
    inc = []
    for size, g in mx.groupby('size', sort=False):
        d = {r['method']: r for _, r in g.iterrows()}
        if SCALE_REFERENCE in d and 'KSS' in d:
            b, k = d[SCALE_REFERENCE], d['KSS']
            ib = increase_bracket(None if np.isnan(b['max_lr']) else b['max_lr'],
                                  None if np.isnan(k['max_lr']) else k['max_lr'], b['grid'], k['grid'])
            inc.append({'size': size, 'max_lr_increase_pct': ib['increase_pct'],
                        'max_lr_increase_reading': ib['reading'], 'max_lr_increase_bracket_lo': ib['bracket_lo'],
                        'max_lr_increase_bracket_hi': ib['bracket_hi']})
    if inc:
        t = t.merge(pd.DataFrame(inc), on='size', how='left')
    paper_sizes = list(dict.fromkeys(s for s, _ in paper))
    ours_sizes = list(dict.fromkeys(t['size']))
    match = {s: (paper_sizes[i] if i < len(paper_sizes) else None) for i, s in enumerate(ours_sizes)}
    t['paper_model'] = [match[s] or '' for s in t['size']]
    vals = [paper.get((match[s], m)) if match[s] else None for s, m in zip(t['size'], t['method'])]
    t['paper_div_of_24'] = [v[0] if v else np.nan for v in vals]
    t['paper_ppl'] = [v[1] if v else np.nan for v in vals]
    t['paper_max_lr'] = [v[2] if v else np.nan for v in vals]
    t['note'] = [('max LR: ' + n) if isinstance(n, str) and n else '' for n in t['max_lr_note']]
    t = t.drop(columns=['max_lr_note'])
    return _data_last(t)


def table9(rows: pd.DataFrame, paper: Optional[Dict[Tuple[str, str], Tuple[int, float, float]]] = None) -> pd.DataFrame:
    """Table 9 (ViT on CIFAR-10, or its labelled offline stand-in): per norm, Baseline vs KSS: Div. k/n
    with Fisher p, accuracy of converged runs (mean, sd), M≈1 at init and after training; paper columns
    from rksp.paper.TABLE9."""
    from .experiments import NORM_NAMES
    paper = P.TABLE9 if paper is None else paper
    t = kss_table(rows, ['norm']).drop(columns=['ppl_mean', 'ppl_sd', 'ppl_n'])
    vals = [paper.get((n, m)) for n, m in zip(t['norm'], t['method'])]
    t.insert(1, 'norm_name', [NORM_NAMES.get(n, n) for n in t['norm']])
    t['paper_div_of_24'] = [v[0] if v else np.nan for v in vals]
    t['paper_acc_pct'] = [v[1] if v else np.nan for v in vals]
    t['paper_m_near_unit'] = [v[2] if v else np.nan for v in vals]
    t['note'] = ['no run of this row diverged' if n_div == 0 else '' for n_div in t['n_div']]
    return _data_last(t)


def _data_last(t: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in t.columns if c != 'data'] + (['data'] if 'data' in t else [])
    return t[cols]


# ----------------------------------------------------------------------------- claims

def _paper_div_delta(pairs: Iterable[Tuple[int, int]], n: int = 24) -> float:
    """Paper's pooled divergence difference KSS - Baseline in percentage points from (k_base, k_kss) pairs."""
    pairs = list(pairs)
    kb = sum(b for b, _ in pairs)
    kk = sum(k for _, k in pairs)
    return 100.0 * (kk - kb) / (n * len(pairs)) if pairs else float('nan')


def div_claim(id: str, description: str, rows: pd.DataFrame, paper_value: Any, notes: str = '') -> Claim:
    """Direction claim: KSS lowers the divergence rate (delta KSS - Baseline in pp < 0), Newcombe CI
    and Fisher p; inconclusive when neither side diverged (delta 0) or not significant."""
    from .claims import counts_direction_claim
    e = divergence_effect(rows)
    n = f"KSS {e['k_a']}/{e['n_a']}, Baseline {e['k_b']}/{e['n_b']}, Fisher p {e['p']:.3g}"
    return counts_direction_claim(id, description, paper_value, e['k_a'], e['n_a'], e['k_b'], e['n_b'],
                                  expected_sign=-1, notes='; '.join(x for x in (n, notes) if x))


def lm_claims(rows7: pd.DataFrame, rows8: pd.DataFrame, t8: Optional[pd.DataFrame] = None,
              n_boot: int = 1000) -> List[Claim]:
    """Claims of Tables 7 and 8: KSS lowers divergence (Fisher), KSS lowers PPL (relative difference of
    the mean PPL of converged runs paired by (size, lr, seed), bootstrap CI; paper 5-15% lower), and
    the max LR is 1.5-2x higher (only where both max LRs are measured on the grid)."""
    out = []
    p7 = P.TABLE7
    out.append(div_claim('T7.div', 'Synthetic LM (Table 7): KSS lowers the divergence rate (pp, KSS - Baseline)',
                         rows7, _paper_div_delta([(p7['Baseline'][0], p7['KSS'][0])])))
    d7 = paired_difference(rows7, 'val_ppl', pair_on=('size', 'lr', 'seed'), n_boot=n_boot)
    out.append(Claim.direction(
        'T7.ppl', 'Synthetic LM (Table 7): KSS lowers PPL (% change of mean PPL, converged runs)',
        round(100.0 * (p7['KSS'][1] / p7['Baseline'][1] - 1.0), 1), d7['rel_pct'], (d7['rel_lo'], d7['rel_hi']),
        notes=f"{d7['pairing']}, {d7['n_pairs']} pairs; mean PPL KSS {d7['mean_a']:.4g} vs Baseline {d7['mean_b']:.4g}",
        expected_sign=-1))
    p8 = P.TABLE8
    sizes = list(dict.fromkeys(s for s, _ in p8))
    out.append(div_claim('T8.div', 'LM (Table 8): KSS lowers the divergence rate (pp, KSS - Baseline)', rows8,
                         round(_paper_div_delta([(p8[(s, 'Baseline')][0], p8[(s, 'KSS')][0]) for s in sizes]), 2)))
    d8 = paired_difference(rows8, 'val_ppl', pair_on=('size', 'lr', 'seed'), n_boot=n_boot)
    out.append(Claim.direction(
        'T8.ppl', 'LM (Table 8): KSS lowers PPL by 5–15% (% change of mean PPL, converged runs)', (-15.0, -5.0),
        d8['rel_pct'], (d8['rel_lo'], d8['rel_hi']),
        notes=f"{d8['pairing']}, {d8['n_pairs']} pairs; mean PPL KSS {d8['mean_a']:.4g} vs Baseline {d8['mean_b']:.4g}",
        expected_sign=-1))
    if t8 is not None and 'max_lr_increase_pct' in t8:
        first = t8.drop_duplicates('size')
        for _, r in first.iterrows():
            ours = r['max_lr_increase_pct']
            ci = (r['max_lr_increase_bracket_lo'], r['max_lr_increase_bracket_hi']) if np.isfinite(ours) else None
            b = t8[(t8['size'] == r['size']) & (t8['method'] == SCALE_REFERENCE)].iloc[0]
            k = t8[(t8['size'] == r['size']) & (t8['method'] == 'KSS')].iloc[0]
            note = (f"reading {r['max_lr_increase_reading']}; Baseline {b['max_lr_bound']} {b['max_lr']:g}, "
                    f"KSS {k['max_lr_bound']} {k['max_lr']:g}")
            out.append(Claim.interval(f"T8.max_lr.{_slug(r['size'])}",
                                      f"LM (Table 8, {r['size']}): KSS allows a 1.5–2× higher max LR (% increase)",
                                      (50.0, 100.0), ours, ci, notes=note, rel_tol=0.0, max_width=100.0))
    return out


def vit_claims(rows: pd.DataFrame, n_boot: int = 1000) -> List[Claim]:
    """Claims of Table 9: per norm, KSS raises accuracy (pp, paired by (lr, seed), bootstrap CI; paper
    +3-5%); pooled over norms, KSS lowers the divergence rate (Fisher)."""
    from .experiments import NORM_NAMES
    out = []
    p9 = P.TABLE9
    for norm in dict.fromkeys(rows['norm']):
        g = rows[rows['norm'] == norm]
        d = paired_difference(g, 'val_acc', pair_on=('lr', 'seed'), n_boot=n_boot, scale=100.0)
        pv = (round(p9[(norm, 'KSS')][1] - p9[(norm, 'Baseline')][1], 2)
              if (norm, 'KSS') in p9 and (norm, 'Baseline') in p9 else float('nan'))
        out.append(Claim.direction(
            f"T9.acc.{norm}", f"ViT {NORM_NAMES.get(norm, norm)} (Table 9): KSS raises accuracy (pp; paper +3–5%)",
            pv, d['delta'], (d['lo'], d['hi']),
            notes=f"{d['pairing']}, {d['n_pairs']} pairs; acc KSS {d['mean_a']:.4g} vs Baseline {d['mean_b']:.4g}",
            expected_sign=+1))
    norms = [n for n in dict.fromkeys(rows['norm']) if (n, 'KSS') in p9]
    out.append(div_claim('T9.div', 'ViT (Table 9): KSS lowers the divergence rate (pp, pooled over norms)', rows,
                         round(_paper_div_delta([(p9[(n, 'Baseline')][0], p9[(n, 'KSS')][0]) for n in norms]), 2)))
    return out
