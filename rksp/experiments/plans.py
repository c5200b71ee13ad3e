"""What each profile runs: one place for sizes, seeds and LRs of every plan (recall, LM, ViT, architectures).

Every notebook takes `profile` in ('smoke', 'small', 'paper') and asks this module for its
configs, so the same run (same config hash) is trained once and reused by every table that needs
it: all associative-recall runs of a profile live in ``results/<profile>/runs/recall``.

* ``smoke``: tiny models and a few steps, so every notebook runs end to end in CI.
* ``small``: the paper's stated recipe (docs/regime.md Part 5, issue 21) on the CPU-sized model chosen
  by the rules of docs/regime.md (No-Norm GPT d=64, L=4, plain N(0, 0.04) init (d·σ² of d=256 at
  σ=0.02)): 5 epochs of the 8,192 training sequences at batch 32 (1,280 steps), 100 linear warmup
  steps then cosine decay to 0, the paper's LR band 0.005-0.01. The three rows of the headline claims
  (No control, Grad clip 1.0, KSS α=0.15) get 24 trials (3 LRs x 8 seeds); notebook 13's dose x
  frequency rows get 12 (3 LRs x 4 seeds) and its practice rows (QK-LayerNorm, z-loss 1e-4) 24; every
  other method row gets 3 (3 LRs x seed 42: the first cut of Part 5's rule). The normalization sweep is 6 norms x 4 LRs x 4 seeds (16 per
  norm; No-Norm 36 with the band runs, 116 pooled runs). Table 5 has 4 seeds per LR on the sweep's
  LRs, then the bracket rule (`maxlr_refine`; `runs.maxlr_runs`, `stability.next_bracket_lr`) adds
  LRs with 4 seeds each until every arm's bracket is within 1.25x. The KSS gradient-path ablation has
  24 on the default path (the KSS α=0.15 row) and 12 on each other path. 421 distinct recall runs
  before the bracket rule's (`all_recall_configs`), 497 with them. Before issue 21: 200 steps, 50 warmup steps then
  a constant LR, 6 seeds per norm and LR, 2 per Table 5 LR (docs/regime.md Part 3); before issue 14:
  d=64, L=2, GPT-2 init, 20 warmup steps (docs/small-regime.md). Tables print n beside every rate.
* ``paper``: METHOD.md §8 as far as it is stated (24 trials per method, seeds 42/123/456 then
  1003..., d=256, L=6, 5 epochs with 100 warmup steps); meant for GPUs / Dask clusters. Init: plain
  N(0, 0.02) on every Linear and Embedding (``defaults.PAPER_INIT``; its profile at init is
  the closest to Table 1, docs/regime.md), device ``'auto'`` (CUDA when available; the record's
  ``device`` says which).

The LM (Tables 7, 8) and ViT (Table 9) plans are `LM_PLANS` / `VIT_PLANS`: every row is 'Baseline'
(the plain harness, AdamW) or 'KSS' (the method row 'kss_0.15', 'KSS α=0.15') over the plan's LRs x trial seeds,
paired by (lr, seed). The cross-architecture plans (Tables 11, 16-18) are `ARCHITECTURES` /
`APPENDIX_ROWS`. Running them is `rksp.experiments.runs`; tables are `rksp.experiments.tables`.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from rksp import defaults
from rksp.experiments.results_io import PROFILES
from rksp.experiments.stability import trial_seeds
from rksp.harness.config import TrainConfig
from rksp.methods.rows import REFERENCE, TABLES, apply_method, canonical_method, display, method_row, table_displays
from rksp.models.gpt import NORM_NAMES, NORMS  # noqa: F401 (one place for the norms; E.NORM_NAMES)


MAIN_METHODS = ('no_control', 'clip_1.0', 'kss_0.15')   # the rows of the headline claims (ids)

KSS_PATH_METHOD = display('kss_0.15')

DEFAULT_KSS_PATH = 'pod (default)'

# name -> KSSConfig overrides of the KSS α=0.15 row (rksp.core.kss module docstring, README choices)
KSS_PATHS: Dict[str, Dict[str, Any]] = {
    DEFAULT_KSS_PATH: {'projection': 'pod'},
    'whitened (old order)': {'projection': 'whitened'},
    'pod, W differentiated': {'projection': 'pod', 'detach_whitening': False},
    'whitened, W differentiated': {'projection': 'whitened', 'detach_whitening': False},
    'pod, bound 1x task grad': {'projection': 'pod', 'grad_bound': 1.0},
    'whitened, bound 1x task grad': {'projection': 'whitened', 'grad_bound': 1.0},
}

# the paths the plans run: the default, the old order, differentiating W where it matters and the
# bound. 'pod, W differentiated' is left out: under 'pod' the rank-r eigenvalues do not depend on W
# (A_r = W_r (P_y P_x^+) W_r^-1), so its gradient equals the default's (tests/test_dmd.py
# test_pod_gradient_does_not_depend_on_detaching_the_whitening_the_old_order_does); every path stays
# available by name (kss_path_configs(profile, paths=[...]))
SMALL_KSS_PATHS = (DEFAULT_KSS_PATH, 'whitened (old order)', 'whitened, W differentiated', 'pod, bound 1x task grad')

# the init docs/regime.md chose for the `small` GPTs (the d·σ² proxy of d=256 at σ=0.02): every GPT of the
# small profile uses it, in the recall tables and in Tables 7 and 11 (issue 20: those used the GPT-2 init)
SMALL_GPT_INIT = dict(init='normal', init_std=0.04)

_RECALL_COMMON = dict(task='recall', model='gpt', optimizer='adamw', schedule='constant', profile_at_end=True)

PLANS: Dict[str, Dict[str, Any]] = {
    'smoke': dict(
        recall=dict(model_cfg=dict(d_model=32, n_layer=2, n_head=2), steps=30, warmup_steps=5, batch_size=8,
                    n_train=256, n_val=64, profile_n_snapshots=256),
        band_lrs=(0.01, 0.05), main_trials=2, other_trials=1,
        norm_lrs=(1e-3, 5e-2), norm_trials=1, maxlr_norms=('pre_ln', 'none'),
        kss_paths=SMALL_KSS_PATHS, kss_path_trials=(1, 1), n_boot=200),
    # the paper's stated recipe (docs/regime.md Part 5, issue 21): 5 epochs of the 8,192 training sequences at
    # batch 32 (1,280 steps), 100 warmup steps then cosine, on the model docs/regime.md chose (the d·σ² proxy,
    # candidate C6). Before issue 21: 200 steps, 50 warmup steps then constant (0.8 epoch; docs/regime.md Part 3)
    'small': dict(
        recall=dict(model_cfg=dict(d_model=64, n_layer=4, n_head=4, **SMALL_GPT_INIT), epochs=5,
                    warmup_steps=100, schedule='cosine', batch_size=32, n_train=8192, n_val=512,
                    profile_n_snapshots=2048),
        # other_trials=1: the first cut of Part 5's rule (row 6 to 3 LRs x seed 42; docs/regime.md Part 6)
        band_lrs=(0.005, 0.007, 0.01), main_trials=8, other_trials=1, dose_trials=4, practice_trials=8,
        norm_lrs=(1e-3, 3e-3, 1e-2, 3e-2), norm_trials=4, maxlr_norms=('pre_ln', 'rmsnorm', 'none'),
        maxlr_trials=4, maxlr_refine=True, kss_paths=SMALL_KSS_PATHS, kss_path_trials=(8, 4), n_boot=1000),
    'paper': dict(
        recall=dict(model_cfg=dict(d_model=256, n_layer=6, n_head=8, init=defaults.PAPER_INIT,
                                   init_std=defaults.PAPER_INIT_STD),
                    epochs=5, warmup_steps=100, batch_size=32, n_train=10_000, n_val=2_000,
                    profile_n_snapshots=2048, schedule='cosine', device=defaults.PAPER_DEVICE),
        band_lrs=(0.005, 0.0075, 0.01), main_trials=8, other_trials=8,
        norm_lrs=(1e-4, 3e-4, 1e-3, 2e-3, 3e-3, 5e-3, 8e-3, 1e-2), norm_trials=3,
        maxlr_norms=('pre_ln', 'rmsnorm', 'none'), kss_paths=SMALL_KSS_PATHS, kss_path_trials=(8, 4),
        n_boot=1000),
}


def plan(profile: str) -> Dict[str, Any]:
    if profile not in PLANS:
        raise ValueError(f"unknown profile {profile!r} (valid: {', '.join(PROFILES)})")
    return copy.deepcopy(PLANS[profile])


def recall_base(profile: str, norm: str = 'none') -> Dict[str, Any]:
    """The associative-recall TrainConfig dict of a profile (GPT with `norm`)."""
    p = plan(profile)['recall']
    cfg = {**_RECALL_COMMON, **p}
    cfg['model_cfg'] = {**p['model_cfg'], 'norm': norm}
    return cfg


def recall_steps(profile: str) -> int:
    """Training steps of a recall run of `profile` (the horizon): `steps`, else ceil(epochs x n_train / batch)."""
    p = plan(profile)['recall']
    if p.get('steps') is not None:
        return int(p['steps'])
    return max(1, math.ceil(p['epochs'] * p['n_train'] / p['batch_size']))


def method_trials(profile: str, method: str) -> int:
    """Trials per band LR of a method row: the headline rows `main_trials`; where the plan sets them,
    the dose x frequency rows `dose_trials` and the practice rows `practice_trials`; else `other_trials`."""
    p = plan(profile)
    row = method_row(method).id
    if row in MAIN_METHODS:
        return p['main_trials']
    for table, key in (('dose_frequency', 'dose_trials'), ('practice', 'practice_trials')):
        if key in p and row in TABLES[table]:
            return p[key]
    return p['other_trials']


def method_configs(profile: str, methods: Iterable[str], norm: str = 'none') -> List[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """[(labels, config)]: every method row x band LR x its trial seeds, on the No-Norm recall base."""
    p = plan(profile)
    out = []
    for m in methods:
        name = canonical_method(m)
        for lr in p['band_lrs']:
            for s in trial_seeds(method_trials(profile, name)):
                cfg = apply_method({**recall_base(profile, norm), 'lr': lr, 'seed': s}, name, validate=False)
                out.append(({'method': name}, cfg))
    return out


def table_methods(table: str) -> List[str]:
    """The display strings (`method` labels) of a table's rows (rksp.methods.rows.TABLES: 'table3', 'table4',
    'table6', 'table13', 'table14', 'alpha_sweep', 'practice', 'dose_frequency')."""
    return table_displays(table)


def norm_configs(profile: str, norms: Sequence[str] = NORMS, lrs: Optional[Sequence[float]] = None,
                 trials: Optional[int] = None) -> List[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """[(labels, config)]: the normalization sweep (Tables 1, 2, 5 and the calibration)."""
    p = plan(profile)
    out = []
    for n in norms:
        for lr in (lrs or p['norm_lrs']):
            for s in trial_seeds(trials or p['norm_trials']):
                out.append(({'norm': n, 'method': REFERENCE}, {**recall_base(profile, n), 'lr': lr, 'seed': s}))
    return out


def recall_pool(profile: str) -> List[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """Every plain (no stabilizer) recall run of the profile: the normalization sweep plus the
    No-Norm 'No control' runs of the LR band. Tables 1-2 and the calibration pool these."""
    runs = norm_configs(profile)
    runs += [({'norm': 'none', **lab}, c) for lab, c in method_configs(profile, [REFERENCE])]
    return unique_runs(runs)


def unique_runs(labeled: Sequence[Tuple[Dict[str, Any], Dict[str, Any]]]) -> List[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """Drop repeated (labels, config) pairs (the same run listed by two plans), keeping the first."""
    seen, out = set(), []
    for lab, c in labeled:
        key = (tuple(sorted(lab.items())), TrainConfig.from_dict(copy.deepcopy(c)).hash())
        if key not in seen:
            seen.add(key)
            out.append((lab, c))
    return out


def kss_path_configs(profile: str, paths: Optional[Sequence[str]] = None,
                     norm: str = 'none') -> List[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """[(labels, config)] of the gradient-path ablation: No control and KSS α=0.15 on each path
    (`KSS_PATHS`), every band LR x trial seeds; the default path gets `kss_path_trials[0]` seeds
    per LR (24 trials in 'small'), every other path `kss_path_trials[1]` (12). Labels: method,
    kss_path. The default path's configs are the KSS α=0.15 row's own (same hash, shared cache)."""
    p = plan(profile)
    n_def, n_other = p['kss_path_trials']
    names = list(p.get('kss_paths', KSS_PATHS)) if paths is None else list(paths)
    bad = [n for n in names if n not in KSS_PATHS]
    if bad:
        raise ValueError(f"unknown KSS path(s) {bad}; valid: {list(KSS_PATHS)}")
    out = [({'method': REFERENCE, 'kss_path': REFERENCE}, c)
           for _, c in method_configs(profile, [REFERENCE], norm)]
    for name in names:
        for lr in p['band_lrs']:
            for s in trial_seeds(n_def if name == DEFAULT_KSS_PATH else n_other):
                cfg = apply_method({**recall_base(profile, norm), 'lr': lr, 'seed': s}, KSS_PATH_METHOD,
                                   validate=False)
                cfg['hooks'] = [{**h, 'kwargs': {**h['kwargs'], **KSS_PATHS[name]}}
                                if isinstance(h, dict) and h.get('target') == 'kss' else h for h in cfg['hooks']]
                out.append(({'method': KSS_PATH_METHOD, 'kss_path': name}, cfg))
    return out


def maxlr_configs(profile: str, extra_lrs: Optional[Dict[Tuple[str, bool], Sequence[float]]] = None
                  ) -> List[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """[(labels, config)] of Table 5: each of the plan's norms x (without, with KSS α=0.15) x the
    normalization-sweep LRs and the plan's `maxlr_extra_lrs` (a finer grid); No-Norm also gets
    the LR band, where the method rows already ran. `extra_lrs` {(norm, kss): LRs} adds the LRs
    the bracket rule chose for one arm (`runs.maxlr_runs`, docs/regime.md Part 5)."""
    p = plan(profile)
    lrs = sorted(set(p['norm_lrs']) | set(p.get('maxlr_extra_lrs', ())))
    out = []
    for norm in p['maxlr_norms']:
        for kss in (False, True):
            m = KSS_ROW if kss else REFERENCE
            arm_lrs = sorted(set(lrs) | set((extra_lrs or {}).get((norm, kss), ())))
            for lab, c in norm_configs(profile, [norm], lrs=arm_lrs, trials=p.get('maxlr_trials')):
                c = apply_method(c, m, validate=False) if kss else c
                out.append(({'norm': norm, 'method': m, 'kss': kss}, c))
            if norm == 'none':
                out += [({'norm': 'none', 'kss': kss, **lab}, c) for lab, c in method_configs(profile, [m])]
    return unique_runs(out)


def all_recall_configs(profile: str) -> List[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """Every recall run of notebooks 01-07 and 13, the KSS gradient-path ablation included (to prefetch the
    cache in one sweep; a run listed twice is trained once, by its config hash)."""
    methods = list(dict.fromkeys(m for t in ('table3', 'table4', 'table6', 'table13', 'table14', 'alpha_sweep',
                                             'dose_frequency', 'practice')     # the last two: notebook 13
                                 for m in table_methods(t)))
    return (recall_pool(profile) + method_configs(profile, methods) + maxlr_configs(profile)
            + kss_path_configs(profile))


KSS_ROW = display('kss_0.15')     # the method row the 'KSS' label trains


SCALE_ROWS = ('Baseline', 'KSS')  # the row labels of Tables 7-9 (not rksp.methods.rows.METHODS)


SCALE_REFERENCE = 'Baseline'      # their reference row (the recall tables' is stabilizers.REFERENCE)


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
        table7=dict(task='synthetic_lm', norm='none',
                    sizes={'d=64, L=2': dict(d_model=64, n_layer=2, n_head=4, **SMALL_GPT_INIT)},
                    lrs=(0.02, 0.025), trials=6,
                    cfg=dict(lm_mode='mixed', seq_len=64, vocab_size=1000, n_train=2048, n_val=256)),
        # issue 22: real English prose (the news-articles stand-in, NOT WikiText-103) in the regime docs/lm-regime.md
        # chose by its rules (candidate C1: 1.05 M training tokens, 1 epoch, the paper's warmup and cosine), the
        # LR grid refined per arm by the bracket rule (runs.lm_runs)
        table8=dict(task='wikitext103', norm='pre_ln',
                    sizes={'d=64, L=2': dict(d_model=64, n_layer=2, n_head=4, **SMALL_GPT_INIT)},
                    lrs=(1e-3, 3e-3, 1e-2, 3e-2, 0.1), trials=3, bracket=True,
                    cfg=dict(schedule='cosine', steps=None, epochs=1, warmup_steps=100, batch_size=32, seq_len=64,
                             vocab_size=1000, n_train=16384, n_val=512,
                             data_kwargs=dict(name='news-articles', val_windows='spread'))),
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


def lm_configs(profile: str, table: str, extra_lrs: Optional[Dict[Tuple[str, str], Sequence[float]]] = None
               ) -> List[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """[(labels, config)] of Table 7 ('table7', synthetic LM) or Table 8 ('table8', WikiText-103 or its
    labelled offline stand-in): size x (Baseline, KSS) x LR x trial seed. Labels: table, size, norm, method.
    `extra_lrs` {(size, method): LRs}: the LRs the bracket rule added to one arm (`runs.lm_runs`)."""
    if table not in ('table7', 'table8'):
        raise ValueError(f"table must be 'table7' or 'table8', got {table!r}")
    p = lm_plan(profile)
    t = p[table]
    out = []
    for size, mc in t['sizes'].items():
        for m in SCALE_ROWS:
            for lr in sorted(set(t['lrs']) | set((extra_lrs or {}).get((size, m), ()))):
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


ARCHITECTURES = {
    "Transformer, Pre-LN": {"task": "recall", "model": "gpt", "model_cfg": {"norm": "pre_ln"}},
    "Transformer, No-Norm": {"task": "recall", "model": "gpt", "model_cfg": {"norm": "none"}},
    "MoE, top-2, 8 experts": {"task": "synthetic_lm", "lm_mode": "random", "model": "moe",
                              "model_cfg": {"n_experts": 8, "top_k": 2}},
    "Mamba (SSM)": {"task": "synthetic_lm", "lm_mode": "random", "model": "mamba", "model_cfg": {}},
    "KAN": {"task": "synthetic_lm", "lm_mode": "random", "model": "kan", "model_cfg": {"spline_order": 4}},
}


def architecture_configs(sizes: dict, common: dict, seeds, *, names=None, lm_task: dict | None = None,
                         gpt_init: dict | None = None) -> list[dict]:
    """TrainConfig dicts for each architecture x seed.

    ``sizes``: model_cfg fields shared by all (e.g. ``{"d_model": 64, "n_layer": 4, "n_head": 4}``;
    ``n_head`` is dropped for Mamba); ``common``: TrainConfig fields (lr, steps, batch_size, ...);
    ``lm_task``: task fields for the synthetic-LM rows (seq_len, vocab_size, n_train, n_val);
    ``gpt_init``: model_cfg fields of the GPT rows' init (e.g. :data:`SMALL_GPT_INIT`).
    """
    out = []
    for name in names or ARCHITECTURES:
        spec = ARCHITECTURES[name]
        mc = {**sizes, **spec["model_cfg"], **(gpt_init if spec["model"] == "gpt" and gpt_init else {})}
        if spec["model"] == "mamba":
            mc.pop("n_head", None)
        for seed in seeds:
            cfg = {**common, **{k: v for k, v in spec.items() if k != "model_cfg"}, "model_cfg": mc, "seed": seed}
            if spec["task"] == "synthetic_lm" and lm_task:
                cfg.update(lm_task)
            out.append(cfg)
    return out


_LM = {"task": "synthetic_lm", "lm_mode": "random"}


# One spec per row: model, model_cfg overrides of the shared sizes, ``d_scale`` (d_model = d_scale x the
# plan's d_model: Table 17's two Mamba widths 256 / 512), ``method`` (the id of a rksp.methods.rows row applied on
# top) and ``table11`` (the Table 11 architecture whose runs this row coincides with, config for config).
APPENDIX_ROWS = {
    "table16": {
        "MoE-Small, 8 experts, k=1": {**_LM, "model": "moe", "model_cfg": {"n_experts": 8, "top_k": 1}},
        "MoE-Small, 8 experts, k=2": {**_LM, "model": "moe", "model_cfg": {"n_experts": 8, "top_k": 2},
                                      "table11": "MoE, top-2, 8 experts"},
        "MoE-Small, 8 experts, k=4": {**_LM, "model": "moe", "model_cfg": {"n_experts": 8, "top_k": 4}},
        "MoE-Medium, 16 experts, k=2": {**_LM, "model": "moe", "model_cfg": {"n_experts": 16, "top_k": 2}},
        "MoE-Medium, 16 experts + KSS, k=2": {**_LM, "model": "moe", "model_cfg": {"n_experts": 16, "top_k": 2},
                                              "method": "kss_0.15"},
    },
    "table17": {
        "Mamba-Small": {**_LM, "model": "mamba", "model_cfg": {}, "table11": "Mamba (SSM)"},
        "Mamba-Medium": {**_LM, "model": "mamba", "model_cfg": {}, "d_scale": 2},
        "Transformer, Pre-LN, comparable": {**_LM, "model": "gpt", "model_cfg": {"norm": "pre_ln"}},
    },
    "table18": {
        "KAN-Transformer B=4": {**_LM, "model": "kan", "model_cfg": {"spline_order": 4}, "table11": "KAN"},
        "KAN-Transformer B=8": {**_LM, "model": "kan", "model_cfg": {"spline_order": 8}},
        "KAN-Transformer + KSS": {**_LM, "model": "kan", "model_cfg": {"spline_order": 4}, "method": "kss_0.15"},
    },
}


def _row_config(spec: dict, sizes: dict, common: dict, seed, lm_task: dict | None,
                gpt_init: dict | None = None) -> dict:
    """The TrainConfig dict of one row x seed; built exactly as :func:`architecture_configs` builds
    its synthetic-LM rows, so a row that coincides with a Table 11 architecture has the same hash."""
    mc = {**sizes, **spec["model_cfg"], **(gpt_init if spec["model"] == "gpt" and gpt_init else {})}
    if "d_scale" in spec:
        mc["d_model"] = int(round(sizes["d_model"] * spec["d_scale"]))
    if spec["model"] == "mamba":
        mc.pop("n_head", None)
    keep = {k: v for k, v in spec.items() if k in ("task", "lm_mode", "model")}
    cfg = {**common, **keep, "model_cfg": mc, "seed": seed}
    if lm_task:
        cfg.update(lm_task)
    if spec.get("method"):
        from rksp.methods.rows import apply_method
        cfg = apply_method(cfg, spec["method"], validate=False)
    return cfg


def appendix_configs(table: str, sizes: dict, common: dict, seeds, *, lm_task: dict | None = None,
                     table11_seeds=None, row_seeds: dict | None = None, rows=None,
                     gpt_init: dict | None = None) -> list[tuple[dict, dict]]:
    """[(labels, TrainConfig dict)] of paper App. I Table 16 / 17 / 18 (``table`` = 'table16' | ...).

    ``sizes`` / ``common`` / ``lm_task`` as for :func:`architecture_configs`; ``seeds`` per row.
    Rows that coincide with a Table 11 architecture (8 experts k=2, Mamba-Small, KAN B=4) use
    ``table11_seeds`` when given: those runs are already in the Table 11 cache, so they cost nothing.
    ``row_seeds`` (row name -> seeds) overrides both for the rows it names (e.g. more seeds for a
    cheap row). Labels: ``{"table": table, "row": row name}``.
    """
    if table not in APPENDIX_ROWS:
        raise ValueError(f"unknown table {table!r} (valid: {', '.join(APPENDIX_ROWS)})")
    out = []
    for name in rows or APPENDIX_ROWS[table]:
        spec = APPENDIX_ROWS[table][name]
        these = table11_seeds if (spec.get("table11") and table11_seeds is not None) else seeds
        these = (row_seeds or {}).get(name, these)
        for seed in these:
            out.append(({"table": table, "row": name}, _row_config(spec, sizes, common, seed, lm_task, gpt_init)))
    return out


# Tables 11 and 16-18 (notebook 11): one sweep; rows of Tables 16-18 that coincide with a Table 11
# architecture reuse its runs (same hash, Table 11 seeds), the other rows get `appendix_seeds`
# (small: 1 seed for the 8 new rows, 3 for the cheap dense comparator, ~5 min on 2 workers).
ARCHITECTURE_PLANS: Dict[str, Dict[str, Any]] = {
    'smoke': dict(sizes={'d_model': 32, 'n_layer': 2, 'n_head': 2}, seeds=[42],
                  common={'lr': 3e-3, 'steps': 8, 'warmup_steps': 2, 'batch_size': 8, 'n_train': 128,
                          'n_val': 32, 'profile_n_snapshots': 256, 'profile_at_end': True},
                  lm={'seq_len': 32, 'vocab_size': 64}, appendix_seeds=None, appendix_row_seeds={}),
    'small': dict(sizes={'d_model': 64, 'n_layer': 4, 'n_head': 4}, seeds=[*defaults.SEEDS, 1000, 1001, 1002],
                  common={'lr': 3e-3, 'steps': 50, 'warmup_steps': 20, 'batch_size': 32, 'n_train': 4096,
                          'n_val': 512, 'profile_n_snapshots': 2048, 'profile_at_end': True},
                  lm={'seq_len': 64, 'vocab_size': 1000}, appendix_seeds=1,
                  appendix_row_seeds={'Transformer, Pre-LN, comparable': 3}, gpt_init=SMALL_GPT_INIT),
    'paper': dict(sizes={'d_model': 256, 'n_layer': 6, 'n_head': 8}, seeds=[*defaults.SEEDS, *range(1000, 1021)],
                  common={'lr': 1e-3, 'epochs': 5, 'warmup_steps': 100, 'batch_size': 32, 'n_train': 20_000,
                          'n_val': 2_000, 'profile_n_snapshots': 2048, 'profile_at_end': True},
                  lm={'seq_len': 256, 'vocab_size': 10_000}, appendix_seeds=None, appendix_row_seeds={}),
}


def architecture_run_configs(profile: str) -> List[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """[(labels, config)] of Tables 11 and 16-18 for one profile: label {'table': 'table11'} for the
    Table 11 runs, then the appendix rows of `appendix_configs` (their seeds: the first
    `appendix_seeds` of the plan's seeds, all when None; `appendix_row_seeds` gives a row its own count)."""
    if profile not in ARCHITECTURE_PLANS:
        raise ValueError(f"unknown profile {profile!r} (valid: {', '.join(ARCHITECTURE_PLANS)})")
    p = ARCHITECTURE_PLANS[profile]
    cfgs = architecture_configs(p['sizes'], p['common'], p['seeds'], lm_task=p['lm'], gpt_init=p.get('gpt_init'))
    app_seeds = p['seeds'] if p['appendix_seeds'] is None else p['seeds'][:p['appendix_seeds']]
    row_seeds = {row: p['seeds'][:k] for row, k in p['appendix_row_seeds'].items()}
    app = [lc for t in ('table16', 'table17', 'table18')
           for lc in appendix_configs(t, p['sizes'], p['common'], app_seeds, lm_task=p['lm'],
                                      table11_seeds=p['seeds'], row_seeds=row_seeds, gpt_init=p.get('gpt_init'))]
    return [({'table': 'table11'}, c) for c in cfgs] + app
