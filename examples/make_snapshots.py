"""Write examples/snapshots_tiny.npz: a small residual stream for `rksp profile --snapshots`.

    python examples/make_snapshots.py          # rewrites the file, byte for byte the same

A toy residual network h_{l+1} = h_l + tanh(W_l h_l) with d = 16 and L = 4 blocks, run on N = 200
random inputs. The array `hidden` has shape (L+1, N, d) = (5, 200, 16), float32: the layout
`rksp profile --snapshots` and `rksp.profile_hidden` expect (states before block 0, then after each
block). Real models: dump the block outputs you would pass to `rksp.profile_hidden`.
"""
from pathlib import Path

import numpy as np

D, L, N, SEED = 16, 4, 200, 0


def make() -> np.ndarray:
    rng = np.random.default_rng(SEED)
    h = rng.standard_normal((N, D))
    states = [h]
    for _ in range(L):
        W = rng.standard_normal((D, D)) * (0.4 / np.sqrt(D))
        h = h + np.tanh(h @ W.T)
        states.append(h)
    return np.stack(states).astype(np.float32)


if __name__ == "__main__":
    out = Path(__file__).resolve().parent / "snapshots_tiny.npz"
    np.savez(out, hidden=make())
    print(f"wrote {out} {make().shape}")
