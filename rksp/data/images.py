"""Image classification data: CIFAR-10 (paper Table 9) and an offline stand-in.

``load_image_data`` returns an :class:`ImageData` with float tensors
``[n, 3, 32, 32]`` (per-channel normalised) and LongTensor labels.

Where the data comes from, in order:

1. ``torchvision.datasets.CIFAR10(root=data_dir, download=False)`` when
   ``data_dir`` holds the python-version batches (``cifar-10-batches-py/``);
   train = the 50,000 training images, val = the 10,000 test images;
2. ``datasets.load_dataset('cifar10')`` -- online when the hub answers a
   quick check, or offline (HF_* offline variables set) from the local HF cache;
3. otherwise a warning and a **stand-in**: ``sklearn.datasets.load_digits``
   (1,797 real 8x8 handwritten-digit images, 10 classes, shipped inside
   scikit-learn), upsampled to 32x32 (bilinear, ``F.interpolate``) and repeated
   over 3 channels.  Fixed stratified split: 1,437 train / 360 val.  Its
   ``data_name`` says ``"... (offline stand-in; NOT CIFAR-10)"`` and
   ``is_standin`` is True.

``n_train`` / ``n_val`` take a seeded random subset (``seed``); asking the
stand-in for more images than it has returns all of them, with a warning and
a note.  Normalisation: CIFAR-10 uses the usual per-channel training-set
mean/std; the stand-in uses the mean/std of its own training split.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .text import is_offline, try_hf_dataset

__all__ = ["ImageData", "load_image_data", "CIFAR10_MEAN", "CIFAR10_STD", "DIGITS_VAL_FRACTION"]

log = logging.getLogger(__name__)

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
DIGITS_VAL_FRACTION = 0.2     # (ours) stand-in split, stratified, fixed (random_state=0)
IMAGE_SIZE = 32

STANDIN_NAME = "sklearn digits upsampled to 32x32x3 (offline stand-in; NOT CIFAR-10)"
CIFAR10_NAME = "CIFAR-10"


@dataclass
class ImageData:
    """Normalised image tensors ``[n, 3, 32, 32]`` and labels."""

    x_train: torch.Tensor   # float32 [n_train, 3, 32, 32]
    y_train: torch.Tensor   # int64  [n_train]
    x_val: torch.Tensor     # float32 [n_val, 3, 32, 32]
    y_val: torch.Tensor     # int64  [n_val]
    num_classes: int
    data_name: str
    is_standin: bool
    note: str = ""
    mean: Tuple[float, float, float] = CIFAR10_MEAN
    std: Tuple[float, float, float] = CIFAR10_STD

    kind = "image"

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[-1])


def _check_n(name: str, v) -> Optional[int]:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be None or a positive integer, got {v!r}")
    return int(v)


def _normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


def _uint8_hwc_to_tensor(a: np.ndarray) -> torch.Tensor:
    """uint8 [n, 32, 32, 3] -> float32 [n, 3, 32, 32] in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float().div_(255.0).contiguous()


def _subset(x: torch.Tensor, y: torch.Tensor, n: Optional[int], rng: np.random.Generator,
            split: str, label: str, notes: list) -> Tuple[torch.Tensor, torch.Tensor]:
    if n is None:
        return x, y
    if n > x.shape[0]:
        msg = f"{label}: asked for n_{split}={n} but only {x.shape[0]} {split} images exist; using all of them"
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        notes.append(msg + ".")
        return x, y
    idx = torch.from_numpy(np.sort(rng.permutation(x.shape[0])[:n]))
    return x[idx], y[idx]


def _load_cifar_torchvision(root: Path):
    from torchvision.datasets import CIFAR10

    tr = CIFAR10(root=str(root), train=True, download=False)
    te = CIFAR10(root=str(root), train=False, download=False)
    return (tr.data, np.asarray(tr.targets), te.data, np.asarray(te.targets))


def _load_cifar_hf():
    import datasets

    ds = datasets.load_dataset("cifar10")
    out = []
    for split in ("train", "test"):
        d = ds[split]
        img_col = "img" if "img" in d.column_names else "image"
        x = np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in d[img_col]])
        y = np.asarray(d["label"], dtype=np.int64)
        out += [x, y]
    return tuple(out)


def _digits_standin() -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, tuple, tuple]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)      # [1797, 1, 8, 8] in [0, 1]
    x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    x = x.clamp_(0.0, 1.0).repeat(1, 3, 1, 1).contiguous()
    y = torch.from_numpy(d.target.astype(np.int64))
    idx_tr, idx_va = train_test_split(np.arange(len(y)), test_size=DIGITS_VAL_FRACTION,
                                      stratify=d.target, random_state=0)
    idx_tr, idx_va = np.sort(idx_tr), np.sort(idx_va)
    xtr, ytr = x[torch.from_numpy(idx_tr)], y[torch.from_numpy(idx_tr)]
    xva, yva = x[torch.from_numpy(idx_va)], y[torch.from_numpy(idx_va)]
    mean = tuple(float(v) for v in xtr.mean(dim=(0, 2, 3)))
    std = tuple(float(v) for v in xtr.std(dim=(0, 2, 3)))
    return xtr, ytr, xva, yva, mean, std


def load_image_data(
    name: str = "cifar10",
    n_train: Optional[int] = None,
    n_val: Optional[int] = None,
    data_dir: Optional[os.PathLike] = None,
    offline: Optional[bool] = None,
    seed: int = 0,
) -> ImageData:
    """Load CIFAR-10 (or, offline, the labelled digits stand-in).

    ``name``: ``'cifar10'`` (aliases ``'cifar-10'``), or ``'digits'`` for the
    stand-in directly.  ``n_train`` / ``n_val``: seeded random subsets (None:
    all).  ``offline``: None reads ``HF_DATASETS_OFFLINE`` / ``HF_HUB_OFFLINE``.
    """
    key = str(name).lower().replace("_", "-")
    if key not in ("cifar10", "cifar-10", "digits", "sklearn-digits", "standin"):
        raise ValueError(f"unknown image dataset {name!r}; choose 'cifar10' or 'digits'")
    n_train = _check_n("n_train", n_train)
    n_val = _check_n("n_val", n_val)
    rng = np.random.default_rng(seed)
    notes: list = []

    if key in ("cifar10", "cifar-10"):
        off = is_offline(offline)
        arrays = None
        reasons = []
        if data_dir is not None:
            root = Path(data_dir)
            if (root / "cifar-10-batches-py").is_dir():
                try:
                    arrays = _load_cifar_torchvision(root)
                    notes.append(f"torchvision CIFAR10 files under {root}.")
                except Exception as e:
                    reasons.append(f"torchvision CIFAR10 at {root} failed: {type(e).__name__}: {e}")
            else:
                reasons.append(f"no cifar-10-batches-py/ under {root}")
        if arrays is None:
            arrays = try_hf_dataset(_load_cifar_hf, "cifar10", off, "load_dataset('cifar10')", reasons)
            if arrays is not None:
                notes.append("datasets.load_dataset('cifar10').")
        if arrays is not None:
            xtr_u8, ytr, xva_u8, yva = arrays
            xtr = _normalize(_uint8_hwc_to_tensor(xtr_u8), CIFAR10_MEAN, CIFAR10_STD)
            xva = _normalize(_uint8_hwc_to_tensor(xva_u8), CIFAR10_MEAN, CIFAR10_STD)
            ytr = torch.as_tensor(np.asarray(ytr), dtype=torch.long)
            yva = torch.as_tensor(np.asarray(yva), dtype=torch.long)
            xtr, ytr = _subset(xtr, ytr, n_train, rng, "train", CIFAR10_NAME, notes)
            xva, yva = _subset(xva, yva, n_val, rng, "val", CIFAR10_NAME, notes)
            return ImageData(xtr, ytr, xva, yva, 10, CIFAR10_NAME, False, " ".join(notes),
                             CIFAR10_MEAN, CIFAR10_STD)
        msg = (f"CIFAR-10 is not available ({'; '.join(reasons)}). Falling back to the sklearn digits "
               f"stand-in. Results are NOT CIFAR-10 results.")
        log.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
        notes.append(f"Stand-in for CIFAR-10 ({'; '.join(reasons)}).")

    xtr, ytr, xva, yva, mean, std = _digits_standin()
    n_tr_all, n_va_all = int(xtr.shape[0]), int(xva.shape[0])
    xtr, xva = _normalize(xtr, mean, std), _normalize(xva, mean, std)
    xtr, ytr = _subset(xtr, ytr, n_train, rng, "train", "digits stand-in", notes)
    xva, yva = _subset(xva, yva, n_val, rng, "val", "digits stand-in", notes)
    notes.append(
        "sklearn.datasets.load_digits: 1,797 real 8x8 digit images, 10 classes, bilinearly upsampled to "
        f"32x32 and repeated to 3 channels; fixed stratified split {n_tr_all} train / {n_va_all} val; "
        "normalised with the train split's per-channel mean/std."
    )
    return ImageData(xtr, ytr, xva, yva, 10, STANDIN_NAME, True, " ".join(notes), mean, std)
