"""Floor 0: the value checks the validators share (TrainConfig, KSSConfig, the stabilizer hooks, the plots)."""

from __future__ import annotations

import math
import numbers
import os


def is_int(v) -> bool:
    """An integer (Python or NumPy), not a bool."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_number(v, *, finite: bool = False) -> bool:
    """A real number (Python or NumPy int / float), not a bool; with ``finite=True`` also not NaN or ±inf."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and (not finite or math.isfinite(v))


def is_path(v) -> bool:
    """A file name: a str or an ``os.PathLike`` (what ``plot(path)`` saves the figure to)."""
    return isinstance(v, (str, os.PathLike))
