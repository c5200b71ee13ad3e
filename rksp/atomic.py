"""Atomic file writes: a file is either absent or complete, never half-written.

Used for sweep records, CLI outputs, tokenizer/token caches and fetched models.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(path, write: Callable[[str], None], *, suffix: str = ".tmp", fsync: bool = False,
                 mode: int | None = 0o644) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it onto ``path``.

    The temporary file is removed if ``write`` raises. ``fsync=True`` flushes the
    file and (best effort) its directory to disk before returning. ``mode`` sets
    the permissions (``mkstemp`` creates files readable by the owner only).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if fsync:
        try:
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass
    return path


def _umask() -> int:
    cur = os.umask(0)
    os.umask(cur)
    return cur
