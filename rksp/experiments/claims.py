"""Paper claims with computed verdicts: 'reproduced' / 'not reproduced' / 'inconclusive'.

A verdict is never typed by hand: every :class:`Claim` gets its ``verdict`` and ``rule`` from
one of the rule functions below, which return a :class:`Verdict` ``(verdict, rule)`` whose
``rule`` text states the rule with its parameters and the numbers that decided it.

Rules
-----
:func:`verdict_interval` (a value matches the paper's)
    tolerance ``tol = max(abs_tol, rel_tol * |paper|)`` (``|paper|`` = largest magnitude of
    the paper interval's ends). With our CI: *not reproduced* if the CI misses the paper value
    (interval) by more than ``tol``; else *inconclusive* if the CI is wider than ``max_width``;
    else *reproduced* (CI contains the paper value, or misses it by at most ``tol``).
    Without a CI: *reproduced* iff ``|ours - paper| <= tol`` (distance to the paper interval),
    else *not reproduced*. Always *inconclusive* when ours is NaN or ``n < min_n``.
:func:`verdict_direction` (an effect has the expected sign)
    significant = our CI excludes 0 and ``p < alpha`` (either alone when only one is given). *reproduced* if significant with the
    expected sign, *not reproduced* if significant with the opposite sign, else *inconclusive*
    (also when there is neither a CI nor a p-value, or the estimate is NaN).
:func:`verdict_better_than` ("a beats b", e.g. AUROC of M~1 vs the best gradient baseline)
    the paper's own criterion (Table 2 caption: "the M~1 CI lower bound exceeds the gradient
    baselines' upper bounds"): with both CIs, *reproduced* iff ``lo_a > hi_b + margin``
    (CIs don't overlap), *not reproduced* iff ``hi_a < lo_b`` (b's CI entirely above a's),
    else *inconclusive*. If a paired CI of ``a - b`` is given it decides instead:
    ``lo > margin`` reproduced, ``hi < 0`` not reproduced. If b has no CI, b's point is used
    in place of both of its bounds. NaN -> inconclusive.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pandas as pd

from rksp.experiments.stats import rate_difference

__all__ = ["VERDICTS", "REPRODUCED", "NOT_REPRODUCED", "INCONCLUSIVE", "Verdict", "Claim",
           "verdict_interval", "verdict_direction", "verdict_better_than", "claims_table", "to_markdown",
           "verdict_counts", "flips_to_change", "flip_note", "counts_direction_claim", "annotate_flip_fragility"]

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)


class Verdict(NamedTuple):
    verdict: str
    rule: str


# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------
def _nan(x: Any) -> bool:
    if x is None:
        return True
    try:
        return math.isnan(float(x))
    except (TypeError, ValueError):
        return True


def _ci(ci: Any) -> tuple[float, float] | None:
    """A usable (lo, hi) with finite ends, or None."""
    if ci is None:
        return None
    try:
        lo, hi = (float(v) for v in ci)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    return (lo, hi) if lo <= hi else (hi, lo)


def _paper_interval(paper: Any) -> tuple[float, float]:
    if isinstance(paper, (list, tuple)) or (hasattr(paper, "__len__") and not isinstance(paper, str)):
        lo, hi = (float(v) for v in paper)
        return (lo, hi) if lo <= hi else (hi, lo)
    v = float(paper)
    return v, v


def _g(x: float) -> str:
    return "nan" if _nan(x) else f"{float(x):.4g}"


def _fmt_interval(iv: tuple[float, float]) -> str:
    return _g(iv[0]) if iv[0] == iv[1] else f"[{_g(iv[0])}, {_g(iv[1])}]"


def _gap(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Distance between two closed intervals (0 when they overlap)."""
    return max(0.0, a[0] - b[1], b[0] - a[1])


# ----------------------------------------------------------------------------------------
# rules
# ----------------------------------------------------------------------------------------
def verdict_interval(ours: float, ci: Sequence[float] | None, paper: float | Sequence[float],
                     rel_tol: float = 0.05, abs_tol: float = 0.0, max_width: float | None = None,
                     n: int | None = None, min_n: int | None = None) -> Verdict:
    """Does our value (with its CI) match the paper value or interval? See module doc."""
    try:
        p = _paper_interval(paper)
    except (TypeError, ValueError):
        p = (float("nan"), float("nan"))
    tol = max(float(abs_tol), float(rel_tol) * max(abs(p[0]), abs(p[1])))
    c = _ci(ci)
    head = (f"paper {_fmt_interval(p)}, tol = {_g(tol)} (rel {_g(rel_tol)}, abs {_g(abs_tol)})"
            + (f", max CI width {_g(max_width)}" if max_width is not None else "")
            + (f", min n {min_n}" if min_n is not None else ""))
    if _nan(ours) or any(_nan(v) for v in p):
        return Verdict(INCONCLUSIVE, f"{head}: our value is NaN")
    if min_n is not None and (n is None or _nan(n) or n < min_n):
        return Verdict(INCONCLUSIVE, f"{head}: n = {n} < {min_n}")
    if c is None:
        d = _gap((float(ours), float(ours)), p)
        v = REPRODUCED if d <= tol else NOT_REPRODUCED
        rel = "<=" if d <= tol else ">"
        return Verdict(v, f"{head}; no CI: |ours - paper| = {_g(d)} {rel} tol (ours {_g(ours)})")
    d = _gap(c, p)
    ci_txt = f"our CI [{_g(c[0])}, {_g(c[1])}]"
    if d > tol:
        return Verdict(NOT_REPRODUCED, f"{head}: {ci_txt} misses the paper by {_g(d)} > tol")
    width = c[1] - c[0]
    if max_width is not None and width > max_width:
        return Verdict(INCONCLUSIVE, f"{head}: {ci_txt} width {_g(width)} > max width")
    how = "contains the paper value" if d == 0 else f"misses the paper by {_g(d)} <= tol"
    return Verdict(REPRODUCED, f"{head}: {ci_txt} {how}")


def _sign(expected: Any) -> int:
    if isinstance(expected, str):
        e = expected.strip().lower()
        if e in ("+", "positive", "increase", "increases", "up", "higher", ">0"):
            return 1
        if e in ("-", "negative", "decrease", "decreases", "down", "lower", "<0"):
            return -1
        raise ValueError(f"expected_sign {expected!r}: use +1/-1 or 'increase'/'decrease'")
    e = float(expected)
    if not e or math.isnan(e):
        raise ValueError(f"expected_sign must be non-zero, got {expected!r}")
    return 1 if e > 0 else -1


def verdict_direction(delta: float, ci: Sequence[float] | None = None, expected_sign: Any = -1,
                      p: float | None = None, alpha: float = 0.05) -> Verdict:
    """Does the effect ``delta`` have the expected sign, significantly? See module doc."""
    want = _sign(expected_sign)
    c = _ci(ci)
    name = "negative" if want < 0 else "positive"
    head = (f"expected {name}; significant if the CI excludes 0 and p < {_g(alpha)} "
            "(either alone when only one is given)")
    has_p = not _nan(p)
    if c is None and not has_p:
        return Verdict(INCONCLUSIVE, f"{head}: no CI and no p-value (delta {_g(delta)})")
    ci_sig = c is not None and (c[0] > 0 or c[1] < 0)
    p_sig = has_p and float(p) < alpha
    # sign of the effect: the point estimate, else the side of 0 the CI lies on
    if not _nan(delta) and float(delta) != 0:
        got = 1 if float(delta) > 0 else -1
    elif ci_sig:
        got = 1 if c[0] > 0 else -1
    else:
        return Verdict(INCONCLUSIVE, f"{head}: delta {_g(delta)} has no sign")
    facts = f"delta {_g(delta)}" + (f", CI [{_g(c[0])}, {_g(c[1])}]" if c else "") + (f", p {_g(p)}" if has_p else "")
    significant = (ci_sig and p_sig) if (c is not None and has_p) else (ci_sig or p_sig)
    if not significant:
        return Verdict(INCONCLUSIVE, f"{head}: {facts}: not significant")
    if got == want:
        return Verdict(REPRODUCED, f"{head}: {facts}: significant, expected sign")
    return Verdict(NOT_REPRODUCED, f"{head}: {facts}: significant, opposite sign")


def verdict_better_than(ours_a: float, ci_a: Sequence[float] | None, ours_b: float,
                        ci_b: Sequence[float] | None = None, diff_ci: Sequence[float] | None = None,
                        margin: float = 0.0) -> Verdict:
    """Is a better (larger) than b beyond the uncertainty? See module doc."""
    d = _ci(diff_ci)
    if d is not None:
        head = f"paired CI of a - b must exceed {_g(margin)}"
        txt = f"a {_g(ours_a)}, b {_g(ours_b)}, CI(a - b) [{_g(d[0])}, {_g(d[1])}]"
        if d[0] > margin:
            return Verdict(REPRODUCED, f"{head}: {txt}: above")
        if d[1] < 0:
            return Verdict(NOT_REPRODUCED, f"{head}: {txt}: b significantly better")
        return Verdict(INCONCLUSIVE, f"{head}: {txt}: includes {_g(margin) if margin > 0 else 0}")
    head = "non-overlapping CIs: lo(a) > hi(b)" + (f" + {_g(margin)}" if margin else "")
    if _nan(ours_a) or _nan(ours_b):
        return Verdict(INCONCLUSIVE, f"{head}: a {_g(ours_a)}, b {_g(ours_b)}: NaN")
    a = _ci(ci_a)
    if a is None:
        return Verdict(INCONCLUSIVE, f"{head}: a has no CI (a {_g(ours_a)}, b {_g(ours_b)})")
    b = _ci(ci_b)
    if b is None:
        b = (float(ours_b), float(ours_b))
        btxt = f"b {_g(ours_b)} (no CI: point used)"
    else:
        btxt = f"b {_g(ours_b)} [{_g(b[0])}, {_g(b[1])}]"
    txt = f"a {_g(ours_a)} [{_g(a[0])}, {_g(a[1])}], {btxt}"
    if a[0] > b[1] + margin:
        return Verdict(REPRODUCED, f"{head}: {txt}: a above b")
    if a[1] < b[0]:
        return Verdict(NOT_REPRODUCED, f"{head}: {txt}: b above a")
    return Verdict(INCONCLUSIVE, f"{head}: {txt}: overlap")


# ----------------------------------------------------------------------------------------
# claims
# ----------------------------------------------------------------------------------------
@dataclass
class Claim:
    """One paper claim against our number. Build it with :meth:`interval`, :meth:`direction`,
    :meth:`better_than`, or :meth:`from_verdict` (a :class:`Verdict` from a rule function);
    the verdict is checked to be one of :data:`VERDICTS`."""

    id: str
    description: str
    paper_value: float | tuple[float, float] | None
    ours: float
    ours_ci: tuple[float, float] | None
    rule: str
    verdict: str
    notes: str = field(default="")

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
        if self.ours_ci is not None:
            self.ours_ci = tuple(float(v) for v in self.ours_ci)  # type: ignore[assignment]
        if isinstance(self.paper_value, list):
            self.paper_value = tuple(self.paper_value)  # type: ignore[assignment]

    @classmethod
    def from_verdict(cls, id: str, description: str, paper_value: Any, ours: float,
                     ours_ci: Sequence[float] | None, result: Verdict, notes: str = "") -> "Claim":
        return cls(id, description, paper_value, _float(ours), _ci_or_none(ours_ci), result.rule,
                   result.verdict, notes)

    @classmethod
    def interval(cls, id: str, description: str, paper_value: Any, ours: float,
                 ours_ci: Sequence[float] | None = None, notes: str = "", **rule_kw: Any) -> "Claim":
        """Claim judged by :func:`verdict_interval` (rule_kw: rel_tol, abs_tol, max_width, n, min_n)."""
        return cls.from_verdict(id, description, paper_value, ours, ours_ci,
                                verdict_interval(ours, ours_ci, paper_value, **rule_kw), notes)

    @classmethod
    def direction(cls, id: str, description: str, paper_value: Any, ours: float,
                  ours_ci: Sequence[float] | None = None, notes: str = "", **rule_kw: Any) -> "Claim":
        """Claim judged by :func:`verdict_direction` on ``ours`` = the effect (rule_kw: expected_sign, p, alpha)."""
        return cls.from_verdict(id, description, paper_value, ours, ours_ci,
                                verdict_direction(ours, ours_ci, **rule_kw), notes)

    @classmethod
    def better_than(cls, id: str, description: str, paper_value: Any, ours: float,
                    ours_ci: Sequence[float] | None, ours_b: float, ci_b: Sequence[float] | None = None,
                    notes: str = "", **rule_kw: Any) -> "Claim":
        """Claim judged by :func:`verdict_better_than` (a = ours, b = the competitor)."""
        return cls.from_verdict(id, description, paper_value, ours, ours_ci,
                                verdict_better_than(ours, ours_ci, ours_b, ci_b, **rule_kw), notes)


def _float(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def _ci_or_none(ci: Any) -> tuple[float, float] | None:
    if ci is None:
        return None
    lo, hi = (_float(v) for v in ci)
    return (lo, hi)


def _fmt_num(x: Any, digits: int) -> str:
    if x is None:
        return ""
    if isinstance(x, (tuple, list)):
        return "[" + ", ".join(_fmt_num(v, digits) for v in x) + "]"
    if _nan(x):
        return "NaN"
    return f"{float(x):.{digits}g}"


def claims_table(claims: Iterable[Claim], digits: int = 4) -> pd.DataFrame:
    """DataFrame with columns id, claim, paper, ours, ci, verdict, rule, notes (paper / ci as text)."""
    rows = [{"id": c.id, "claim": c.description, "paper": _fmt_num(c.paper_value, digits),
             "ours": c.ours, "ci": _fmt_num(c.ours_ci, digits), "verdict": c.verdict, "rule": c.rule,
             "notes": c.notes}
            for c in claims]
    return pd.DataFrame(rows, columns=["id", "claim", "paper", "ours", "ci", "verdict", "rule", "notes"])


def verdict_counts(claims: Iterable[Claim] | pd.DataFrame) -> dict[str, int]:
    vs = list(claims["verdict"]) if isinstance(claims, pd.DataFrame) else [c.verdict for c in claims]
    return {v: vs.count(v) for v in VERDICTS}


def to_markdown(table: pd.DataFrame | Iterable[Claim], digits: int = 4) -> str:
    """GitHub markdown of a claims table (or of a list of claims); '|' in text is escaped."""
    df = table if isinstance(table, pd.DataFrame) else claims_table(table, digits)

    def cell(v: Any) -> str:
        if isinstance(v, float):
            v = _fmt_num(v, digits)
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------
# robustness of count-based verdicts to label flips (another CPU kernel set: docs/kernel-sets.md)
# ----------------------------------------------------------------------------------------
def flips_to_change(verdict_of, ka: int, na: int, kb: int, nb: int, max_flips: int) -> int | None:
    """Fewest divergence-label flips among the ``na + nb`` runs of a two-group claim (at most
    ``max_flips``) after which ``verdict_of(ka', na, kb', nb)`` differs from the verdict on the
    observed counts; None if none is found. A flip moves one count by one; for t flips split as
    (fa, fb) the extreme reassignments ka ± fa, kb ± fb are tried (they move the rate difference,
    on which the rules turn, the furthest either way)."""
    base = verdict_of(ka, na, kb, nb)
    seen = {(ka, kb)}
    for t in range(1, max_flips + 1):
        for fa in range(t + 1):
            fb = t - fa
            for a in {max(0, ka - fa), min(na, ka + fa)}:
                for b in {max(0, kb - fb), min(nb, kb + fb)}:
                    if (a, b) in seen:
                        continue
                    seen.add((a, b))
                    if verdict_of(a, na, b, nb) != base:
                        return t
    return None


def flip_note(verdict_of, ka: int, na: int, kb: int, nb: int, rate: float | None = None) -> str:
    """'' or a note saying that the verdict turns on as many label flips as another CPU kernel set
    is measured to cause among these runs (``ceil(rate * (na + nb))``, rate
    ``defaults.KERNEL_FLIP_RATE``)."""
    from rksp import defaults
    rate = defaults.KERNEL_FLIP_RATE if rate is None else rate
    budget = math.ceil(rate * (na + nb))
    if not (na and nb) or budget < 1:
        return ""
    t = flips_to_change(verdict_of, int(ka), int(na), int(kb), int(nb), budget)
    if t is None:
        return ""
    return (f"fragile: {t} flipped divergence label(s) of {na + nb} runs change this verdict; another CPU "
            f"kernel set flips up to {rate:.0%} of labels (docs/kernel-sets.md), i.e. {budget} here")


def counts_direction_claim(id: str, description: str, paper_value: Any, ka: int, na: int, kb: int, nb: int,
                           expected_sign: int = -1, notes: str = '') -> Claim:
    """:meth:`Claim.direction` on the divergence rate of group a minus group b (pp) with Newcombe's
    CI and the Fisher p, from the counts; notes the counts and, when as many label flips as another
    CPU kernel set causes could change the verdict, says so (:func:`rksp.experiments.claims.flip_note`)."""
    def judged(a: int, n_a: int, b: int, n_b: int) -> Claim:
        if not (n_a and n_b):
            return Claim.direction(id, description, paper_value, math.nan, None, notes='a group has no finished run',
                                   expected_sign=expected_sign, p=math.nan)
        r = rate_difference(a, n_a, b, n_b)
        return Claim.direction(id, description, paper_value, 100 * r['delta'], (100 * r['lo'], 100 * r['hi']),
                               expected_sign=expected_sign, p=r['p'])
    c = judged(ka, na, kb, nb)
    c.notes = '; '.join(n for n in (c.notes, notes, flip_note(lambda *k: judged(*k).verdict, ka, na, kb, nb)) if n)
    return c


_COUNT = re.compile(r"(\d+)\s*/\s*(\d+)")


def annotate_flip_fragility(claims: pd.DataFrame, rate: float | None = None) -> pd.DataFrame:
    """Add :func:`flip_note` to the notes of every two-group divergence-rate claim of a claims table
    that lacks it (claims tables written before the builders added it). Such a claim is a direction
    rule on the rate difference (pp) whose notes begin with the two counts ``k/n``; the counts are
    taken as parsed only when they reproduce the claim's own number and verdict, else the row is
    left alone."""
    out = claims.copy()
    for i, row in out.iterrows():
        notes, rule = str(row.get("notes", "") or ""), str(row.get("rule", "") or "")
        if "fragile" in notes or not rule.startswith("expected "):
            continue
        m = _COUNT.findall(notes)
        if len(m) < 2:
            continue
        (ka, na), (kb, nb) = ((int(k), int(n)) for k, n in m[:2])
        if not (na and nb and ka <= na and kb <= nb):
            continue
        sign = +1 if rule.startswith("expected positive") else -1
        judged = lambda a, n_a, b, n_b: counts_direction_claim("x", "x", math.nan, a, n_a, b, n_b, sign)
        c = judged(ka, na, kb, nb)
        ours = float(row["ours"]) if not _nan(row.get("ours")) else float("nan")
        if not (math.isfinite(ours) and abs(c.ours - ours) < 1e-6 and c.verdict == row["verdict"]):
            continue                                   # not a rate difference of these counts
        note = flip_note(lambda *k: judged(*k).verdict, ka, na, kb, nb, rate)
        if note:
            out.at[i, "notes"] = f"{notes}; {note}" if notes else note
    return out


def verdicts_figure(claims: pd.DataFrame, title: str):
    """Verdict counts per source notebook, stacked (reproduced / not reproduced / inconclusive)."""
    import matplotlib.pyplot as plt
    counts = claims.groupby("source")["verdict"].value_counts().unstack(fill_value=0).reindex(columns=list(VERDICTS), fill_value=0)
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(counts) + 1.2))
    left = pd.Series(0, index=counts.index)
    colors = {"reproduced": "tab:green", "not reproduced": "tab:red", "inconclusive": "tab:gray"}
    for v in VERDICTS:
        ax.barh(counts.index, counts[v], left=left, color=colors[v], label=v)
        left = left + counts[v]
    ax.invert_yaxis(); ax.set_xlabel("claims"); ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title)
    return fig
