"""Cells that nbval checks (`# NBVAL_CHECK_OUTPUT`) print only what is the same on every CPU.

Divergence counts, AUROCs, p-values, ECEs, accuracies and verdicts follow training, which another
CPU kernel set changes (docs/environment.md); they are checked with tolerances in
tests/test_smoke_tables.py instead."""
import json
import re
from pathlib import Path

import pytest

# (notebook, pattern): columns that are training-dependent in one table only (the calibration
# table's n is 0 for the cross-validated variants when too few runs diverged)
LOCAL = {('03_calibration', r'ct\[\[[^\]]*["\']n["\']')}
NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / 'notebooks').glob('*.ipynb'))
CHAOTIC = re.compile(r'["\'](n_div\w*|n_pos|n_neg|n_folds|auroc|p|ece|mce|acc_pct\w*|verdict|div_pct\w*|'
                     r'max_lr_with\w*|max_lr_without\w*|bound_\w+|increase\w*|m_near_unit_end\w*|both_classes|'
                     r'k_norm|k_rest|ours)["\']')


def _checked_cells(path):
    nb = json.loads(path.read_text())
    for i, c in enumerate(nb['cells']):
        src = ''.join(c['source']) if isinstance(c['source'], list) else c['source']
        if c['cell_type'] == 'code' and 'NBVAL_CHECK_OUTPUT' in src:
            yield i, src


def test_every_notebook_has_checked_cells():
    assert NOTEBOOKS and all(list(_checked_cells(p)) for p in NOTEBOOKS)


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.stem)
def test_checked_cells_print_nothing_chaotic(path):
    bad = [(i, m.group(1)) for i, src in _checked_cells(path) for m in CHAOTIC.finditer(src)
           if path.stem != '10_pretrained_lms']          # 10 profiles fixed weights: no training
    bad += [(i, pat) for i, src in _checked_cells(path) for nb, pat in LOCAL
            if nb == path.stem and re.search(pat, src)]
    assert not bad, f'{path.name}: checked cells print training-dependent columns {bad}'


def test_the_guard_catches_a_divergence_count():
    assert CHAOTIC.search('print(t[["method", "n", "n_div"]])') and not CHAOTIC.search('print(t[["n"]])')
