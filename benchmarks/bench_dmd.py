"""Per-layer cost of the spectral engine, as ratios to a bare eigendecomposition (same run).

    python benchmarks/bench_dmd.py [--dims 256 768] [--n 2048] [--repeats 3]

For each d: seconds per layer for
  eig        torch.linalg.eig (with vectors) of a d x d matrix  (the reference)
  dmd        rksp.whitened_dmd: operator + eigendecomposition
  metrics    rksp.core.metrics.layer_metrics without Kreiss (masses, rho, kappa, eta_nl, ResDMD)
  +kreiss    layer_metrics with the Kreiss constant
  rdmd32     rank-32 randomized DMD eigenvalues
  pydmd      PyDMD exact DMD (svd_rank=-1) on the same snapshots
"""
from __future__ import annotations

import argparse

import torch


from _timing import best_of as _time  # noqa: E402  (benchmarks/ is the script's folder)


def snapshots(d, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(d, n, dtype=torch.float64, generator=g) * torch.logspace(0, 1, d, dtype=torch.float64)[:, None]
    W = torch.randn(d, d, dtype=torch.float64, generator=g) / d ** 0.5
    Y = X + torch.tanh(W @ X)
    return X, Y


def bench(d, n, repeats=3):
    from rksp import randomized_dmd_eigvals, whitened_dmd
    from rksp.core.metrics import layer_metrics
    X, Y = snapshots(d, n)
    A = torch.randn(d, d, dtype=torch.float64) / d ** 0.5
    row = {"d": d, "N": n}
    row["eig"] = _time(lambda: torch.linalg.eig(A), repeats)
    row["dmd"] = _time(lambda: whitened_dmd(X, Y), repeats)
    row["metrics"] = _time(lambda: layer_metrics(X, Y, kreiss=False), repeats)
    row["+kreiss"] = _time(lambda: layer_metrics(X, Y, kreiss=True), repeats)
    row["rdmd32"] = _time(lambda: randomized_dmd_eigvals(X, Y, rank=32, generator=torch.Generator().manual_seed(0)),
                          repeats)
    try:
        from pydmd import DMD
        Xn, Yn = X.numpy(), Y.numpy()
        row["pydmd"] = _time(lambda: DMD(svd_rank=-1, exact=True).fit(Xn, Yn), max(1, repeats - 1))
    except ImportError:
        row["pydmd"] = float("nan")
    return row


TARGETS = {"dmd": 1.5, "metrics": 2.0, "+kreiss": 3.0}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dims", type=int, nargs="+", default=[256, 768])
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, float64, N={a.n}")
    rows = []
    for d in a.dims:
        r = bench(d, a.n, a.repeats)
        rows.append(r)
        print(f"\nd = {d}: seconds per layer (ratio to bare eig with vectors)")
        for k in ("eig", "dmd", "metrics", "+kreiss", "rdmd32", "pydmd"):
            tgt = f"   target <= {TARGETS[k]}x" if k in TARGETS and d == 768 else ""
            print(f"  {k:8s} {r[k]:8.3f} s   {r[k] / r['eig']:6.2f}x{tgt}")
        print(f"  speed-up of rksp.whitened_dmd over PyDMD: {r['pydmd'] / r['dmd']:.2f}x (target >= 2x)")
        print(f"  speed-up of full metrics over PyDMD:      {r['pydmd'] / r['metrics']:.2f}x")
    return rows


if __name__ == "__main__":
    main()
