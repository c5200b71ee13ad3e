"""Where the per-layer time of `rksp profile` goes, and what concurrency over layers buys.

    python benchmarks/bench_profile.py [--dims 384 768] [--n 2048] [--layers 4] [--threads 2]

Per d (synthetic residual-like snapshots, N token states), seconds per layer of each stage of
rksp.core.metrics.layer_metrics, each timed alone with single-threaded BLAS/LAPACK (how
profile_hidden runs them):
  covariance   the three d x d covariances (d^2 N)
  eigh         eigendecomposition of Sigma_X (whitening)
  eig          eigendecomposition of the whitened operator (with vectors)
  kappa        kappa(V) from the singular values of V
  inv          V^-1 (left eigenvectors)
  resdmd       ResDMD residuals (Eq. 10)
  eta_nl       nonlinearity ratio (Eq. 5)
  kreiss       Kreiss constant search
and the share of each in their sum. Then the whole profile_hidden of `--layers` layers, with
workers=1 (one layer at a time, `--threads` intra-op threads) and workers=`--threads` (layers
concurrently, one thread each), as seconds per layer and their ratio, measured in this run.
Absolute times depend on the machine and its load (printed); the ratios are the result.

Issue-23 targets, as ratios to one torch.linalg.eig (with vectors) of a d x d Gaussian, all measured in
this run (best of --repeats, interleaved), printed last for d = 768 (``--ratios`` prints only these):
  profile_hidden with Kreiss, seconds per layer (default workers)  / eig   target <= 2.2
  whitened_dmd                                                   / eig   target <= 1.5
The eig and whitened_dmd are timed with the same thread setting as each profiled layer (one thread).
"""
from __future__ import annotations

import argparse
import os
import time

import torch


from _timing import best_of as _time  # noqa: E402  (benchmarks/ is the script's folder)


def snapshots(d, n, L=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, dtype=torch.float64, generator=g) * torch.logspace(0, 1, d, dtype=torch.float64)
    hs = [h]
    for _ in range(L):
        W = torch.randn(d, d, dtype=torch.float64, generator=g) / d ** 0.5
        h = h + 0.5 * torch.tanh(h @ W)
        hs.append(h)
    return torch.stack(hs)


def stages(d, n, repeats=2):
    from rksp.core.dmd import _whiten_stats, whitened_dmd
    from rksp.core.kreiss import kreiss_constant
    from rksp.core.metrics import eigvec_condition, nonlinearity_ratio, resdmd_residuals
    H = snapshots(d, n)
    X, Y = H[0].T.contiguous(), H[1].T.contiguous()
    Xc = X - X.mean(-1, keepdim=True)
    Dc = (Y - Y.mean(-1, keepdim=True)) - Xc
    dmd = whitened_dmd(X, Y)
    V = dmd.modes_q
    Vinv = torch.linalg.inv(V)
    Sxx = Xc @ Xc.T / (n - 1)
    row = {"d": d, "N": n}
    row["covariance"] = _time(lambda: (Xc @ Xc.T, Dc @ Xc.T, Dc @ Dc.T), repeats)
    row["eigh"] = _time(lambda: torch.linalg.eigh(Sxx), repeats)
    row["eig"] = _time(lambda: torch.linalg.eig(dmd.A_q), repeats)
    row["kappa"] = _time(lambda: eigvec_condition(V), repeats)
    row["inv"] = _time(lambda: torch.linalg.inv_ex(V), repeats)
    row["resdmd"] = _time(lambda: resdmd_residuals(dmd, Vinv), repeats)
    row["eta_nl"] = _time(lambda: nonlinearity_ratio(dmd), repeats)
    row["kreiss"] = _time(lambda: kreiss_constant(dmd.eigvals, V, Vinv, A=dmd.A_q), max(1, repeats - 1))
    _ = _whiten_stats  # (the covariance + eigh stages are the body of _whiten_stats)
    return row


def whole(d, n, L, threads):
    from rksp.core.profiling import profile_hidden
    H = snapshots(d, n, L)
    out = {}
    for workers in (1, threads):
        torch.set_num_threads(threads)
        t0 = time.perf_counter()
        profile_hidden(H, progress=False, workers=workers)
        out[workers] = (time.perf_counter() - t0) / L
    return out


TARGETS = {"profile_hidden": 2.2, "whitened_dmd": 1.5}


def ratios(d, n, L, repeats, threads):
    """Seconds of one eig, one whitened_dmd (both single-threaded, as a profiled layer runs them) and
    profile_hidden per layer (Kreiss on, ``workers=threads``), best of ``repeats`` rounds, interleaved."""
    from rksp.core.dmd import whitened_dmd
    from rksp.core.profiling import profile_hidden
    H = snapshots(d, n, L)
    X, Y = H[0].T.contiguous(), H[1].T.contiguous()
    G = torch.randn(d, d, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) / d ** 0.5

    def one_thread(fn):
        prev = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn()
        finally:
            torch.set_num_threads(prev)

    def prof():
        torch.set_num_threads(threads)
        profile_hidden(H, progress=False, workers=threads)

    jobs = {"eig": lambda: one_thread(lambda: torch.linalg.eig(G)),
            "whitened_dmd": lambda: one_thread(lambda: whitened_dmd(X, Y)),
            "profile_hidden": prof}
    for fn in jobs.values():
        fn()                                   # warm-up
    best = dict.fromkeys(jobs, float("inf"))
    for _ in range(repeats):
        for k, fn in jobs.items():
            t0 = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    best["profile_hidden"] /= L
    return best


def print_ratios(d, n, L, repeats, threads):
    r = ratios(d, n, L, repeats, threads)
    print(f"\nd={d} N={n}, {L} layers, workers={threads}: ratios to one eig of a {d}x{d} Gaussian (same run)")
    for k in ("profile_hidden", "whitened_dmd"):
        print(f"  {k:15s} {r[k] / r['eig']:5.2f}x   target <= {TARGETS[k]}x")
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dims", type=int, nargs="+", default=[384, 768])
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2") or 2))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--ratios", action="store_true", help="only the issue-23 ratios at d = 768")
    a = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; stages single-threaded")
    if a.ratios:
        print_ratios(768, a.n, a.layers, max(a.repeats, 3), a.threads)
        print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
        return
    names = ["covariance", "eigh", "eig", "kappa", "inv", "resdmd", "eta_nl", "kreiss"]
    for d in a.dims:
        torch.set_num_threads(1)
        r = stages(d, a.n, a.repeats)
        tot = sum(r[k] for k in names)
        print(f"\nd={d} N={a.n}: per-stage seconds per layer (share of their sum {tot:.3f} s)")
        for k in names:
            print(f"  {k:11s} {r[k]:8.4f} s  {100 * r[k] / tot:5.1f} %")
        w = whole(d, a.n, a.layers, a.threads)
        print(f"  profile_hidden, {a.layers} layers, Kreiss on: workers=1 x {a.threads} threads "
              f"{w[1]:.3f} s/layer; workers={a.threads} {w[a.threads]:.3f} s/layer; "
              f"ratio {w[1] / w[a.threads]:.2f}x")
    if 768 in a.dims:
        print_ratios(768, a.n, a.layers, max(a.repeats, 3), a.threads)
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
