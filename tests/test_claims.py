"""Tests of rksp.experiments.claims: every rule can return every verdict; NaN -> inconclusive, never raises."""
import math

import numpy as np
import pandas as pd
import pytest

from rksp.experiments import claims
from rksp.experiments.claims import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, VERDICTS, Claim

NAN = float("nan")


def _v(result):
    verdict, rule = result
    assert verdict in VERDICTS
    assert isinstance(rule, str) and rule
    return verdict


# ---------------------------------------------------------------- verdict_interval
def test_interval_all_three_verdicts():
    # Table 2: AUROC 0.995 [0.986, 1.000]
    assert _v(claims.verdict_interval(0.99, (0.975, 1.0), 0.995)) == REPRODUCED
    assert _v(claims.verdict_interval(0.70, (0.62, 0.78), 0.995, rel_tol=0.05)) == NOT_REPRODUCED
    assert _v(claims.verdict_interval(0.90, (0.60, 1.0), 0.995, max_width=0.2)) == INCONCLUSIVE
    # without a CI: tolerance on the point
    assert _v(claims.verdict_interval(0.97, None, 0.995, rel_tol=0.05)) == REPRODUCED
    assert _v(claims.verdict_interval(0.80, None, 0.995, rel_tol=0.05)) == NOT_REPRODUCED
    # too few runs
    assert _v(claims.verdict_interval(0.995, (0.99, 1.0), 0.995, n=4, min_n=10)) == INCONCLUSIVE


def test_interval_tolerance_edges_and_paper_interval():
    # CI misses the paper by 0.015 <= tol 0.05 -> reproduced (within tolerance)
    v, rule = claims.verdict_interval(0.96, (0.95, 0.98), 0.995, rel_tol=0.05)
    assert v == REPRODUCED and "<= tol" in rule
    # CI misses by 0.015 > tol 0.00995 -> not reproduced
    assert _v(claims.verdict_interval(0.96, (0.95, 0.98), 0.995, rel_tol=0.01)) == NOT_REPRODUCED
    # a wide CI that still clearly excludes the paper: not reproduced, not inconclusive
    assert _v(claims.verdict_interval(0.3, (0.0, 0.6), 0.995, max_width=0.2)) == NOT_REPRODUCED
    # paper interval, e.g. eta from [0.48, 0.52] early
    assert _v(claims.verdict_interval(0.50, None, [0.48, 0.52], rel_tol=0.0)) == REPRODUCED
    assert _v(claims.verdict_interval(0.40, (0.35, 0.45), (0.48, 0.52), rel_tol=0.0)) == NOT_REPRODUCED
    assert _v(claims.verdict_interval(0.40, (0.35, 0.49), (0.48, 0.52), rel_tol=0.0)) == REPRODUCED
    # paper 0: absolute tolerance
    assert _v(claims.verdict_interval(0.01, None, 0.0, abs_tol=0.02)) == REPRODUCED
    assert _v(claims.verdict_interval(0.05, None, 0.0, abs_tol=0.02)) == NOT_REPRODUCED


def test_interval_nan_inputs_inconclusive():
    assert _v(claims.verdict_interval(NAN, (0.1, 0.2), 0.995)) == INCONCLUSIVE
    assert _v(claims.verdict_interval(None, None, 0.995)) == INCONCLUSIVE
    assert _v(claims.verdict_interval(0.9, (NAN, NAN), NAN)) == INCONCLUSIVE
    assert _v(claims.verdict_interval(0.9, (0.8, 1.0), None)) == INCONCLUSIVE
    # a NaN CI falls back to the point rule
    assert _v(claims.verdict_interval(0.99, (NAN, NAN), 0.995)) == REPRODUCED
    assert _v(claims.verdict_interval(0.99, None, 0.995, n=NAN, min_n=5)) == INCONCLUSIVE


# ---------------------------------------------------------------- verdict_direction
def test_direction_all_three_verdicts():
    # KSS reduces divergence: delta = rate(KSS) - rate(base) expected negative
    assert _v(claims.verdict_direction(-0.54, (-0.75, -0.30), "decrease")) == REPRODUCED
    assert _v(claims.verdict_direction(0.30, (0.10, 0.50), "decrease")) == NOT_REPRODUCED
    assert _v(claims.verdict_direction(-0.05, (-0.30, 0.20), "decrease")) == INCONCLUSIVE
    # by p-value
    assert _v(claims.verdict_direction(-0.1, None, -1, p=0.001)) == REPRODUCED
    assert _v(claims.verdict_direction(0.1, None, -1, p=0.001)) == NOT_REPRODUCED
    assert _v(claims.verdict_direction(-0.1, None, -1, p=0.2)) == INCONCLUSIVE
    # expected positive
    assert _v(claims.verdict_direction(0.2, (0.1, 0.3), +1)) == REPRODUCED
    assert _v(claims.verdict_direction(-0.2, (-0.3, -0.1), "increase")) == NOT_REPRODUCED
    # with both a CI and a p-value, both must agree: one alone is not enough
    assert _v(claims.verdict_direction(-0.2, (-0.4, 0.01), -1, p=0.03)) == INCONCLUSIVE
    assert _v(claims.verdict_direction(-0.4, (-0.77, -0.004), -1, p=0.095)) == INCONCLUSIVE
    assert _v(claims.verdict_direction(-0.4, (-0.77, -0.1), -1, p=0.01)) == REPRODUCED


def test_direction_nan_and_missing_uncertainty():
    assert _v(claims.verdict_direction(NAN, None, -1)) == INCONCLUSIVE
    assert _v(claims.verdict_direction(NAN, (NAN, NAN), -1, p=NAN)) == INCONCLUSIVE
    assert _v(claims.verdict_direction(-0.5, None, -1)) == INCONCLUSIVE  # no CI, no p
    assert _v(claims.verdict_direction(0.0, (-0.1, 0.1), -1)) == INCONCLUSIVE
    # NaN point but a CI on one side of 0 decides the sign
    assert _v(claims.verdict_direction(NAN, (-0.3, -0.1), -1)) == REPRODUCED
    with pytest.raises(ValueError):
        claims.verdict_direction(0.1, None, 0)


# ---------------------------------------------------------------- verdict_better_than
def test_better_than_all_three_verdicts():
    # Table 2: M~1 0.995 [0.986, 1.0] vs loss spikes 0.758 [0.712, 0.804]
    assert _v(claims.verdict_better_than(0.995, (0.986, 1.0), 0.758, (0.712, 0.804))) == REPRODUCED
    assert _v(claims.verdict_better_than(0.60, (0.55, 0.65), 0.758, (0.712, 0.804))) == NOT_REPRODUCED
    assert _v(claims.verdict_better_than(0.80, (0.75, 0.85), 0.758, (0.712, 0.804))) == INCONCLUSIVE
    # lower bound above b's point but CIs overlap: inconclusive under the non-overlap rule
    assert _v(claims.verdict_better_than(0.85, (0.78, 0.92), 0.758, (0.712, 0.804))) == INCONCLUSIVE
    # b without CI: its point is used
    assert _v(claims.verdict_better_than(0.85, (0.78, 0.92), 0.758)) == REPRODUCED
    # margin
    assert _v(claims.verdict_better_than(0.9, (0.85, 0.95), 0.758, (0.712, 0.804), margin=0.1)) == INCONCLUSIVE


def test_better_than_paired_diff_ci():
    assert _v(claims.verdict_better_than(0.9, None, 0.8, diff_ci=(0.02, 0.18))) == REPRODUCED
    assert _v(claims.verdict_better_than(0.7, None, 0.8, diff_ci=(-0.18, -0.02))) == NOT_REPRODUCED
    assert _v(claims.verdict_better_than(0.82, None, 0.8, diff_ci=(-0.03, 0.07))) == INCONCLUSIVE


def test_better_than_nan_inconclusive():
    assert _v(claims.verdict_better_than(NAN, (0.9, 1.0), 0.7, (0.6, 0.8))) == INCONCLUSIVE
    assert _v(claims.verdict_better_than(0.9, (0.85, 0.95), NAN)) == INCONCLUSIVE
    assert _v(claims.verdict_better_than(0.9, None, 0.7, (0.6, 0.8))) == INCONCLUSIVE
    assert _v(claims.verdict_better_than(0.9, (NAN, NAN), 0.7, diff_ci=(NAN, NAN))) == INCONCLUSIVE


def test_every_rule_reaches_every_verdict():
    """Summary guard: the constructed inputs above cover the 3 x 3 grid."""
    seen = {
        "interval": {_v(claims.verdict_interval(*a)) for a in
                     [(0.99, (0.975, 1.0), 0.995), (0.7, (0.62, 0.78), 0.995), (NAN, None, 0.995)]},
        "direction": {_v(claims.verdict_direction(*a)) for a in
                      [(-0.5, (-0.7, -0.3), -1), (0.5, (0.3, 0.7), -1), (-0.1, (-0.3, 0.1), -1)]},
        "better": {_v(claims.verdict_better_than(*a)) for a in
                   [(0.99, (0.98, 1.0), 0.7, (0.6, 0.8)), (0.5, (0.4, 0.55), 0.7, (0.6, 0.8)),
                    (0.7, (0.6, 0.8), 0.7, (0.6, 0.8))]},
    }
    for rule, verdicts in seen.items():
        assert verdicts == set(VERDICTS), rule


# ---------------------------------------------------------------- Claim / table
def _example_claims():
    c1 = Claim.interval("T2-auroc", "AUROC of M≈1 at init", (0.986, 1.0), 0.99, (0.97, 1.0), rel_tol=0.02)
    assert c1.verdict == REPRODUCED and "paper" in c1.rule
    c2 = Claim.direction("T3-kss", "KSS reduces divergence", -0.542, -0.4, (-0.6, -0.2), expected_sign=-1)
    assert c2.verdict == REPRODUCED
    c3 = Claim.better_than("T2-beats", "M≈1 beats best gradient baseline", 0.995, 0.9, (0.85, 0.95),
                           0.758, (0.712, 0.804))
    assert c3.verdict == REPRODUCED
    c4 = Claim.interval("T1-auroc", "AUROC (no divergence in our runs)", 0.995, NAN, None)
    assert c4.verdict == INCONCLUSIVE and math.isnan(c4.ours)
    return [c1, c2, c3, c4]


def test_claim_constructors_compute_verdicts():
    assert [c.verdict for c in _example_claims()] == [REPRODUCED] * 3 + [INCONCLUSIVE]
    with pytest.raises(ValueError):
        Claim("x", "typed verdict", 1.0, 1.0, None, "rule", "probably fine")


def test_claims_table_and_markdown():
    cs = _example_claims()
    df = claims.claims_table(cs)
    assert list(df.columns) == ["id", "claim", "paper", "ours", "ci", "verdict", "rule", "notes"]
    assert df.loc[0, "paper"] == "[0.986, 1]" and df.loc[0, "ci"] == "[0.97, 1]"
    assert df.loc[3, "ci"] == "" and df.loc[3, "verdict"] == INCONCLUSIVE
    md = claims.to_markdown(df)
    lines = md.strip().splitlines()
    assert lines[0].startswith("| id | claim |") and len(lines) == 2 + len(cs)
    assert all(line.count("|") - line.count("\\|") == 9 for line in lines)
    assert claims.to_markdown(cs) == md
    assert claims.verdict_counts(cs) == {REPRODUCED: 3, NOT_REPRODUCED: 0, INCONCLUSIVE: 1}
    assert claims.verdict_counts(df) == claims.verdict_counts(cs)


def test_end_to_end_with_stats():
    from rksp.experiments import stats
    from rksp.experiments import prediction_stats as PS
    rng = np.random.default_rng(0)
    n = 150
    y = rng.integers(0, 2, n)
    df = pd.DataFrame({"m": np.clip(0.2 + 0.6 * y + 0.1 * rng.normal(size=n), 0, 1),
                       "g": y * 0.3 + rng.normal(size=n), "diverged": y})
    a = PS.auroc_ci(df["m"], df["diverged"])
    b = PS.auroc_ci(df["g"], df["diverged"])
    c = Claim.better_than("beats", "M≈1 beats gradient norm", None, a["auroc"], (a["lo"], a["hi"]),
                          b["auroc"], (b["lo"], b["hi"]))
    assert c.verdict == REPRODUCED
    rd = stats.rate_difference(3, 24, 16, 24)
    c2 = Claim.direction("kss", "KSS reduces divergence", -0.542, rd["delta"], (rd["lo"], rd["hi"]),
                         expected_sign=-1, p=rd["p"])
    assert c2.verdict == REPRODUCED


def test_flips_to_change_finds_the_fewest_flips_and_flip_note_uses_the_measured_rate():
    from rksp.experiments.claims import flip_note, flips_to_change
    from rksp.experiments.claims import counts_direction_claim

    def verdict(a, na, b, nb):
        return counts_direction_claim('x', 'x', -50.0, a, na, b, nb).verdict
    # 0/24 vs 16/24 is significant; it stays so for a few flips, not for many
    assert verdict(0, 24, 16, 24) == 'reproduced'
    t = flips_to_change(verdict, 0, 24, 16, 24, 12)
    assert t is not None and 2 <= t <= 12
    assert flips_to_change(verdict, 0, 24, 16, 24, t - 1) is None
    # a borderline result: one flip decides it
    assert flips_to_change(verdict, 2, 24, 8, 24, 3) == 1
    note = flip_note(verdict, 2, 24, 8, 24, rate=0.05)          # ceil(0.05 * 48) = 3 flips
    assert 'fragile: 1 flipped' in note and '3 here' in note
    assert flip_note(verdict, 0, 24, 16, 24, rate=0.0) == ''
    assert flip_note(verdict, 0, 24, 24, 24, rate=0.02) == ''   # 2 flips cannot undo 0/24 vs 24/24


def test_count_claims_carry_the_flip_note():
    from rksp.experiments.claims import counts_direction_claim
    c = counts_direction_claim('x', 'x', -50.0, 2, 24, 8, 24, notes='counts')
    assert c.notes.startswith('counts') and 'fragile' in c.notes


def test_annotate_flip_fragility_parses_counts_only_when_they_reproduce_the_claim():
    import pandas as pd
    from rksp.experiments.claims import annotate_flip_fragility
    from rksp.experiments.claims import counts_direction_claim
    c = counts_direction_claim('a', 'a', -50.0, 8, 24, 2, 24)          # borderline: 8/24 vs 2/24
    row = dict(source='s', id='a', claim='a', paper=-50.0, ours=c.ours, ci='', verdict=c.verdict, rule=c.rule,
               notes='KSS: 8/24, No control: 2/24 (task)')
    wrong = dict(row, id='b', notes='KSS: 7/24, No control: 2/24 (task)')    # counts do not give `ours`
    other = dict(row, id='c', rule='paper 0.16, tol = 0.05', notes='3/3 inits')
    out = annotate_flip_fragility(pd.DataFrame([row, wrong, other]), rate=0.1)
    assert 'fragile: 1 flipped' in out.loc[0, 'notes'] and out.loc[0, 'notes'].startswith('KSS: 8/24')
    assert out.loc[1, 'notes'] == wrong['notes'] and out.loc[2, 'notes'] == other['notes']
    again = annotate_flip_fragility(out, rate=0.1)
    assert again.loc[0, 'notes'] == out.loc[0, 'notes']                     # idempotent
