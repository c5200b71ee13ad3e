"""Shared timing helper of the benchmark scripts (run from this folder or by run_all.py)."""
import time


def best_of(fn, repeats):
    """Best wall time of ``repeats`` calls of ``fn`` after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best
