"""Where results go: ``results/<profile>/{tables,figures}`` (root overridable by ``RKSP_RESULTS``).

The one place every notebook, table builder and :mod:`rksp.reproduce` reads and writes results
through, so the data flows one way (runs -> tables -> claims) and no module imports the
orchestrator.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

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
