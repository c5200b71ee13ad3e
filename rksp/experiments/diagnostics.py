"""Attention diagnostics of a GPT (issue 21): per layer, the largest attention logit and the attention entropy.

Two readings that the QK-LayerNorm / z-loss literature watches before a run diverges (Dehghani et al.
2023; Wortsman et al. 2023: attention-logit growth and entropy collapse):

  max_logit      the largest pre-softmax attention logit q.k / sqrt(d_head) of the layer, over the batch,
                 the heads and the causal (query i, key j <= i) pairs -- the logits the softmax sees
                 (after the QK-LayerNorm when the model has it, after any hook on c_attn such as μP's);
  entropy_mean   the attention entropy -sum_j p_ij log p_ij (nats) averaged over batch, heads and query
                 positions; entropy_min its smallest value over the same (1.0 would be a query that
                 attends to e^1 keys uniformly; 0 = one-hot attention). The first query can only attend to
                 itself, so its entropy is always 0 and it is left out of both (`entropy` of T >= 2).

`attention_diagnostics(model, x)` reads them on one batch (eval mode, no gradient, no random draw, so
a training run is not changed by it); `AttentionDiagnosticsHooks(every=k)` is a training hook that reads
them on the current training batch before the update of step 1 and every k-th step and writes
`record['extras']['attention']`. Give it as an extra hook (`train(cfg, hooks=[AttentionDiagnosticsHooks(10)])`):
extra hooks are not part of the config, so the run's hash is that of the run without it.

Any model whose residual blocks (`rksp.core.snapshots.find_blocks`) hold modules with a `qkv(x)` method
returning per-head (q, k, v) of shape (B, H, T, d_head) is read (the GPT's `CausalSelfAttention`, and the
MoE / KAN transformers that reuse it); causal attention is assumed.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

import pandas as pd
import torch
import torch.nn as nn

from rksp.checks import is_int
from rksp.core.snapshots import find_blocks
from rksp.errors import RKSPInputError
from rksp.harness.hooks import TrainHooks

COLUMNS = ['layer', 'max_logit', 'entropy_mean', 'entropy_min', 'n_heads', 'd_head', 'seq_len']


def attention_modules(model: nn.Module) -> List[nn.Module]:
    """The attention modules (those with a `qkv` method) of each residual block, in depth order."""
    out = []
    for blk in find_blocks(model):
        out.extend(m for m in blk.modules() if callable(getattr(m, 'qkv', None)))
    if not out:
        raise RKSPInputError(f"{type(model).__name__}: no attention module with a qkv(x) method in its "
                             "residual blocks (attention diagnostics read the GPT's CausalSelfAttention)")
    return out


def logit_stats(q: torch.Tensor, k: torch.Tensor) -> Dict[str, float]:
    """max causal logit q.k/sqrt(d_head) and the attention entropy (mean, min over queries 2..T) of
    per-head q, k (B, H, T, d_head)."""
    T, dh = q.shape[-2], q.shape[-1]
    logits = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(dh)
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    masked = logits.masked_fill(~causal, float('-inf'))
    logp = torch.log_softmax(masked, dim=-1)
    ent = -(logp.exp() * logp.masked_fill(~causal, 0.0)).sum(-1)      # (B, H, T)
    ent = ent[..., 1:] if T > 1 else ent
    return {'max_logit': float(masked.max()), 'entropy_mean': float(ent.mean()), 'entropy_min': float(ent.min())}


@torch.no_grad()
def attention_diagnostics(model: nn.Module, x: torch.Tensor, max_batch: Optional[int] = None) -> pd.DataFrame:
    """One row per attention layer (`COLUMNS`) of `model` on the token batch `x` (B, T); the model is
    run in eval mode and put back in its mode. `max_batch`: read only the first sequences."""
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise RKSPInputError(f"x must be a (batch, seq_len) tensor of token ids, got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if max_batch is not None:
        if not is_int(max_batch) or max_batch < 1:
            raise RKSPInputError(f"max_batch must be None or an integer >= 1, got {max_batch!r}")
        x = x[:max_batch]
    mods = attention_modules(model)
    inputs: Dict[int, torch.Tensor] = {}
    handles = [m.register_forward_pre_hook(lambda mod, args, i=i: inputs.__setitem__(i, args[0]))
               for i, m in enumerate(mods)]
    was_training = model.training
    model.eval()
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    rows = []
    for i, m in enumerate(mods):
        q, k, _ = m.qkv(inputs[i])
        rows.append({'layer': i, **logit_stats(q, k), 'n_heads': int(q.shape[1]), 'd_head': int(q.shape[-1]),
                     'seq_len': int(q.shape[-2])})
    return pd.DataFrame(rows, columns=COLUMNS)


class AttentionDiagnosticsHooks(TrainHooks):
    """Reads `attention_diagnostics` on the training batch before the update of step 1 and of every
    `every`-th step (at most `max_batch` sequences) and writes `record['extras']['attention']` =
    {'every', 'max_batch', 'layers', 'step': [...], 'max_logit': [[per layer] per step],
    'entropy_mean': [...], 'entropy_min': [...]} (module docstring). A divergence step is read too
    (before_step runs before the divergence check)."""

    name = 'attention'

    def __init__(self, every: int = 10, max_batch: int = 8):
        if not is_int(every) or every < 1:
            raise RKSPInputError(f"attention diagnostics: every must be an integer >= 1, got {every!r}")
        if not is_int(max_batch) or max_batch < 1:
            raise RKSPInputError(f"attention diagnostics: max_batch must be an integer >= 1, got {max_batch!r}")
        self.every, self.max_batch = int(every), int(max_batch)
        self.log: Dict[str, List[Any]] = {'step': [], 'max_logit': [], 'entropy_mean': [], 'entropy_min': []}
        self.layers: Optional[int] = None

    def wants(self, step: int) -> bool:
        return step == 1 or step % self.every == 0

    def before_step(self, step, model, optimizer, info):
        if not self.wants(step):
            return
        df = attention_diagnostics(model, info['batch'][0], self.max_batch)
        self.layers = len(df)
        self.log['step'].append(int(step))
        for c in ('max_logit', 'entropy_mean', 'entropy_min'):
            self.log[c].append([float(v) for v in df[c]])

    def on_end(self, record, model):
        record['extras'][self.name] = {'every': self.every, 'max_batch': self.max_batch, 'layers': self.layers,
                                       **{k: list(v) for k, v in self.log.items()}}


def diagnostics_long(extras_attention: Dict[str, Any]) -> pd.DataFrame:
    """`record['extras']['attention']` as a long table: one row per (step, layer)."""
    a = extras_attention or {}
    rows = []
    for i, s in enumerate(a.get('step', [])):
        for layer, v in enumerate(a['max_logit'][i]):
            rows.append({'step': s, 'layer': layer, 'max_logit': v, 'entropy_mean': a['entropy_mean'][i][layer],
                         'entropy_min': a['entropy_min'][i][layer]})
    return pd.DataFrame(rows, columns=['step', 'layer', 'max_logit', 'entropy_mean', 'entropy_min'])
