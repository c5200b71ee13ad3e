"""Benchmark of the training harness and the sweep runner (rksp/train.py, rksp/sweep.py).

Measures, in one run (under 2 minutes on 2 cores):
  * training-step time (ms/step) of the `tiny` and `small` GPT presets on associative recall
    (batch 32 x 64 tokens, AdamW, no profile), from the harness's own train_time (the
    minimum over the repeats of the overhead measurement below);
  * the harness's per-step overhead (recording, hook dispatch, fused grad-norm, divergence
    check, one host sync) against a bare hand-written AdamW loop on the same model, data
    and batches: ratio harness / bare - 1 (target < 5%); repeats are interleaved and the
    minimum of each is compared;
  * sweep throughput with the local executor, 1 vs 2 worker processes (runs/min, and the
    ratio 2-worker / 1-worker), on a sweep of tiny runs with the RKSP profile at init;
    times include starting the worker processes.

    python benchmarks/bench_train.py [--quick] [--json OUT.json]

Run it on a quiet machine: other processes using the cores distort every number.
`main()` returns the results as a dict.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from rksp.harness.sweep import grid, run  # noqa: E402
from rksp.harness.config import TrainConfig
from rksp.harness.loop import BatchSampler, param_groups, lr_factor, train
from rksp.harness.build import derive_seed, seed_all, build_model, load_task_data

BASE = dict(task='recall', n_train=4096, n_val=256, batch_size=32, warmup_steps=10, lr=1e-3,
            profile_at_init=False)


def bare_loop_seconds(cfg: TrainConfig) -> float:
    """The same run as `train(cfg)` written by hand: AdamW, warmup+cosine, last-position CE."""
    seed_all(cfg.seed)
    data = load_task_data(cfg)
    model, _ = build_model(cfg, data)
    model.train()
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    sampler = BatchSampler(data.n_train, cfg.batch_size, torch.Generator().manual_seed(derive_seed(cfg.seed, 'batches')))
    x_train, y_train = data.x_train, data.y_train
    t0 = time.perf_counter()
    for step in range(1, cfg.steps + 1):
        f = lr_factor(step, cfg.steps, cfg.warmup_steps, cfg.schedule, cfg.min_lr_ratio)
        for g in opt.param_groups:
            g['lr'] = cfg.lr * f
        idx = sampler.next()
        x, y = x_train[idx], y_train[idx]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x)[:, -1, :], y)
        loss.backward()
        opt.step()
        loss.item()          # a hand-written loop logs its loss: one sync per step, like the harness
    return time.perf_counter() - t0


def harness_overhead(preset: str, steps: int, repeats: int) -> dict:
    cfg = TrainConfig.from_dict(dict(BASE, preset=preset, steps=steps))
    bare, harness = [], []
    for _ in range(repeats):
        bare.append(bare_loop_seconds(cfg))
        harness.append(train(cfg)['train_time'])
    b, h = min(bare), min(harness)
    return {'preset': preset, 'steps': steps, 'repeats': repeats, 'bare_ms_per_step': 1000 * b / steps,
            'harness_ms_per_step': 1000 * h / steps, 'overhead_ratio': h / b - 1.0,
            'bare_s_all': bare, 'harness_s_all': harness}


def sweep_throughput(n_runs: int, steps: int) -> dict:
    cfgs = grid(dict(BASE, preset='tiny', steps=steps, n_train=1024, profile_at_init=True),
                {'seed': list(range(n_runs))})
    out = {}
    for workers in (1, 2):
        d = tempfile.mkdtemp(prefix=f'rksp-bench-sweep-{workers}w-')
        try:
            t0 = time.perf_counter()
            df = run(cfgs, d, executor='local', n_workers=workers, progress=False, verbose=False)
            dt = time.perf_counter() - t0
            assert (df['status'] == 'ok').all(), df['error'].tolist()
        finally:
            shutil.rmtree(d, ignore_errors=True)
        out[f'workers_{workers}'] = {'seconds': dt, 'runs_per_min': 60.0 * n_runs / dt}
    out['speedup_2_vs_1'] = out['workers_2']['runs_per_min'] / out['workers_1']['runs_per_min']
    out.update(n_runs=n_runs, steps_per_run=steps)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--quick', action='store_true', help='fewer steps and repeats (a smoke run)')
    ap.add_argument('--json', default=None, help='also write the results here')
    args = ap.parse_args([] if argv is None else argv)
    q = args.quick
    t0 = time.perf_counter()
    train(dict(BASE, preset='tiny', steps=5))          # warm-up: imports, allocator, kernels
    res = {'torch': torch.__version__, 'threads': torch.get_num_threads(), 'cores': os.cpu_count()}
    res['overhead_tiny'] = harness_overhead('tiny', 40 if q else 120, 2 if q else 3)
    res['overhead'] = harness_overhead('small', 10 if q else 40, 2 if q else 3)
    # step time = the harness's own time per step (min over the interleaved repeats)
    res['step_ms'] = {'tiny': res['overhead_tiny']['harness_ms_per_step'],
                      'small': res['overhead']['harness_ms_per_step']}
    res['sweep'] = sweep_throughput(4 if q else 8, 20 if q else 60)
    res['total_seconds'] = time.perf_counter() - t0
    o, ot, s = res['overhead'], res['overhead_tiny'], res['sweep']
    print(f"torch {res['torch']}, {res['threads']} threads, {res['cores']} cores")
    print(f"step time (recall, batch 32 x 64): tiny {res['step_ms']['tiny']:.2f} ms/step, "
          f"small {res['step_ms']['small']:.2f} ms/step")
    for name, r in (('small', o), ('tiny', ot)):
        print(f"harness overhead ({name}): bare {r['bare_ms_per_step']:.2f} ms/step, harness "
              f"{r['harness_ms_per_step']:.2f} ms/step -> {100 * r['overhead_ratio']:+.1f}% (target < 5%)")
    print(f"sweep throughput ({s['n_runs']} tiny runs x {s['steps_per_run']} steps, local executor): "
          f"1 worker {s['workers_1']['runs_per_min']:.1f} runs/min, 2 workers {s['workers_2']['runs_per_min']:.1f} "
          f"runs/min -> x{s['speedup_2_vs_1']:.2f}")
    print(f"total {res['total_seconds']:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return res


if __name__ == '__main__':
    main(sys.argv[1:])
