"""The ``rksp`` command: one entry point for everything the package runs.

    rksp profile ...              spectral profile of a model or of dumped snapshots
    rksp sweep CONFIG.yaml        a sweep of training runs (rksp.harness.sweep)
    rksp reproduce ...            make reproduce: profiles, runs, notebooks (rksp.reproduce)
    rksp runs PROFILE             train every recall run of a profile into the cache (rksp.experiments.runs)
    rksp pretrained MODEL ...     profile pretrained LMs, print the group tables (Tables 10/15)
    rksp fetch --models/--corpus  download the pretrained weights and the LM corpus the notebooks use
    rksp init-study ...           the init-only study of notebook 01 (rksp.experiments.init_study)
    rksp kernels ...              the kernel-set flip study (rksp.experiments.kernels)

Bad input prints one line ``rksp: error: ...`` and exits with status 2; no
partial output file is left behind (outputs are written to a temporary file
and renamed only once complete).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .atomic import atomic_write
from .errors import RKSPInputError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, status 2
        raise RKSPInputError(message)


def _atomic_write(path: str, write) -> None:
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise RKSPInputError(f"output directory does not exist: {path.parent}")
    atomic_write(path, write)


def _load_npz(path: str):
    """The array ``hidden`` of an ``.npz`` file, as a real numeric ndarray (one-line errors otherwise)."""
    import zipfile
    import numpy as np
    if not os.path.exists(path):
        raise RKSPInputError(f"no such file: {path}")
    if not zipfile.is_zipfile(path):          # np.load would fall back to pickle and blame "object data"
        raise RKSPInputError(f"{path} is not a valid .npz file (expected a zip archive written by "
                             f"numpy.savez with an array named 'hidden')")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise RKSPInputError(f"cannot read {path} as .npz: {exc}") from None
    if "hidden" not in getattr(data, "files", []):
        names = ", ".join(getattr(data, "files", [])) or "none"
        raise RKSPInputError(f"{path}: expected an array named 'hidden' of shape (L+1, N, d); found: {names}")
    try:
        hidden = data["hidden"]
    except ValueError:                         # object arrays need pickle, which is never enabled
        raise RKSPInputError(f"{path}: 'hidden' is an object array; save it as a numeric array "
                             f"(float32/float64) of shape (L+1, N, d)") from None
    except Exception as exc:
        raise RKSPInputError(f"cannot read 'hidden' from {path}: {exc}") from None
    if hidden.dtype.kind not in "fiu":
        raise RKSPInputError(f"{path}: 'hidden' must be a real numeric array, got dtype {hidden.dtype}")
    return hidden


def _profile_cmd(args) -> int:
    from rksp.core.profiling import profile_hidden
    if bool(args.snapshots) == bool(args.hf):
        raise RKSPInputError("give exactly one of --snapshots FILE.npz or --hf NAME_OR_PATH")
    if args.n_snapshots is not None and args.n_snapshots < 2:
        raise RKSPInputError(f"--n-snapshots must be >= 2, got {args.n_snapshots}")
    progress = None if not args.quiet else False
    if args.snapshots:
        hidden = _load_npz(args.snapshots)
        prof = profile_hidden(hidden, eps=args.eps, kreiss=not args.no_kreiss, progress=progress,
                              meta={"source": str(args.snapshots)})
    else:
        from rksp.pretrained.hf import dataset_text, load_hf, model_context, read_prompts, read_text_file, text_inputs
        from rksp.pretrained.profiles import profile_pretrained
        import torch
        if args.text and args.dataset:
            raise RKSPInputError("give at most one of --text FILE and --dataset NAME")
        if (args.text or args.dataset) and args.prompts:
            raise RKSPInputError("--prompts is the paper's prompt protocol; it does not combine with --text/--dataset")
        if args.max_length is not None and args.max_length < 2:
            raise RKSPInputError(f"--max-length must be >= 2, got {args.max_length}")
        text = source = None
        if args.text:                                   # read before loading a model: fail fast
            text, source = read_text_file(args.text), str(args.text)
        elif args.dataset:
            text, source = dataset_text(args.dataset)
        prompts = read_prompts(args.prompts) if text is None else None
        dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[args.dtype]
        loaded = load_hf(args.hf, random_init=args.random_init, seed=args.seed, dtype=dtype,
                         device_map=args.device_map)
        inputs = desc = None
        if text is not None:
            inputs, desc = text_inputs(loaded, text, n_tokens=args.n_snapshots,
                                       window=model_context(loaded, args.max_length), source=source)
        # the one profiling path of pretrained / HF models (rksp.pretrained.profiles)
        prof = profile_pretrained(loaded, args.n_snapshots, text="prompts", prompts=prompts, repeats=args.repeats,
                                  max_length=args.max_length or 64, seed=args.seed, eps=args.eps,
                                  kreiss=not args.no_kreiss, progress=progress, inputs=inputs, input_desc=desc)
        prof.meta["inputs"] = prof.meta["input"]    # the key `rksp profile --format json` has always written
    if args.format == "json":
        text = prof.to_json()
    elif args.format == "csv":
        text = prof.layers.to_csv(index=False)
    else:
        text = _table(prof)
    if args.out:
        _atomic_write(args.out, lambda p: Path(p).write_text(text))
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    if args.plot:
        _atomic_write(args.plot, lambda p: prof.plot(path=p, format=Path(args.plot).suffix.lstrip(".") or "png")
                      if False else prof.plot().savefig(p, dpi=110, format=Path(args.plot).suffix.lstrip(".") or "png"))
    return 0


def _table(prof) -> str:
    cols = ["layer", "m_near_unit", "m_expansive", "m_contractive", "m_mid", "rho", "kappa", "eta_nl",
            "kreiss", "resdmd_kept", "flags"]
    df = prof.layers[cols]
    s = prof.summary
    head = "  ".join(f"{k}={v}" for k, v in prof.meta.items() if k in ("model", "weights", "source", "input", "inputs"))
    lines = [head, df.to_string(index=False, float_format=lambda v: f"{v:.4g}"), rank_note(prof),
             f"score (mean M~1) = {s['score']:.4f}   rho max = {s['rho_max']:.4g}   "
             f"kappa mean = {s['kappa_mean']:.4g}   eta_nl mean = {s['eta_nl_mean']:.4g}   "
             f"ResDMD kept mean = {s['resdmd_kept_mean']:.3f}   flagged layers = {s['n_flagged']}"]
    return "\n".join(ln for ln in lines if ln)


def rank_note(prof) -> str:
    """One line when some layer is flagged ``rank_deficient``: why, and the fix if there is one."""
    if "flags" not in prof.layers or not prof.layers["flags"].str.contains("rank_deficient").any():
        return ""
    d, n = prof.meta.get("d"), prof.meta.get("n_distinct_states")
    rk = prof.meta.get("cov_rank_min")
    if n is not None and d is not None and n < d:
        return (f"note: rank_deficient: N distinct states {n} < d {d}: pass --text with at least 2·d = "
                f"{2 * d} tokens (and --n-snapshots >= {2 * d})")
    return (f"note: rank_deficient: the states span {rk} < d = {d} directions although N distinct states "
            f"{n} >= d (e.g. post-LayerNorm outputs lie in a hyperplane); the null directions are "
            "dropped (pseudo-inverse), more text will not change that")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="rksp", description="Residual Koopman Spectral Profiling (arXiv 2602.22988)")
    sub = p.add_subparsers(dest="cmd", parser_class=_Parser)
    pp = sub.add_parser("profile", help="spectral profile of a model or of dumped snapshots")
    src = pp.add_argument_group("source (one of)")
    src.add_argument("--snapshots", metavar="FILE.npz", help="npz with array 'hidden' of shape (L+1, N, d)")
    src.add_argument("--hf", metavar="NAME_OR_PATH", help="transformers model id, local dir, or all-MiniLM-L6-v2")
    pp.add_argument("--random-init", action="store_true", help="random weights from the model's config")
    pp.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32",
                    help="model weights dtype (snapshots are profiled in float64 either way)")
    pp.add_argument("--device-map", default=None, help="transformers device_map (e.g. 'auto' for a 7B model)")
    inp = pp.add_argument_group("inputs for --hf (default: the paper's prompt protocol, App. D.3)")
    inp.add_argument("--text", metavar="FILE", help="plain-text file of any length: tokenized, cut into windows "
                     "of the model's context, N token states sampled (needs the model's tokenizer)")
    inp.add_argument("--dataset", metavar="NAME[:CONFIG[:SPLIT]]",
                     help="text from a `datasets` dataset (first string column; split default train); "
                          "cached or reachable hub only")
    inp.add_argument("--prompts", help="prompt file, one per line (default data/prompts.txt)")
    inp.add_argument("--repeats", type=int, default=4, help="each prompt repeated (default 4: 8 x 4 = 32)")
    inp.add_argument("--max-length", type=int, default=None,
                     help="tokens per prompt (default 64) or per --text/--dataset window (default: model context)")
    pp.add_argument("--n-snapshots", type=int, default=2048, help="token states per transition (default 2048)")
    pp.add_argument("--seed", type=int, default=0)
    pp.add_argument("--eps", type=float, default=1e-5, help="whitening ridge (default 1e-5)")
    pp.add_argument("--no-kreiss", action="store_true", help="skip the Kreiss constant: its resolvent-norm search is the costliest "
                    "stage, about half of the per-layer metric time at d = 384-768 (`make bench` prints the split)")
    pp.add_argument("--format", choices=("table", "json", "csv"), default="table")
    pp.add_argument("--out", help="write the output here instead of stdout")
    pp.add_argument("--plot", help="also save the profile figure (png/pdf/svg)")
    pp.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    for name, (_, _, help_) in PASSTHROUGH.items():
        ps = sub.add_parser(name, help=help_ + f" (rksp {name} --help)", add_help=False)
        ps.add_argument("rest", nargs=argparse.REMAINDER)
    return p


# subcommands that hand their arguments to a module's own parser: name -> (module, function, help)
PASSTHROUGH = {
    "sweep": ("rksp.harness.sweep", "cli_main", "run a sweep of training runs from a YAML config"),
    "reproduce": ("rksp.reproduce", "main", "regenerate results/<profile>/ (make reproduce)"),
    "runs": ("rksp.experiments.runs", "main", "train every recall run of a profile into the run cache"),
    "pretrained": ("rksp.experiments.tables.pretrained", "main", "profile pretrained LMs and print the group tables"),
    "fetch": ("rksp.pretrained.fetch", "main", "download the pretrained weights (--models) and the LM corpus (--corpus)"),
    "init-study": ("rksp.experiments.init_study", "main", "the init-only study (notebook 01)"),
    "kernels": ("rksp.experiments.kernels", "main", "train runs under two CPU kernel sets and count label flips"),
    "readme": ("rksp.experiments.front_page", "main", "regenerate README.md's at-a-glance block from results/small"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in PASSTHROUGH:
        import importlib
        mod, fn, _ = PASSTHROUGH[argv[0]]
        return getattr(importlib.import_module(mod), fn)(argv[1:])
    try:
        args = build_parser().parse_args(argv)
        if args.cmd == "profile":
            return _profile_cmd(args)
        build_parser().print_help()
        return 2
    except RKSPInputError as exc:
        print(f"rksp: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:                 # a failure inside the maths is reported, not dumped
        if type(exc).__name__ != "LinAlgError":
            raise
        print(f"rksp: error: linear algebra failed on these snapshots ({str(exc).splitlines()[0]})",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rksp: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
