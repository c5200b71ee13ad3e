"""Paper claims with computed verdicts, judged on two criteria as replication studies report them.

A verdict is never typed by hand. Every :class:`Claim` carries what the rule needs (our value and
CI, the paper's value, the expected sign and p of an effect, how much information there is, and
whether a selection rule aimed at the value) and :func:`judge` derives two criteria and a verdict
from them by the one rule below. :func:`judge_claims` applies the rule to a whole claims table
after adjusting the p-values for multiplicity.

The rule (:data:`RULE_TEXT`, printed on every claims page)
-----------------------------------------------------------
Criteria:

``direction`` (effect claims only: the paper claims an effect with a sign)
    ``paper's direction`` when the effect is significant with the paper's sign, ``against`` when
    significant with the other sign, ``not significant`` otherwise. Significant = the
    multiplicity-adjusted p (``p_adjusted``, Holm over the family of tested claims) is below
    ``ALPHA`` **and** our CI excludes 0 (when there is a CI). A claim chosen as the best of k rows
    ("X has the lowest Div.%") has its raw p multiplied by k - 1 before Holm. An effect reported
    with a CI only gets a Wald p read off the CI (:func:`rksp.experiments.stats.p_from_ci`).
    ``n/a`` for value claims.
``size``
    ``consistent`` when the paper's value (or interval) lies inside our CI widened by the paper's
    rounding: half a unit of its last printed decimal (0.995 -> 0.0005, 96.4 -> 0.05, 0.16 ->
    0.005), never more than ``SIZE_REL_TOL_MAX`` (5 %) of its magnitude; without a CI, when our
    point is within that tolerance. ``inconsistent`` otherwise; ``n/a`` when the paper states no
    number.

Verdict, in this order:

1. ``matched by design`` when a selection rule of the regime targeted this value (``by_design``
   names the rule): it is not evidence either way and is counted apart.
2. ``inconclusive`` when our value is NaN, when there is too little information (``information``
   says why: fewer than ``MIN_EVENTS`` events or non-events, fewer than ``MIN_POINTS`` points of a
   correlation, ...) or when the evidence cannot test the paper's claim (``stand_in``: a stand-in
   dataset or random-init weights where the paper used the real ones).
3. ``not reproduced`` when the direction is ``against`` or the size is ``inconsistent`` (this
   includes a null whose CI excludes the paper's effect, and a significant effect whose CI
   excludes the paper's size).
4. ``reproduced`` when the size is ``consistent`` (or ``n/a``) and, for an effect, the direction is
   the paper's; for a value claim, when its CI is also no wider than ``max_width`` (if set).
5. ``inconclusive`` otherwise.

The rule is symmetric: it never says *reproduced* when our CI excludes the paper's value beyond
the paper's rounding, and a null says *not reproduced* as soon as its CI excludes the paper's
effect.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd

from rksp import defaults
from rksp.experiments.stats import holm, p_from_ci, rate_difference

__all__ = ["VERDICTS", "REPRODUCED", "NOT_REPRODUCED", "INCONCLUSIVE", "BY_DESIGN", "RULE_TEXT", "VALUE", "EFFECT",
           "ALPHA", "SIZE_REL_TOL_MAX", "rounding_tolerance", "MIN_EVENTS", "MIN_POINTS", "Claim", "judge", "judge_claims",
           "size_criterion", "direction_criterion", "claims_page", "claim_from_row", "events_information", "classes_information",
           "points_information", "claims_table", "to_markdown", "verdict_counts", "verdict_changes",
           "flips_to_change", "flip_note", "counts_direction_claim", "annotate_flip_fragility", "verdicts_figure"]

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive"
BY_DESIGN = "matched by design"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, BY_DESIGN)

VALUE, EFFECT = "value", "effect"
ALPHA = defaults.CLAIM_ALPHA                        # family-wise level of the direction criterion (after Holm)
SIZE_REL_TOL_MAX = defaults.CLAIM_SIZE_REL_TOL_MAX  # the rounding tolerance never exceeds this share of the paper's value
MAX_DECIMALS = 4        # a paper value is read with at most this many decimals (half a unit: 5e-5)
MIN_EVENTS = defaults.CLAIM_MIN_EVENTS              # fewer events (or non-events) over the compared runs: no verdict
MIN_POINTS = defaults.CLAIM_MIN_POINTS              # fewer points in a correlation / trend: no verdict

PAPER_DIRECTION, AGAINST, NOT_SIGNIFICANT, NA = "paper's direction", "against", "not significant", "n/a"
CONSISTENT, INCONSISTENT = "consistent", "inconsistent"

RULE_TEXT = (
    f"Two criteria per claim. **direction** (effects): significant when the Holm-adjusted p < {ALPHA} and our CI "
    f"excludes 0; 'paper's direction', 'against' or 'not significant' (a best-of-k claim multiplies its p by k - 1 "
    f"first). **size**: 'consistent' when the paper's value lies inside our CI widened by the paper's rounding (half a "
    f"unit of its last printed decimal, at most {SIZE_REL_TOL_MAX:.0%} of its magnitude), else 'inconsistent'; 'n/a' "
    f"without a paper number. **verdict**: "
    f"'matched by design' when a selection rule of the regime aimed at the value; 'inconclusive' with too little "
    f"information (< {MIN_EVENTS} events or non-events, < {MIN_POINTS} correlation points), a NaN, or stand-in "
    f"evidence (stand-in data, random-init weights); 'not reproduced' when direction is 'against' or size is "
    f"'inconsistent'; 'reproduced' when size is consistent (or n/a) and an effect has the paper's direction (a value's "
    f"CI no wider than its stated maximum); else 'inconclusive'.")

# the values a selection rule of the regime targeted (docs/regime.md): not evidence, counted apart
SELECTION_TARGETS = {
    **{f"T1-m-{n}": "docs/regime.md rule 1 chose the init to put M≈1 at init near Table 1"
       for n in ("pre_ln", "post_ln", "rmsnorm", "deepnorm", "subln", "none")},
    "T1-m-postln-gt-preln": "docs/regime.md rule 1 chose the init to put M≈1 at init near Table 1 (its ordering too)",
    "T1-m-nonorm-gt-postln": "docs/regime.md rule 1 chose the init to put M≈1 at init near Table 1 (its ordering too)",
    "T3-none-rate": "docs/regime.md chose the LR band so that No control diverges in 40–90 % of runs",
}


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


def _float(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def _ci(ci: Any) -> tuple[float, float] | None:
    """A usable (lo, hi), or None: no NaN end, at most one infinite end (a one-sided bound)."""
    if ci is None:
        return None
    try:
        lo, hi = (float(v) for v in ci)
    except (TypeError, ValueError):
        return None
    if math.isnan(lo) or math.isnan(hi) or (math.isinf(lo) and math.isinf(hi)):
        return None
    return (lo, hi) if lo <= hi else (hi, lo)


def _paper_interval(paper: Any) -> tuple[float, float] | None:
    """The paper's value as a closed interval, or None when it states no number."""
    if paper is None or isinstance(paper, str):
        return None
    try:
        if isinstance(paper, (list, tuple, np.ndarray)):
            lo, hi = (float(v) for v in paper)
        else:
            lo = hi = float(paper)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    return (lo, hi) if lo <= hi else (hi, lo)


def _g(x: Any) -> str:
    return "nan" if _nan(x) else f"{float(x):.4g}"


def _fmt_interval(iv: tuple[float, float]) -> str:
    return _g(iv[0]) if iv[0] == iv[1] else f"[{_g(iv[0])}, {_g(iv[1])}]"


def _gap(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Distance between two closed intervals (0 when they overlap)."""
    return max(0.0, a[0] - b[1], b[0] - a[1])


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


# ----------------------------------------------------------------------------------------
# minimum information
# ----------------------------------------------------------------------------------------
def events_information(k_a: int, n_a: int, k_b: int, n_b: int, min_events: int = MIN_EVENTS) -> str:
    """'' when two groups' counts carry enough information for a verdict on a rate difference:
    both groups have runs and, over both, at least ``min_events`` events and as many non-events;
    else the reason."""
    k_a, n_a, k_b, n_b = (int(v) for v in (k_a, n_a, k_b, n_b))
    if not (n_a and n_b):
        return "a group has no finished run"
    ev, non = k_a + k_b, (n_a - k_a) + (n_b - k_b)
    if ev < min_events or non < min_events:
        return f"{ev} events and {non} non-events over both groups (need >= {min_events} of each)"
    return ""


def classes_information(n_pos: Any, n_neg: Any, min_events: int = MIN_EVENTS) -> str:
    """'' when an AUROC has at least ``min_events`` positives and negatives, else the reason."""
    if _nan(n_pos) or _nan(n_neg):
        return "class counts unknown"
    if int(n_pos) < min_events or int(n_neg) < min_events:
        return f"{int(n_pos)} positive and {int(n_neg)} negative runs (need >= {min_events} of each)"
    return ""


def points_information(n: Any, min_points: int = MIN_POINTS, what: str = "points") -> str:
    """'' when a correlation or trend has at least ``min_points`` points, else the reason."""
    if _nan(n) or int(n) < min_points:
        return f"{0 if _nan(n) else int(n)} {what} (need >= {min_points})"
    return ""


# ----------------------------------------------------------------------------------------
# the criteria and the rule
# ----------------------------------------------------------------------------------------
def rounding_tolerance(paper: Any) -> float:
    """Half a unit of the last decimal the paper printed (read off the shortest decimal form of
    each end of its value, at most :data:`MAX_DECIMALS` decimals, trailing zeros dropped), capped at
    :data:`SIZE_REL_TOL_MAX` of its magnitude; 0 when the paper states no number."""
    p = _paper_interval(paper)
    if p is None:
        return 0.0

    def half_unit(v: float) -> float:
        text = f"{v:.{MAX_DECIMALS}f}".rstrip("0")
        decimals = len(text.split(".")[1]) if "." in text else 0
        return 0.5 * 10.0 ** (-decimals)
    tol = max(half_unit(p[0]), half_unit(p[1]))
    return min(tol, SIZE_REL_TOL_MAX * max(abs(p[0]), abs(p[1])))


def size_criterion(ours: Any, ci: Any, paper: Any) -> tuple[str, str]:
    """(``consistent`` | ``inconsistent`` | ``n/a``, text): is the paper's value inside our CI
    (or at our point), up to the paper's rounding (:func:`rounding_tolerance`)?"""
    p = _paper_interval(paper)
    if p is None:
        return NA, "size n/a: the paper states no number"
    if _nan(ours):
        return NA, "size n/a: our value is NaN"
    tol = rounding_tolerance(paper)
    c = _ci(ci)
    ours_iv, what = (c, f"our CI [{_g(c[0])}, {_g(c[1])}]") if c else ((float(ours), float(ours)),
                                                                       f"our value {_g(ours)} (no CI)")
    d = _gap(ours_iv, p)
    crit = CONSISTENT if d <= tol else INCONSISTENT
    how = "contains" if d == 0 else f"misses by {_g(d)} {'<=' if d <= tol else '>'} rounding {_g(tol)}"
    return crit, f"size {crit}: {what} {how} the paper {_fmt_interval(p)}"


def direction_criterion(delta: Any, ci: Any, expected_sign: Any, p_adjusted: Any,
                        alpha: float = ALPHA) -> tuple[str, str]:
    """(``paper's direction`` | ``against`` | ``not significant``, text) for an effect ``delta``."""
    want = _sign(expected_sign)
    c = _ci(ci)
    if _nan(p_adjusted):
        return NOT_SIGNIFICANT, "direction not significant: no p-value"
    ci_excl = c is None or c[0] > 0 or c[1] < 0
    sig = float(p_adjusted) < alpha and ci_excl
    if not _nan(delta) and float(delta) != 0:
        got = 1 if float(delta) > 0 else -1
    elif c is not None and (c[0] > 0 or c[1] < 0):
        got = 1 if c[0] > 0 else -1
    else:
        return NOT_SIGNIFICANT, f"direction not significant: effect {_g(delta)} has no sign"
    facts = (f"effect {_g(delta)} (paper's sign {'+' if want > 0 else '-'}), p_adj {_g(p_adjusted)}"
             + (f", CI [{_g(c[0])}, {_g(c[1])}]" if c else ""))
    if not sig:
        return NOT_SIGNIFICANT, f"direction not significant: {facts}"
    return (PAPER_DIRECTION if got == want else AGAINST), f"direction {'paper' if got == want else 'against'}: {facts}"


@dataclass
class Claim:
    """One paper claim against our number. ``kind`` is ``'value'`` (our number should match the
    paper's) or ``'effect'`` (an effect with the paper's sign and, if stated, size). Build one with
    :meth:`interval` (value) or :meth:`direction` (effect); ``direction``, ``size``,
    ``p_adjusted``, ``verdict`` and ``rule`` are derived by :func:`judge` (module doc)."""

    id: str
    description: str
    paper_value: Any
    ours: float
    ours_ci: tuple[float, float] | None
    kind: str = VALUE
    expected_sign: int | None = None
    p: float = float("nan")
    p_method: str = ""
    max_width: float | None = None
    information: str = ""
    stand_in: str = ""
    by_design: str = ""
    choice_k: int = 1
    notes: str = ""
    p_adjusted: float = float("nan")
    direction: str = NA
    size: str = NA
    verdict: str = INCONCLUSIVE
    rule: str = ""

    def __post_init__(self) -> None:
        if self.kind not in (VALUE, EFFECT):
            raise ValueError(f"kind must be 'value' or 'effect', got {self.kind!r}")
        if self.kind == EFFECT:
            self.expected_sign = _sign(self.expected_sign if self.expected_sign is not None else -1)
        self.ours = _float(self.ours)
        self.ours_ci = _ci_or_none(self.ours_ci)
        if isinstance(self.paper_value, list):
            self.paper_value = tuple(self.paper_value)
        self.p = _float(self.p)
        if not self.by_design:
            self.by_design = SELECTION_TARGETS.get(self.id, "")
        if self.kind == EFFECT and _nan(self.p) and _ci(self.ours_ci) and not _nan(self.ours):
            self.p = p_from_ci(self.ours, *self.ours_ci)
            self.p_method = self.p_method or "Wald p read off the CI"
        judge(self)

    @property
    def p_choice(self) -> float:
        """The raw p with the best-of-k factor: p x (k - 1), capped at 1 (NaN without a p)."""
        return min(1.0, self.p * max(1, self.choice_k - 1)) if not _nan(self.p) else float("nan")

    @property
    def p_raw_for_family(self) -> float:
        """The p that enters Holm (:attr:`p_choice`); NaN when the claim is not tested (a value claim,
        matched by design, too little information, stand-in evidence, no value)."""
        if self.kind != EFFECT or self.by_design or self.information or self.stand_in or _nan(self.ours):
            return float("nan")
        return self.p_choice

    @classmethod
    def interval(cls, id: str, description: str, paper_value: Any, ours: float,
                 ours_ci: Sequence[float] | None = None, notes: str = "", *, max_width: float | None = None,
                 n: int | None = None, min_n: int | None = None, information: str = "", stand_in: str = "",
                 by_design: str = "") -> "Claim":
        """A value claim: our number (with its CI) should match the paper's value or interval.
        ``n < min_n`` makes it inconclusive (too little information)."""
        if min_n is not None and not information and (n is None or _nan(n) or int(n) < min_n):
            information = f"n = {n} < {min_n}"
        return cls(id, description, paper_value, ours, ours_ci, VALUE, None, notes=notes, max_width=max_width,
                   information=information, stand_in=stand_in, by_design=by_design)

    @classmethod
    def direction(cls, id: str, description: str, paper_value: Any, ours: float,
                  ours_ci: Sequence[float] | None = None, notes: str = "", *, expected_sign: Any = -1,
                  p: float | None = None, p_method: str = "", information: str = "", stand_in: str = "",
                  by_design: str = "", choice_k: int = 1) -> "Claim":
        """An effect claim: ``ours`` is the effect (its paper value on the same scale, or None when the
        paper gives only a sign), with its CI and p."""
        return cls(id, description, paper_value, ours, ours_ci, EFFECT, expected_sign,
                   p=float("nan") if p is None else p, p_method=p_method, information=information,
                   stand_in=stand_in, by_design=by_design, choice_k=choice_k, notes=notes)


def _ci_or_none(ci: Any) -> tuple[float, float] | None:
    if ci is None:
        return None
    try:
        lo, hi = (_float(v) for v in ci)
    except TypeError:
        return None
    return (lo, hi)


def judge(c: Claim, p_adjusted: float | None = None) -> Claim:
    """Set ``c``'s criteria, ``p_adjusted``, verdict and rule text (module doc). ``p_adjusted``:
    the claim's Holm-adjusted p in its family; None = its own p (times k - 1), unadjusted."""
    c.p_adjusted = c.p_raw_for_family if p_adjusted is None else _float(p_adjusted)
    c.size, size_txt = size_criterion(c.ours, c.ours_ci, c.paper_value)
    parts = [size_txt]
    if c.kind == EFFECT:
        # claims outside the tested family (matched by design, too little information, stand-in) still
        # report their direction, on the unadjusted p (times k - 1)
        tested = not _nan(c.p_adjusted)
        p_dir = c.p_adjusted if tested else c.p_choice
        c.direction, dir_txt = direction_criterion(c.ours, c.ours_ci, c.expected_sign, p_dir)
        if not tested and not _nan(c.p):
            dir_txt = dir_txt.replace("p_adj", "p (unadjusted: not in the tested family)")
        if c.p_method:
            dir_txt += f" ({c.p_method}" + (f"; best of {c.choice_k} rows: p x {c.choice_k - 1}" if c.choice_k > 2
                                            else "") + ")"
        parts.insert(0, dir_txt)
    else:
        c.direction = NA
    if c.by_design:
        c.verdict, why = BY_DESIGN, f"matched by design ({c.by_design})"
    elif _nan(c.ours):
        c.verdict, why = INCONCLUSIVE, "inconclusive: our value is NaN"
    elif c.information:
        c.verdict, why = INCONCLUSIVE, f"inconclusive: too little information ({c.information})"
    elif c.stand_in:
        c.verdict, why = INCONCLUSIVE, f"inconclusive: stand-in evidence ({c.stand_in})"
    elif c.direction == AGAINST or c.size == INCONSISTENT:
        c.verdict = NOT_REPRODUCED
        why = "not reproduced: " + ("direction against the paper" if c.direction == AGAINST else "size inconsistent")
    elif c.kind == EFFECT:
        ok = c.direction == PAPER_DIRECTION
        c.verdict = REPRODUCED if ok else INCONCLUSIVE
        why = "reproduced: paper's direction, size " + c.size if ok else "inconclusive: not significant, size " + c.size
    else:
        c_ci = _ci(c.ours_ci)
        wide = c.max_width is not None and c_ci is not None and c_ci[1] - c_ci[0] > c.max_width
        c.verdict = INCONCLUSIVE if wide else REPRODUCED
        why = (f"inconclusive: CI width {_g(c_ci[1] - c_ci[0])} > {_g(c.max_width)}" if wide
               else "reproduced: size consistent")
    c.rule = f"{why} | " + "; ".join(parts)
    return c


# ----------------------------------------------------------------------------------------
# tables
# ----------------------------------------------------------------------------------------
def _fmt_num(x: Any, digits: int) -> str:
    if x is None:
        return ""
    if isinstance(x, (tuple, list)):
        return "[" + ", ".join(_fmt_num(v, digits) for v in x) + "]"
    if _nan(x):
        return "NaN"
    return f"{float(x):.{digits}g}"


COLUMNS = ["id", "claim", "paper", "ours", "ci", "verdict", "direction", "size", "p", "p_adjusted", "rule", "notes",
           "kind", "expected_sign", "p_method", "paper_lo", "paper_hi", "ci_lo", "ci_hi", "max_width",
           "information", "stand_in", "by_design", "choice_k"]


def claims_table(claims: Iterable[Claim], digits: int = 4) -> pd.DataFrame:
    """One row per claim: the display columns (paper / ci as text) then the numbers the rule used,
    so that :func:`judge_claims` can judge the table again."""
    rows = []
    for c in claims:
        p = _paper_interval(c.paper_value)
        ci = _ci_or_none(c.ours_ci)
        rows.append({"id": c.id, "claim": c.description, "paper": _fmt_num(c.paper_value, digits), "ours": c.ours,
                     "ci": _fmt_num(c.ours_ci, digits), "verdict": c.verdict, "direction": c.direction,
                     "size": c.size, "p": c.p, "p_adjusted": c.p_adjusted, "rule": c.rule, "notes": c.notes,
                     "kind": c.kind, "expected_sign": c.expected_sign if c.expected_sign else float("nan"),
                     "p_method": c.p_method, "paper_lo": p[0] if p else float("nan"),
                     "paper_hi": p[1] if p else float("nan"), "ci_lo": ci[0] if ci else float("nan"),
                     "ci_hi": ci[1] if ci else float("nan"),
                     "max_width": float("nan") if c.max_width is None else c.max_width,
                     "information": c.information, "stand_in": c.stand_in, "by_design": c.by_design,
                     "choice_k": c.choice_k})
    return pd.DataFrame(rows, columns=COLUMNS)


def _text(v: Any) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def claim_from_row(row: Any) -> Claim:
    """Rebuild a :class:`Claim` from a row of :func:`claims_table` (e.g. read back from CSV)."""
    g = row.get if hasattr(row, "get") else (lambda k, d=None: getattr(row, k, d))
    lo, hi = _float(g("paper_lo")), _float(g("paper_hi"))
    paper = None if _nan(lo) else (lo if lo == hi else (lo, hi))
    ci = None if _nan(g("ci_lo")) else (_float(g("ci_lo")), _float(g("ci_hi")))
    kind = _text(g("kind")) or VALUE
    mw = _float(g("max_width"))
    return Claim(str(g("id")), _text(g("claim")), paper, _float(g("ours")), ci, kind,
                 int(_float(g("expected_sign"))) if kind == EFFECT else None, p=_float(g("p")),
                 p_method=_text(g("p_method")), max_width=None if _nan(mw) else mw,
                 information=_text(g("information")), stand_in=_text(g("stand_in")),
                 by_design=_text(g("by_design")), choice_k=1 if _nan(g("choice_k")) else int(_float(g("choice_k"))),
                 notes=_text(g("notes")))


def judge_claims(table: pd.DataFrame) -> pd.DataFrame:
    """Judge every claim of a claims table (one or many notebooks) by the rule, with Holm's
    adjustment over the family of tested claims (effects with a p, not matched by design, enough
    information, real evidence). Returns the table with ``p_adjusted``, ``direction``, ``size``,
    ``verdict`` and ``rule`` recomputed; other columns (``source``) are kept."""
    claims = [claim_from_row(r) for r in table.to_dict("records")]
    adj = holm([c.p_raw_for_family for c in claims])
    for c, pa in zip(claims, adj):
        judge(c, pa)
        if not _nan(pa):
            c.rule += f"; Holm over {int(np.isfinite(adj).sum())} tested claims"
    out = claims_table(claims)
    for col in table.columns:
        if col not in out.columns:
            out.insert(0, col, table[col].to_numpy())
    return out


def verdict_counts(claims: Iterable[Claim] | pd.DataFrame) -> dict[str, int]:
    vs = list(claims["verdict"]) if isinstance(claims, pd.DataFrame) else [c.verdict for c in claims]
    return {v: vs.count(v) for v in VERDICTS}


def verdict_changes(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """Old verdict -> new verdict per claim id (ids in either table), with the new rule's reason."""
    o = old.drop_duplicates("id").set_index("id")["verdict"]
    n = new.drop_duplicates("id").set_index("id")
    ids = list(dict.fromkeys(list(new["id"]) + list(old["id"])))
    rows = []
    for i in ids:
        ov = o.get(i, "(new claim)")
        nv = n["verdict"].get(i, "(dropped)")
        reason = str(n["rule"].get(i, "")).split(" | ")[0] if i in n.index else "no longer built"
        rows.append({"id": i, "old": ov, "new": nv, "changed": ov != nv, "reason": reason})
    return pd.DataFrame(rows, columns=["id", "old", "new", "changed", "reason"])


DISPLAY = ["id", "claim", "paper", "ours", "ci", "direction", "size", "p", "p_adjusted", "verdict", "rule", "notes"]


def to_markdown(table: pd.DataFrame | Iterable[Claim], digits: int = 4, columns: Sequence[str] | None = None) -> str:
    """GitHub markdown of a claims table (or of a list of claims); '|' in text is escaped."""
    df = table if isinstance(table, pd.DataFrame) else claims_table(table, digits)
    if columns is not None:
        df = df[[c for c in columns if c in df.columns]]

    def cell(v: Any) -> str:
        if isinstance(v, float):
            v = _fmt_num(v, digits)
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def claims_page(claims: pd.DataFrame, profile: str, previous: pd.DataFrame | None = None,
                previous_label: str = ("the claims committed before issue 20 (the old rules, on runs trained on "
                                       "another machine: a change can come from the rule or from the runs)")) -> str:
    """The markdown claims page: the rule, the verdict counts, the claims (display columns) and,
    given the ``previous`` claims table, the old -> new verdict of every claim with the reason."""
    counts = verdict_counts(claims)
    head = (f"# Claims: profile `{profile}`\n\n"
            "Generated by notebooks/12_claims.ipynb from the claims of notebooks 01–11; every verdict is computed by "
            "the rule below (rksp/experiments/claims.py), never typed.\n\n"
            f"## The rule\n\n{RULE_TEXT}\n\n"
            "## Counts\n\n" + ", ".join(f"{v}: **{n}**" for v, n in counts.items()) + f" (of {len(claims)})\n\n"
            "## Claims\n\n")
    body = to_markdown(claims, columns=["source"] + DISPLAY)
    if previous is None or not len(previous):
        return head + body
    ch = verdict_changes(previous, claims)
    moved = ch[ch["changed"]]
    return (head + body + f"\n## Verdicts changed since {previous_label}\n\n"
            f"{len(moved)} of {len(ch)} claim ids changed verdict (new claims and dropped ones included).\n\n"
            + to_markdown(moved.drop(columns="changed")))


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
    rate = defaults.KERNEL_FLIP_RATE if rate is None else rate
    budget = math.ceil(rate * (na + nb))
    if not (na and nb) or budget < 1:
        return ""
    t = flips_to_change(verdict_of, int(ka), int(na), int(kb), int(nb), budget)
    if t is None:
        return ""
    return (f"fragile: {t} flipped divergence label(s) of {na + nb} runs change this verdict (before the "
            f"multiplicity adjustment); another CPU kernel set flips up to {rate:.0%} of labels "
            f"(docs/kernel-sets.md), i.e. {budget} here")


def counts_direction_claim(id: str, description: str, paper_value: Any, ka: int, na: int, kb: int, nb: int,
                           expected_sign: int = -1, notes: str = '', choice_k: int = 1, stand_in: str = '') -> Claim:
    """:meth:`Claim.direction` on the divergence rate of group a minus group b (pp) with Newcombe's
    CI and the Fisher exact p, from the counts; too little information below ``MIN_EVENTS`` events
    or non-events; notes the counts and, when as many label flips as another CPU kernel set
    causes could change the verdict, says so (:func:`flip_note`)."""
    def judged(a: int, n_a: int, b: int, n_b: int) -> Claim:
        info = events_information(a, n_a, b, n_b)
        if not (n_a and n_b):
            return Claim.direction(id, description, paper_value, math.nan, None, information=info,
                                   expected_sign=expected_sign, choice_k=choice_k, stand_in=stand_in)
        r = rate_difference(a, n_a, b, n_b)
        return Claim.direction(id, description, paper_value, 100 * r['delta'], (100 * r['lo'], 100 * r['hi']),
                               expected_sign=expected_sign, p=r['p'], p_method="Fisher exact",
                               information=info, choice_k=choice_k, stand_in=stand_in)
    c = judged(ka, na, kb, nb)
    c.notes = '; '.join(n for n in (c.notes, notes, flip_note(lambda *k: judged(*k).verdict, ka, na, kb, nb)) if n)
    return c


_COUNT = re.compile(r"(\d+)\s*/\s*(\d+)")


def annotate_flip_fragility(claims: pd.DataFrame, rate: float | None = None) -> pd.DataFrame:
    """Add :func:`flip_note` to the notes of every two-group divergence-rate claim of a claims table
    that lacks it. Such a claim is an effect on the rate difference (pp, Fisher p) whose notes begin
    with the two counts ``k/n``; the counts are taken as parsed only when they reproduce the claim's
    own number, else the row is left alone."""
    out = claims.copy()
    for i, row in out.iterrows():
        notes = str(row.get("notes", "") or "")
        if "fragile" in notes or row.get("kind") != EFFECT or row.get("p_method") != "Fisher exact":
            continue
        m = _COUNT.findall(notes)
        if len(m) < 2:
            continue
        (ka, na), (kb, nb) = ((int(k), int(n)) for k, n in m[:2])
        if not (na and nb and ka <= na and kb <= nb):
            continue
        sign = int(_float(row.get("expected_sign")) or -1)
        judged = lambda a, n_a, b, n_b: counts_direction_claim("x", "x", math.nan, a, n_a, b, n_b, sign)
        c = judged(ka, na, kb, nb)
        ours = _float(row.get("ours"))
        if not (math.isfinite(ours) and abs(c.ours - ours) < 1e-6):
            continue                                   # not a rate difference of these counts
        note = flip_note(lambda *k: judged(*k).verdict, ka, na, kb, nb, rate)
        if note:
            out.at[i, "notes"] = f"{notes}; {note}" if notes else note
    return out


VERDICT_COLORS = {REPRODUCED: "tab:green", NOT_REPRODUCED: "tab:red", INCONCLUSIVE: "tab:gray",
                  BY_DESIGN: "tab:olive"}


def verdicts_figure(claims: pd.DataFrame, title: str):
    """Verdict counts per source notebook, stacked (the four verdicts)."""
    import matplotlib.pyplot as plt
    counts = claims.groupby("source")["verdict"].value_counts().unstack(fill_value=0).reindex(columns=list(VERDICTS), fill_value=0)
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(counts) + 1.2))
    left = pd.Series(0, index=counts.index)
    for v in VERDICTS:
        ax.barh(counts.index, counts[v], left=left, color=VERDICT_COLORS[v], label=v)
        left = left + counts[v]
    ax.invert_yaxis(); ax.set_xlabel("claims"); ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title)
    return fig
