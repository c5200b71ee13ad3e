"""Synthetic token-level language-modeling task (paper App. D.2).

A length-``T`` sequence over a vocabulary of size ``V`` (paper: T = 256,
V = 10,000) is built by concatenating randomly sampled segments until the
length reaches ``T``, then truncating.  Segment types (chosen uniformly):

* repetition -- a pattern of 2..5 iid tokens repeated 2..4 times;
* sequential -- a contiguous increasing integer run of length 5..15;
* random     -- 5..15 iid tokens.

All tokens lie in ``{10, ..., V-1}``; ids 0..9 are reserved for special tokens.
The objective is next-token prediction over t = 1..T-1.  Large-scale runs use
20K train / 2K validation sequences regenerated deterministically from the run
seed.

Choices the paper leaves open (ours):

* lengths (pattern length, repeat count, run length) are uniform over their
  integer ranges; pattern and random tokens are uniform over ``{10..V-1}``;
* a sequential run starts uniformly in ``{10 .. V - len}``, so it never wraps
  and stays inside the token range;
* every sequence starts with a fresh segment (segments never straddle rows).

``mode='random'`` gives the "random-token next-token prediction" variant used
by the MoE / Mamba / KAN tables (11, 16-18): every token iid uniform over
``{10..V-1}``.

The generator is vectorised with numpy over all segments of all rows at once
(no Python loop over samples or segments): 20,000 x 256 takes about a second.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass
from typing import Dict, Tuple, Union

import numpy as np
import torch

from .recall import check_int, derive_split_seed

__all__ = [
    "SPECIAL_TOKENS",
    "SEG_REPETITION",
    "SEG_SEQUENTIAL",
    "SEG_RANDOM",
    "SYNTH_SEQ_LEN",
    "SYNTH_VOCAB_SIZE",
    "SYNTH_N_TRAIN",
    "SYNTH_N_VAL",
    "make_synthetic_lm",
    "SyntheticLMTask",
]

SPECIAL_TOKENS = 10        # (paper) ids 0..9 reserved
SYNTH_SEQ_LEN = 256        # (paper)
SYNTH_VOCAB_SIZE = 10_000  # (paper)
SYNTH_N_TRAIN = 20_000     # (paper) large-scale runs
SYNTH_N_VAL = 2_000        # (paper)

# segment-type codes in the optional per-token metadata
SEG_REPETITION, SEG_SEQUENTIAL, SEG_RANDOM = 0, 1, 2

# (paper) segment length ranges, inclusive
PATTERN_LEN = (2, 5)
REPEATS = (2, 4)
RUN_LEN = (5, 15)
RANDOM_LEN = (5, 15)
_MIN_SEG_LEN = min(PATTERN_LEN[0] * REPEATS[0], RUN_LEN[0], RANDOM_LEN[0])  # 4

_MODES = ("mixed", "random")


def make_synthetic_lm(
    n: int,
    seq_len: int = SYNTH_SEQ_LEN,
    vocab_size: int = SYNTH_VOCAB_SIZE,
    seed: int = 0,
    mode: str = "mixed",
    return_segments: bool = False,
) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """Generate ``n`` synthetic-LM sequences, a LongTensor ``[n, seq_len]``.

    ``mode='mixed'`` is App. D.2 (repetition / sequential / random segments);
    ``mode='random'`` is iid uniform tokens.  All tokens are in
    ``[10, vocab_size)``.  With ``return_segments=True`` also returns a
    LongTensor ``[n, seq_len]`` of per-token segment types (0 repetition,
    1 sequential, 2 random).
    """
    n = check_int("n", n, 1)
    seq_len = check_int("seq_len", seq_len, 1)
    vocab_size = check_int("vocab_size", vocab_size, SPECIAL_TOKENS + RUN_LEN[1])
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    lo, hi = SPECIAL_TOKENS, vocab_size  # tokens in [lo, hi)
    rng = np.random.default_rng(seed)

    if mode == "random":
        x = rng.integers(lo, hi, size=(n, seq_len), dtype=np.int64)
        if return_segments:
            return torch.from_numpy(x), torch.full((n, seq_len), SEG_RANDOM, dtype=torch.long)
        return torch.from_numpy(x)

    # --- 1. segment plan: K segments per row always reach seq_len ------------
    K = -(-seq_len // _MIN_SEG_LEN)  # ceil
    seg_type = rng.integers(0, 3, size=(n, K))
    plen = rng.integers(PATTERN_LEN[0], PATTERN_LEN[1] + 1, size=(n, K))
    reps = rng.integers(REPEATS[0], REPEATS[1] + 1, size=(n, K))
    runlen = rng.integers(RUN_LEN[0], RUN_LEN[1] + 1, size=(n, K))
    randlen = rng.integers(RANDOM_LEN[0], RANDOM_LEN[1] + 1, size=(n, K))
    seg_len = np.where(
        seg_type == SEG_REPETITION, plen * reps,
        np.where(seg_type == SEG_SEQUENTIAL, runlen, randlen),
    )
    ends = np.cumsum(seg_len, axis=1)
    starts = ends - seg_len
    # keep only segments that start inside the row, truncate the last one
    used = starts < seq_len
    clipped = np.minimum(ends, seq_len) - starts

    # flatten the used segments of all rows, in row-major (row, segment) order
    u_type = seg_type[used]
    u_len = clipped[used]
    u_plen = plen[used]
    n_seg = u_type.shape[0]
    # run start: uniform in [lo, hi - runlen]  (no wrap, stays in range)
    u_runlen = runlen[used]
    u_run0 = rng.integers(lo, hi - u_runlen + 1)
    patterns = rng.integers(lo, hi, size=(n_seg, PATTERN_LEN[1]))
    total = n * seq_len
    assert int(u_len.sum()) == total
    noise = rng.integers(lo, hi, size=total)

    # --- 2. per-token segment index and offset --------------------------------
    seg_idx = np.repeat(np.arange(n_seg), u_len)
    seg_first = np.cumsum(u_len) - u_len
    offset = np.arange(total) - np.repeat(seg_first, u_len)
    t_type = u_type[seg_idx]

    # --- 3. tokens -------------------------------------------------------------
    x = noise  # random segments keep the iid draw
    is_seq = t_type == SEG_SEQUENTIAL
    x[is_seq] = u_run0[seg_idx[is_seq]] + offset[is_seq]
    is_rep = t_type == SEG_REPETITION
    si = seg_idx[is_rep]
    x[is_rep] = patterns[si, offset[is_rep] % u_plen[si]]
    x = x.reshape(n, seq_len)
    if return_segments:
        return torch.from_numpy(x), torch.from_numpy(t_type.reshape(n, seq_len).astype(np.int64))
    return torch.from_numpy(x)


@dataclass
class SyntheticLMTask:
    """The synthetic-LM dataset (App. D.2) with deterministic train / val.

    ``train()`` is ``make_synthetic_lm(n_train, ..., seed=seed)``; ``val()``
    uses ``derive_split_seed(seed, "val")``.  Cached on the instance.
    ``mode='random'`` is the random-token variant (Tables 11, 16-18).
    """

    seq_len: int = SYNTH_SEQ_LEN
    vocab_size: int = SYNTH_VOCAB_SIZE
    n_train: int = SYNTH_N_TRAIN
    n_val: int = SYNTH_N_VAL
    seed: int = 0
    mode: str = "mixed"

    kind = "lm"              # next-token prediction over t = 1..T-1
    is_standin = False

    def __post_init__(self) -> None:
        # a plain attribute, not a dataclass field: asdict() stays the config only
        self._cache: Dict[tuple, torch.Tensor] = {}
        check_int("n_train", self.n_train, 1)
        check_int("n_val", self.n_val, 1)
        make_synthetic_lm(1, self.seq_len, self.vocab_size, seed=0, mode=self.mode)

    @property
    def data_name(self) -> str:
        if self.mode == "random":
            return "synthetic-LM random-token (App. D.2 variant)"
        return "synthetic-LM (App. D.2)"

    @property
    def val_seed(self) -> int:
        return derive_split_seed(self.seed, "val")

    def _get(self, split: str) -> torch.Tensor:
        key = (split, astuple(self))  # a field changed after a call -> regenerate
        if key not in self._cache:
            n, s = (self.n_train, self.seed) if split == "train" else (self.n_val, self.val_seed)
            self._cache[key] = make_synthetic_lm(n, self.seq_len, self.vocab_size, seed=s, mode=self.mode)
        return self._cache[key]

    def train(self) -> torch.Tensor:
        """LongTensor ``[n_train, seq_len]``."""
        return self._get("train")

    def val(self) -> torch.Tensor:
        """LongTensor ``[n_val, seq_len]`` (independent seed)."""
        return self._get("val")
