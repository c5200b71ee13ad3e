"""Where results go: ``results/<profile>/{tables,figures}`` (root overridable by ``RKSP_RESULTS``).

The one place every notebook, table builder and :mod:`rksp.reproduce` reads and writes results
through, so the data flows one way (runs -> tables -> claims) and no module imports the
orchestrator.
"""
from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pandas as pd

from rksp.errors import RKSPInputError

ROOT = Path(__file__).resolve().parents[2]
PROFILES = ("smoke", "small", "paper")


def results_dir(profile: str) -> Path:
    """``results/<profile>`` (override the root with ``RKSP_RESULTS``), with tables/ and figures/."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r} (valid: {', '.join(PROFILES)})")
    root = Path(os.environ.get("RKSP_RESULTS", ROOT / "results")) / profile
    for sub in ("tables", "figures"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root


def write_table(df: pd.DataFrame, out_dir: Path, name: str) -> None:
    """``<out_dir>/<name>.csv`` and ``.md`` (``out_dir`` is a tables directory)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    df.to_csv(out_dir / f"{name}.csv", index=False)
    (out_dir / f"{name}.md").write_text(df.to_markdown(index=False, floatfmt=".4g") + "\n")


def save_figure(fig, out: Path, name: str) -> Path:
    """``<out>/figures/<name>.png``."""
    path = out / "figures" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


# ---------------------------------------------------------------------------------------------
# committed run records: results/<profile>/runs.tar.xz holds every run record of the run cache
# (results/<profile>/runs/, git-ignored), so tables, figures and claims rebuild without retraining
# ---------------------------------------------------------------------------------------------
RECORDS_ARCHIVE = "runs.tar.xz"


def records_archive(profile: str) -> Path:
    return results_dir(profile) / RECORDS_ARCHIVE


def pack_records(profile: str) -> Path | None:
    """Write every ``runs/**/<hash>.json`` record of ``profile`` into ``runs.tar.xz``, byte-for-byte
    reproducible (sorted members, zeroed times and owners), atomically; None when there is no record."""
    root = results_dir(profile)
    files = sorted(p for p in (root / "runs").rglob("*.json") if not p.name.startswith("."))
    if not files:
        return None
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz", preset=9) as tar:
        for f in files:
            data = f.read_bytes()
            info = tarfile.TarInfo(f.relative_to(root).as_posix())
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    out = records_archive(profile)
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(out)
    return out


def unpack_records(profile: str) -> int:
    """Restore the committed run records of ``profile`` into its run cache: every member of
    ``runs.tar.xz`` whose file is missing (a record already in the cache is kept). Returns how many
    were written; 0 without an archive. A damaged archive raises RKSPInputError."""
    root = results_dir(profile)
    arc = records_archive(profile)
    if not arc.exists():
        return 0
    n = 0
    try:
        with tarfile.open(arc, mode="r:xz") as tar:
            for m in tar.getmembers():
                parts = Path(m.name).parts
                if not m.isfile() or not parts or parts[0] != "runs" or ".." in parts or Path(m.name).is_absolute():
                    raise RKSPInputError(f"{arc}: unexpected member {m.name!r} (only runs/**/*.json)")
                dest = root / m.name
                if dest.exists():
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp = dest.with_suffix(".part")
                tmp.write_bytes(tar.extractfile(m).read())
                tmp.replace(dest)
                n += 1
    except (tarfile.TarError, EOFError, OSError) as e:
        raise RKSPInputError(f"{arc} is damaged ({e}); delete it and retrain (rksp reproduce --retrain)") from e
    return n
