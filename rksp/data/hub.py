"""The HF hub checks of the dataset loaders: offline variables, local cache, a quick reachability test.

Used by :mod:`rksp.data.text` (WikiText) and :mod:`rksp.data.images` (CIFAR-10), which re-export
them; moved here unchanged from ``text.py`` so that module stays under the line limit.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

__all__ = ["is_offline", "hub_reachable", "hf_dataset_cached", "try_hf_dataset"]


def _truthy(v: Optional[str]) -> bool:
    return v is not None and v.strip().lower() in ("1", "true", "yes", "on")


def is_offline(offline: Optional[bool] = None) -> bool:
    """``offline`` if given, else whether an HF offline variable is set."""
    if offline is not None:
        return bool(offline)
    return any(_truthy(os.environ.get(k)) for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _hf_cache_dirs() -> List[Path]:
    """Local HF hub and datasets cache folders (no network, no heavy imports)."""
    out: List[Path] = []
    try:
        from huggingface_hub import constants

        out.append(Path(constants.HF_HUB_CACHE))
    except Exception:
        pass
    hf_home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
    out.append(Path(os.environ.get("HF_DATASETS_CACHE") or os.path.join(hf_home, "datasets")))
    return out


def hf_dataset_cached(pattern: str) -> bool:
    """Whether a local HF cache holds something whose name contains ``pattern``."""
    for d in _hf_cache_dirs():
        try:
            if d.is_dir() and any(pattern in p.name.lower() for p in d.iterdir()):
                return True
        except OSError:
            continue
    return False


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP check of the HF endpoint, so an offline machine fails in
    about a second instead of waiting through the client's retries."""
    import socket
    from urllib.parse import urlparse

    try:
        from huggingface_hub import constants

        u = urlparse(constants.ENDPOINT)
        port = u.port or (443 if u.scheme == "https" else 80)
        with socket.create_connection((u.hostname, port), timeout=timeout):
            return True
    except Exception:
        return False


def try_hf_dataset(loader, cache_pattern: str, offline: bool, what: str, reasons: List[str]):
    """Run ``loader()`` (a ``datasets.load_dataset`` call) only where it cannot hang.

    Offline: only when the HF offline variables are set (so ``datasets`` reads
    its local cache only) and a cached copy seems to exist.  Online: only when
    the endpoint answers a quick TCP check.  Returns None (and appends to
    ``reasons``) when skipped or failed.
    """
    if offline:
        env_off = is_offline(None)
        if not (env_off and hf_dataset_cached(cache_pattern)):
            reasons.append("offline (HF_DATASETS_OFFLINE / HF_HUB_OFFLINE set or offline=True) "
                           "and no local copy in the HF cache")
            return None
    elif not hub_reachable():
        reasons.append("the dataset hub is unreachable (no network)")
        return None
    try:
        return loader()
    except Exception as e:  # ConnectionError / missing package / ...
        reasons.append(f"{what} failed: {type(e).__name__}: {str(e)[:200]}")
        return None
