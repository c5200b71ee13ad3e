"""The README's *At a glance* block, generated from the committed results, never typed.

    rksp readme            # rewrite the block between the markers in README.md
    rksp readme --check    # exit 1 if README.md's block differs from what the results give
    python -m rksp.experiments.front_page [--check] [--readme PATH] [--results DIR]

The block sits between ``<!-- at-a-glance:begin -->`` and ``<!-- at-a-glance:end -->`` in
README.md. It is built from ``results/small/claims.csv`` (the headline claims picked by id in
:data:`HEADLINE`, ids missing from the file are skipped; the verdict counts, whatever verdict
values occur) and ``results/small/tables/table2_predictors.csv`` (the normalization-only
baseline) and ``table3_time_to_divergence.csv`` (delay beside prevention, task-gradient label).
Optional claims columns (``p_adjusted``) are shown when present. After regenerating the claims
(``make reproduce``), run ``rksp readme``; ``tests/test_readme.py`` fails until then.
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
from collections import Counter
from pathlib import Path

__all__ = ["HEADLINE", "BEGIN", "END", "at_a_glance", "render_readme", "main"]

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS = REPO_ROOT / "results" / "small"
README = REPO_ROOT / "README.md"
BEGIN = "<!-- at-a-glance:begin -->"
END = "<!-- at-a-glance:end -->"

# (claim id in claims.csv, short label for the front page). Ids absent from the file are skipped.
HEADLINE = [
    ("T1-m-none", "M≈1 at init, No-Norm (Table 1)"),
    ("T1-nonorm-div", "No-Norm diverges more than the other norms (Div.% difference, pp)"),
    ("T2-auroc-m", "Pooled AUROC of M≈1 at init for divergence (Table 2)"),
    ("T2-m-vs-grad", "M≈1 beats the best gradient baseline (AUROC)"),
    ("T2-within-none", "M≈1 ranks runs within No-Norm (AUROC)"),
    ("H-ece-raw", "ECE of raw M≈1 as P(diverge) (App. H)"),
    ("T3-kss015-vs-none", "KSS α=0.15 vs No control, Div.% (pp; Table 3)"),
    ("T3-kss015-vs-clip1", "KSS α=0.15 vs Grad clip 1.0, Div.% (pp)"),
    ("F2-dose-m", "M≈1 after training falls as α grows (Spearman; Fig. 2)"),
    ("T5.lr_increase.none", "KSS raises No-Norm's max stable LR (%; Table 5)"),
    ("T7.ppl", "Synthetic LM: PPL change with KSS (%; Table 7)"),
    ("T8.ppl", "LM: PPL change with KSS (%; Table 8)"),
    ("T9.acc.pre_ln", "ViT Pre-LN: accuracy change with KSS (pp; Table 9)"),
]
# verdicts listed first in this order when they occur; any other value follows, alphabetically
VERDICT_ORDER = ["reproduced", "not reproduced", "inconclusive", "matched by design"]
# rows of table2_predictors.csv quoted under the table: (predictor prefix, words)
CONTEXT_PREDICTORS = [
    ("Normalization identity (one-hot), CV logistic", "the normalization's identity alone"),
    ("M≈1 at init + normalization one-hot", "M≈1 plus the normalization"),
]
# rows of table3_time_to_divergence.csv quoted under the table (task-gradient label), the reference first
DELAY_ROWS = ["No control", "KSS α=0.15", "Grad clip 1.0"]
DELAY_ALPHA = 0.05   # the paired test's level for the words "diverged later"


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _num(s) -> float | None:
    try:
        v = float(s)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    out = f"{v:.3g}"
    if "e" in out:
        out = f"{v:.2e}"
    return out


def _fmt_cell(s: str | None) -> str:
    """A number, an interval ``[a, b]`` or free text, numbers at 3 significant digits."""
    s = (s or "").strip()
    if not s or s.lower() == "nan":
        return "—"
    if s.startswith("[") and s.endswith("]"):
        parts = [_num(p) for p in s[1:-1].split(",")]
        if len(parts) == 2 and all(p is not None for p in parts):
            return f"[{_fmt(parts[0])}, {_fmt(parts[1])}]"
        return s
    v = _num(s)
    return _fmt(v) if v is not None else s


def _md(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def _detail(row: dict) -> str:
    notes = (row.get("notes") or "").strip()
    first = notes.split(";")[0].strip() if notes else ""
    padj = _num(row.get("p_adjusted"))
    if padj is not None:
        first = f"{first}; p adj. {padj:.2g}" if first else f"p adj. {padj:.2g}"
    for key, words in (("information", "too little information"), ("stand_in", "stand-in")):
        why = (row.get(key) or "").strip()
        if why and why.lower() != "nan":
            first = f"{first}; **{words}**: {why}" if first else f"**{words}**: {why}"
    return first


def _verdict_counts(rows: list[dict]) -> list[tuple[str, int]]:
    c = Counter((r.get("verdict") or "").strip() or "(none)" for r in rows)
    known = [v for v in VERDICT_ORDER if v in c]
    return [(v, c[v]) for v in known + sorted(v for v in c if v not in VERDICT_ORDER)]


def at_a_glance(results: str | Path = RESULTS) -> str:
    """The markdown of the *At a glance* block (without the marker lines) for ``results``."""
    results = Path(results)
    rel = _relpath(results)
    claims = _read_csv(results / "claims.csv")
    by_id = {r.get("id"): r for r in claims}
    lines = [
        "<!-- generated by `rksp readme` from the files it names; edit rksp/experiments/front_page.py, "
        "not this block -->",
        "",
        f"Profile `small` (CPU-sized, see [below](#commands-and-what-they-cost)); every number below is "
        f"read from [`{rel}/claims.csv`]({rel}/claims.md) and `{rel}/tables/`, where each claim carries "
        "its n, its test and the rule that gave its verdict.",
        "",
    ]
    criteria = bool(claims) and "direction" in claims[0] and "size" in claims[0]
    lines += (["| claim | paper | ours | 95% CI | direction | size | verdict | detail |",
               "| --- | --- | --- | --- | --- | --- | --- | --- |"] if criteria else
              ["| claim | paper | ours | 95% CI | verdict | detail |", "| --- | --- | --- | --- | --- | --- |"])
    for cid, label in HEADLINE:
        r = by_id.get(cid)
        if r is None:
            continue
        crit = (f"{_md((r.get('direction') or '').strip())} | {_md((r.get('size') or '').strip())} | "
                if criteria else "")
        lines.append(f"| {_md(label)} <sub>`{cid}`</sub> | {_md(_fmt_cell(r.get('paper')))} | "
                     f"{_md(_fmt_cell(r.get('ours')))} | {_md(_fmt_cell(r.get('ci')))} | {crit}"
                     f"{_md((r.get('verdict') or '').strip())} | {_md(_detail(r))} |")
    lines.append("")
    for ctx in (_context(results), _delay(results)):
        if ctx:
            lines += [ctx, ""]
    counts = _verdict_counts(claims)
    listed = ", ".join(f"{n} {v}" for v, n in counts)
    lines.append(f"**All {len(claims)} claims:** {listed}. "
                 f"The full table with every rule: [`{rel}/claims.md`]({rel}/claims.md).")
    fig = results / "figures" / "claims_verdicts.png"
    if fig.exists():
        lines += ["", f"![Verdict of every claim, by notebook]({rel}/figures/claims_verdicts.png)"]
    return "\n".join(lines)


def _context(results: Path) -> str:
    path = results / "tables" / "table2_predictors.csv"
    if not path.exists():
        return ""
    rows = _read_csv(path)
    parts = []
    m = next((r for r in rows if (r.get("predictor") or "").strip() == "M≈1 at init"), None)
    for prefix, words in CONTEXT_PREDICTORS:
        r = next((r for r in rows if (r.get("predictor") or "").startswith(prefix)), None)
        if r is None or _num(r.get("auroc")) is None:
            continue
        lo, hi = _num(r.get("lo")), _num(r.get("hi"))
        ci = f" [{_fmt(lo)}, {_fmt(hi)}]" if lo is not None and hi is not None else ""
        parts.append(f"{words} {_fmt(_num(r['auroc']))}{ci}")
    if not parts or m is None:
        return ""
    text = (f"For scale, pooled AUROCs on the same {m.get('n', '?')} runs (`{_relpath(path)}`): M≈1 at "
            f"init {_fmt(_num(m['auroc']))}, " + ", ".join(parts) + ".")
    norm = next((r for r in rows if (r.get("predictor") or "").startswith(CONTEXT_PREDICTORS[0][0])), None)
    lo, hi, auc = (_num(norm.get("lo")), _num(norm.get("hi")), _num(m.get("auroc"))) if norm else (None,) * 3
    if None not in (lo, hi, auc) and lo <= auc <= hi:
        text += (" M≈1's AUROC lies inside the normalization-only interval: here it adds nothing "
                 "detectable to knowing the normalization.")
    return text


def _ci_txt(lo, hi) -> str:
    if lo is None:
        return ""
    return f" [{_fmt(lo)}, {_fmt(hi) if hi is not None else 'not reached'}]"


def _delay(results: Path) -> str:
    """Delay beside prevention (Table 3's time to divergence): per row of DELAY_ROWS its divergences,
    Kaplan-Meier median step, hazard ratio and paired (LR, seed) sign-flip test against the first."""
    path = results / "tables" / "table3_time_to_divergence.csv"
    if not path.exists():
        return ""
    rows = {r.get("method"): r for r in _read_csv(path) if (r.get("label") or "").startswith("task")}
    if DELAY_ROWS[0] not in rows:
        return ""
    parts = []
    for i, name in enumerate(DELAY_ROWS):
        r = rows.get(name)
        if r is None:
            continue
        med = _num(r.get("median_step"))
        t = (f"{name} diverged in {r.get('n_events')}/{r.get('n_runs')}, median step "
             + (_fmt(med) + _ci_txt(_num(r.get("median_ci_lo")), _num(r.get("median_ci_hi"))) if med is not None
                else "not reached"))
        hr, p = _num(r.get("hr")), _num(r.get("paired_p"))
        if i and hr is not None:
            t += f", hazard ratio {_fmt(hr)}{_ci_txt(_num(r.get('hr_ci_lo')), _num(r.get('hr_ci_hi')))}"
        if i and p is not None:
            later, earlier = _num(r.get("n_later")), _num(r.get("n_earlier"))
            t += f", later in {_fmt(later)} and earlier in {_fmt(earlier)} (LR, seed) pairs (p {_fmt(p)})"
            delays = p < DELAY_ALPHA and (later or 0) > (earlier or 0)
            t += ": it delays divergence" if delays else ": no detectable delay"
        parts.append(t)
    return (f"Time to divergence (`{_relpath(path)}`, task-gradient label, Kaplan–Meier; a delay is not "
            "a prevention, which the Div.% rows judge): "
            + "; ".join(parts) + ".")


def _relpath(p: Path) -> str:
    try:
        return Path(p).resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return Path(p).as_posix()


def render_readme(text: str, block: str) -> str:
    """``text`` with the content between the markers replaced by ``block``."""
    i, j = text.find(BEGIN), text.find(END)
    if i < 0 or j < 0 or j < i:
        raise ValueError(f"README has no {BEGIN} ... {END} markers")
    return text[:i] + BEGIN + "\n" + block.rstrip("\n") + "\n" + text[j:]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="rksp readme", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="do not write; exit 1 if the block is stale")
    p.add_argument("--readme", default=str(README), help="default: the repository's README.md")
    p.add_argument("--results", default=str(RESULTS), help="default: results/small")
    a = p.parse_args(argv)
    path = Path(a.readme)
    text = path.read_text(encoding="utf-8")
    new = render_readme(text, at_a_glance(a.results))
    if a.check:
        if new != text:
            print(f"{path}: the at-a-glance block is stale; run `rksp readme`", file=sys.stderr)
            return 1
        print(f"{path}: at-a-glance block up to date")
        return 0
    if new != text:
        path.write_text(new, encoding="utf-8")
        print(f"{path}: at-a-glance block rewritten")
    else:
        print(f"{path}: at-a-glance block already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
