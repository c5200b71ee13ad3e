"""Associative-recall classification task (paper App. D.1).

Each sample is

    x = [k_1, v_1, ..., k_P, v_P, p_1, ..., p_m, q]        (P = n_pairs)

and the label is ``y = v_j`` where ``q = k_j``.  The model is trained on the
last-position logits only: ``F.cross_entropy(logits[:, -1, :], y)``.

The paper fixes seq_len = 64, vocab = 256, n_pairs = 4 (Table 11 caption), so
m = 64 - 2*4 - 1 = 55 filler tokens.  What it leaves open is our choice
(docs/choices.md "Choices beyond the paper"):

* keys are drawn WITHOUT replacement from the lower half of the vocabulary,
  ``0 .. vocab/2 - 1`` (0-127), so every key in a sample is distinct and the
  label is unambiguous;
* values are drawn independently (with replacement) from the upper half,
  ``vocab/2 .. vocab - 1`` (128-255);
* filler tokens are iid uniform over the whole vocabulary ``0 .. vocab - 1``;
* the query is one of the sample's keys, chosen uniformly.

Everything is generated with ``numpy.random.default_rng(seed)`` (PCG64), fully
vectorised, and returned as torch tensors.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass
from typing import Dict, Tuple

import numpy as np
import torch

__all__ = [
    "RECALL_SEQ_LEN",
    "RECALL_VOCAB_SIZE",
    "RECALL_N_PAIRS",
    "RECALL_N_TRAIN",
    "RECALL_N_VAL",
    "derive_split_seed",
    "make_recall",
    "RecallTask",
]

RECALL_SEQ_LEN = 64        # (paper) Table 11 caption
RECALL_VOCAB_SIZE = 256    # (paper)
RECALL_N_PAIRS = 4         # (paper)
RECALL_N_TRAIN = 10_000    # (ours) dataset size is not stated in the paper
RECALL_N_VAL = 2_000       # (ours)


def derive_split_seed(seed: int, stream: str) -> int:
    """A deterministic 63-bit seed derived from ``seed`` and a stream name.

    Used so that e.g. the validation split of a task never shares its random
    stream with the training split of the same (or any small-integer) seed.
    """
    tag = [int(b) for b in stream.encode("utf-8")]
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, *tag])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def make_recall(
    n: int,
    seq_len: int = RECALL_SEQ_LEN,
    vocab_size: int = RECALL_VOCAB_SIZE,
    n_pairs: int = RECALL_N_PAIRS,
    seed: int = 0,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Generate ``n`` associative-recall samples.

    Returns ``(x, y)``: ``x`` LongTensor ``[n, seq_len]`` laid out as
    ``[k1, v1, ..., kP, vP, p_1..p_m, q]`` with ``m = seq_len - 2*n_pairs - 1``,
    and ``y`` LongTensor ``[n]``, the value paired with the query key ``q``.
    Keys are distinct tokens from ``0 .. vocab_size//2 - 1``; values come from
    ``vocab_size//2 .. vocab_size - 1``; filler is uniform over the vocabulary.
    """
    n = check_int("n", n, 1)
    vocab_size = check_int("vocab_size", vocab_size, 2)
    n_pairs = check_int("n_pairs", n_pairs, 1)
    seq_len = check_int("seq_len", seq_len, 1)
    n_keys = vocab_size // 2
    if n_pairs > n_keys:
        raise ValueError(
            f"n_pairs={n_pairs} > vocab_size//2={n_keys}: keys are drawn without "
            f"replacement from tokens 0..{n_keys - 1}, so there are not enough of them"
        )
    if seq_len < 2 * n_pairs + 1:
        raise ValueError(
            f"seq_len={seq_len} is too short for n_pairs={n_pairs}: need at least "
            f"2*n_pairs + 1 = {2 * n_pairs + 1} positions (pairs + query)"
        )
    m = seq_len - 2 * n_pairs - 1

    rng = np.random.default_rng(seed)
    # distinct keys per row: the first n_pairs columns of a random permutation
    # of 0..n_keys-1 (argpartition of iid uniforms is a uniform permutation prefix)
    u = rng.random((n, n_keys))
    if n_pairs < n_keys:
        keys = np.argpartition(u, n_pairs - 1, axis=1)[:, :n_pairs]
    else:
        keys = np.argsort(u, axis=1)
    # argpartition leaves the order inside the selected block implementation-
    # defined; shuffle it from the same stream so the order is uniform too
    keys = np.take_along_axis(keys, np.argsort(rng.random((n, n_pairs)), axis=1), axis=1)
    values = rng.integers(n_keys, vocab_size, size=(n, n_pairs))
    filler = rng.integers(0, vocab_size, size=(n, m))
    j = rng.integers(0, n_pairs, size=n)

    x = np.empty((n, seq_len), dtype=np.int64)
    x[:, 0 : 2 * n_pairs : 2] = keys
    x[:, 1 : 2 * n_pairs : 2] = values
    x[:, 2 * n_pairs : 2 * n_pairs + m] = filler
    rows = np.arange(n)
    x[:, -1] = keys[rows, j]
    y = values[rows, j].astype(np.int64)
    return torch.from_numpy(x), torch.from_numpy(y)


@dataclass
class RecallTask:
    """The associative-recall dataset with deterministic train / val splits.

    ``train()`` is ``make_recall(n_train, ..., seed=seed)``; ``val()`` uses a
    seed derived from ``seed`` (``derive_split_seed(seed, "val")``), so the two
    splits are independent draws.  Results are cached on the instance.

    The model predicts the value token from the full vocabulary, so
    ``num_classes == vocab_size``; the loss is on the last position only.
    """

    seq_len: int = RECALL_SEQ_LEN
    vocab_size: int = RECALL_VOCAB_SIZE
    n_pairs: int = RECALL_N_PAIRS
    n_train: int = RECALL_N_TRAIN
    n_val: int = RECALL_N_VAL
    seed: int = 0

    data_name = "associative-recall (synthetic)"
    kind = "recall"          # last-position classification over the vocabulary
    is_standin = False

    def __post_init__(self) -> None:
        # a plain attribute, not a dataclass field: asdict() stays the config only
        self._cache: Dict[tuple, Tuple[torch.Tensor, torch.Tensor]] = {}
        # validate eagerly (cheaply) so a bad config fails at construction
        check_int("n_train", self.n_train, 1)
        check_int("n_val", self.n_val, 1)
        make_recall(1, self.seq_len, self.vocab_size, self.n_pairs, seed=0)

    @property
    def num_classes(self) -> int:
        return self.vocab_size

    @property
    def n_filler(self) -> int:
        return self.seq_len - 2 * self.n_pairs - 1

    @property
    def val_seed(self) -> int:
        return derive_split_seed(self.seed, "val")

    def _get(self, split: str) -> Tuple[torch.Tensor, torch.Tensor]:
        key = (split, astuple(self))  # a field changed after a call -> regenerate
        if key not in self._cache:
            n, s = (self.n_train, self.seed) if split == "train" else (self.n_val, self.val_seed)
            self._cache[key] = make_recall(n, self.seq_len, self.vocab_size, self.n_pairs, seed=s)
        return self._cache[key]

    def train(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(x [n_train, seq_len], y [n_train])`` LongTensors."""
        return self._get("train")

    def val(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(x [n_val, seq_len], y [n_val])`` LongTensors (independent seed)."""
        return self._get("val")
