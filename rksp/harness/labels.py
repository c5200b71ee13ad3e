"""Divergence labels (Sec. 3.1) and the gradient baselines of Table 2."""

from __future__ import annotations

import math
from typing import Dict, Optional, Sequence

import numpy as np

from rksp.defaults import DIVERGE_GRAD_NORM, DIVERGE_LOSS, SPIKE_FACTOR, SPIKE_WINDOW

# (paper, Table 2) horizons of the gradient baselines
GRAD_BASELINE_STEP = 100   # "gradient norm at step 100", "variance, steps 1-100"

SPIKE_HORIZON = 500        # "loss spike count, steps 1-500"


def divergence_check(loss: float, grad_norm: float) -> Optional[str]:
    """The paper's label at one step: None, or the reason ('nonfinite_loss', 'loss',
    'nonfinite_grad', 'grad_norm', in that order of precedence)."""
    if not math.isfinite(loss):
        return 'nonfinite_loss'
    if loss > DIVERGE_LOSS:
        return 'loss'
    if not math.isfinite(grad_norm):
        return 'nonfinite_grad'
    if grad_norm > DIVERGE_GRAD_NORM:
        return 'grad_norm'
    return None


def loss_spike_count(losses: Sequence[float], factor: float = SPIKE_FACTOR, window: int = SPIKE_WINDOW,
                     horizon: int = SPIKE_HORIZON) -> int:
    """Steps s in 1..min(horizon, len) whose loss > factor x median of the previous
    min(window, s-1) steps' finite losses; a non-finite loss is a spike; step 1 never is."""
    arr = np.asarray(list(losses)[:horizon], dtype=np.float64)
    count = 0
    for i in range(1, len(arr)):
        if not np.isfinite(arr[i]):
            count += 1
            continue
        prev = arr[max(0, i - window):i]
        prev = prev[np.isfinite(prev)]
        if prev.size and arr[i] > factor * float(np.median(prev)):
            count += 1
    return count


def gradient_baselines(losses: Sequence[float], grad_norms: Sequence[float]) -> Dict[str, Optional[float]]:
    """Table 2's gradient baselines from per-step curves (index 0 = step 1).
    Runs shorter than 100 / 500 steps use what exists (module docstring)."""
    g = np.asarray(list(grad_norms), dtype=np.float64)
    if g.size == 0:
        return {'grad_norm_step1': None, 'grad_norm_step100': None, 'grad_var_1_100': None,
                'loss_spikes_1_500': None}
    head = g[:GRAD_BASELINE_STEP]
    fin = head[np.isfinite(head)]
    return {
        'grad_norm_step1': float(g[0]),
        'grad_norm_step100': float(g[min(GRAD_BASELINE_STEP, g.size) - 1]),
        'grad_var_1_100': float(np.var(fin)) if fin.size else float('nan'),
        'loss_spikes_1_500': int(loss_spike_count(losses)),
    }
