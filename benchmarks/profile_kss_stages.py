"""Where KSS's per-step time goes: a per-stage split of the harness step (bench_kss.py's setting).

Runs `rksp.harness.loop.train` on the bench's model / data / recipe (small No-Norm GPT, recall, batch 32,
KSS alpha 0.15, r 32, N 2048, every 10, half the layers) with a replacement step that does what
`StepContext.default_step` does, stage by stage, and times each stage:

  forward        the model's forward pass (residual states captured on KSS steps: same pass)
  kss_term       token sampling, float64 cast, randomized DMD, Eq. 14 (`KSS.log[...]['seconds']`)
  task_backward  backward of the task loss (retain_graph on KSS steps)
  kss_backward   backward of the KSS term's own graph (only on KSS steps: the regularizer graph
                 of `div_grad='task'`; includes the bound / ratio bookkeeping of the harness)
  (clip + AdamW step are outside the replacement step; the per-step totals include them)

All times are process CPU seconds (`time.process_time`), so other jobs on the machine inflate
them less than wall time; 1 thread.

Output: ms per stage on plain steps and on KSS steps, and the implied per-step overhead
(KSS-step extra / 10 / plain step). Paired with a No-control run of the same steps.

    python benchmarks/profile_kss_stages.py [--steps 60] [--repeats 3] [kss keyword=value ...]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from rksp.methods.rows import apply_method  # noqa: E402
from rksp.harness.hooks import FunctionHooks
from rksp.harness.loop import train  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_kss import BASE, KSS_ROW  # noqa: E402


CLOCK = time.process_time      # CPU seconds of this process: robust to other jobs' time slices
_KSS_SECONDS = []


def _patch_kss_timer():
    """Time KSS._apply (sampling, cast, randomized DMD, Eq. 14) on CLOCK."""
    from rksp.core.kss import KSS
    orig = KSS._apply

    def timed(self, *a, **k):
        t = CLOCK()
        try:
            return orig(self, *a, **k)
        finally:
            _KSS_SECONDS.append(CLOCK() - t)
    KSS._apply = timed


def _timed_step(times):
    def train_step(step, model, optimizer, batch, ctx):
        t0 = CLOCK()
        need = ctx.hooks.has_hidden and ctx.hooks.needs_hidden(step)
        _KSS_SECONDS.clear()
        task_loss, total, _, extra = ctx.forward(batch, step)
        t1 = CLOCK()
        kss_s = sum(_KSS_SECONDS)
        rest = ctx.rest_loss
        if rest is not None and rest.requires_grad and ctx.cfg.div_grad == 'task':
            task_loss.backward(retain_graph=True)
            ctx.task_grad_norm = torch.ones(())
            t2 = CLOCK()
            (ctx.backward_rest(rest) if hasattr(ctx, "backward_rest") else rest.backward())
            t3 = CLOCK()
        else:
            total.backward()
            t2 = t3 = CLOCK()
        key = 'kss' if need else 'plain'
        times.setdefault(key, []).append({'forward': t1 - t0 - kss_s, 'kss_term': kss_s,
                                          'task_backward': t2 - t1, 'kss_backward': t3 - t2,
                                          'step_body': t3 - t0})
        return task_loss, extra
    return train_step


def run(cfg, times, label):
    rec = train(cfg, hooks=[FunctionHooks(train_step=_timed_step(times.setdefault(label, {})))])
    return rec.get('train_cpu_time', rec['train_time']) / rec['steps_done'], rec['steps_done']


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument('--steps', type=int, default=60)
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--div-grad', default='task', choices=('task', 'total'))
    ap.add_argument('kss', nargs='*', help='KSSConfig overrides, key=value (python literals)')
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    import ast
    over = {k: ast.literal_eval(v) for k, v in (s.split('=', 1) for s in args.kss)}
    _patch_kss_timer()
    base = dict(BASE, steps=args.steps, div_grad=args.div_grad)
    kcfg = apply_method(base, KSS_ROW)
    if over:
        kcfg['hooks'] = [{**h, 'kwargs': {**h.get('kwargs', {}), **over}} if h.get('target') == 'kss' else h
                         for h in kcfg['hooks']]
        assert any(h.get('target') == 'kss' and all(h['kwargs'].get(k) == v for k, v in over.items())
                   for h in kcfg['hooks'])
    train(dict(base, steps=10))
    train(dict(kcfg, steps=10))
    times, per_step = {}, {'No control': [], 'KSS': []}
    ratios = []
    for r in range(args.repeats):
        order = [('No control', base), ('KSS', kcfg)] if r % 2 == 0 else [('KSS', kcfg), ('No control', base)]
        got = {}
        for name, c in order:
            got[name] = run(c, times, name)[0]
            per_step[name].append(got[name])
        ratios.append(got['KSS'] / got['No control'])
    med = statistics.median

    def row(label, key):
        ts = times[label].get(key, [])
        if not ts:
            return None
        return {k: 1000 * med([t[k] for t in ts]) for k in ts[0]}

    print(f"threads {torch.get_num_threads()}, load {open('/proc/loadavg').read().split()[:3]}, "
          f"{args.steps} steps x {args.repeats} paired repeats, div_grad {args.div_grad}, kss overrides {over}; "
          f"process CPU time")
    for label, key in [('No control', 'plain'), ('KSS', 'plain'), ('KSS', 'kss')]:
        rr = row(label, key)
        if rr:
            print(f"  {label:10s} {key:5s} steps (ms, median): " + ", ".join(f"{k} {v:.1f}" for k, v in rr.items()))
    pk, pp = row('KSS', 'kss'), row('KSS', 'plain')
    if pk and pp:
        extra = pk['step_body'] - pp['step_body']
        for k in ('forward', 'kss_term', 'task_backward', 'kss_backward'):
            print(f"  KSS-step extra from {k}: {pk[k] - pp[k]:+.1f} ms")
        print(f"  KSS-step extra in all: {extra:+.1f} ms -> {100 * extra / 10 / (1000 * med(per_step['No control'])):+.1f}%"
              f" of a No-control step per step (every 10)")
    print(f"  per step (ms, median): No control {1000 * med(per_step['No control']):.1f}, "
          f"KSS {1000 * med(per_step['KSS']):.1f}; paired ratio median {100 * (med(ratios) - 1):+.1f}% "
          f"(ratios {[round(100 * (x - 1), 1) for x in ratios]})")


if __name__ == '__main__':
    main()
