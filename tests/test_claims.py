"""Tests of rksp.experiments.claims: the two criteria, the one verdict rule, multiplicity, minimum
information, stand-in evidence, matched by design; NaN -> inconclusive, never raises."""
import math

import numpy as np
import pandas as pd
import pytest

from rksp.experiments import claims
from rksp.experiments.claims import (BY_DESIGN, INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, VERDICTS, Claim,
                                     counts_direction_claim, judge_claims)

NAN = float("nan")


# ---------------------------------------------------------------- criteria
def test_size_criterion_uses_the_rounding_tolerance_only():
    assert claims.size_criterion(0.99, (0.975, 1.0), 0.995)[0] == "consistent"
    # the paper's rounding: half a unit of its last printed decimal
    assert claims.rounding_tolerance(0.995) == pytest.approx(0.0005)
    assert claims.rounding_tolerance(96.4) == pytest.approx(0.05)
    assert claims.rounding_tolerance(0.16) == pytest.approx(0.005)
    assert claims.rounding_tolerance(150.0) == pytest.approx(0.5)
    assert claims.rounding_tolerance(0.0) == 0.0 and claims.rounding_tolerance(None) == 0.0
    assert claims.rounding_tolerance(0.5) == pytest.approx(0.025)          # capped at 5 % of the value
    # an AUROC of 0.995 is not reproduced by a CI ending at 0.98 (the old 5 % tolerance passed it)
    assert claims.size_criterion(0.94, (0.895, 0.98), 0.995)[0] == "inconsistent"
    assert claims.size_criterion(0.99, (0.97, 0.9946), 0.995)[0] == "consistent"
    assert claims.size_criterion(95, (94.0, 96.36), 96.4)[0] == "consistent"
    assert claims.size_criterion(95, (94.0, 96.3), 96.4)[0] == "inconsistent"
    # a paper interval: overlap is enough
    assert claims.size_criterion(0.4, (0.35, 0.49), (0.48, 0.52))[0] == "consistent"
    # no CI: the point
    assert claims.size_criterion(0.97, None, 1.0)[0] == "consistent"
    assert claims.size_criterion(0.90, None, 1.0)[0] == "inconsistent"
    assert claims.size_criterion(0.9, (0.8, 1.0), None)[0] == "n/a"
    assert claims.size_criterion(NAN, (0.8, 1.0), 0.9)[0] == "n/a"


def test_direction_criterion_needs_adjusted_p_and_a_ci_that_excludes_zero():
    d = claims.direction_criterion
    assert d(-0.5, (-0.7, -0.3), -1, 0.001)[0] == "paper's direction"
    assert d(0.5, (0.3, 0.7), -1, 0.001)[0] == "against"
    assert d(-0.5, (-0.7, 0.1), -1, 0.001)[0] == "not significant"       # CI includes 0
    assert d(-0.5, (-0.7, -0.3), -1, 0.2)[0] == "not significant"       # adjusted p too large
    assert d(-0.5, None, -1, 0.01)[0] == "paper's direction"             # p alone when there is no CI
    assert d(-0.5, None, -1, NAN)[0] == "not significant"
    assert d(0.0, (-0.1, 0.1), -1, 0.5)[0] == "not significant"
    with pytest.raises(ValueError):
        d(0.1, None, 0, 0.01)


# ---------------------------------------------------------------- the rule
def test_the_rule_is_symmetric():
    # significant in the paper's direction but the CI excludes the paper's size: never reproduced
    c = Claim.direction("x", "x", 96.4, 62.6, (46.9, 75.4), expected_sign=+1, p=1e-17)
    assert (c.direction, c.size, c.verdict) == ("paper's direction", "inconsistent", NOT_REPRODUCED)
    # a larger effect than the paper's is just as inconsistent
    c = Claim.direction("x", "x", -25.0, -60.0, (-86.7, -27.1), expected_sign=-1, p=1e-5)
    assert c.verdict == NOT_REPRODUCED
    # a null whose CI excludes the paper's effect: not reproduced (T3-kss015-vs-none)
    c = Claim.direction("x", "x", -54.2, 0.0, (-20.2, 20.2), expected_sign=-1, p=1.0)
    assert (c.direction, c.size, c.verdict) == ("not significant", "inconsistent", NOT_REPRODUCED)
    # a null whose CI contains the paper's effect: inconclusive
    c = Claim.direction("x", "x", -20.0, -5.0, (-30.0, 20.0), expected_sign=-1, p=0.6)
    assert c.verdict == INCONCLUSIVE
    # both criteria met: reproduced; the opposite sign: not reproduced
    assert Claim.direction("x", "x", -50.0, -45.0, (-60.0, -30.0), expected_sign=-1, p=0.001).verdict == REPRODUCED
    assert Claim.direction("x", "x", None, 0.3, (0.1, 0.5), expected_sign=-1, p=0.001).verdict == NOT_REPRODUCED
    # a sign-only paper claim: reproduced on direction alone
    assert Claim.direction("x", "x", None, 0.3, (0.1, 0.5), expected_sign=+1, p=0.001).verdict == REPRODUCED


def test_no_reproduced_claim_has_the_paper_outside_its_ci_by_more_than_5_pct():
    rng = np.random.default_rng(1)
    for _ in range(400):
        paper = float(rng.normal(0, 10))
        lo = float(rng.normal(0, 10))
        hi = lo + float(rng.exponential(5))
        for c in (Claim.interval("v", "v", paper, (lo + hi) / 2, (lo, hi)),
                  Claim.direction("e", "e", paper, (lo + hi) / 2, (lo, hi), expected_sign=np.sign(paper) or 1,
                                  p=0.001)):
            if c.verdict == REPRODUCED:
                assert max(0.0, lo - paper, paper - hi) <= 0.05 * abs(paper) + 1e-12


def test_value_claims_and_max_width():
    assert Claim.interval("x", "x", 0.995, 0.99, (0.975, 1.0)).verdict == REPRODUCED
    assert Claim.interval("x", "x", 0.995, 0.70, (0.62, 0.78)).verdict == NOT_REPRODUCED
    assert Claim.interval("x", "x", 0.995, 0.90, (0.6, 1.0), max_width=0.2).verdict == INCONCLUSIVE
    assert Claim.interval("x", "x", 0.995, 0.995, (0.99, 1.0), n=4, min_n=10).verdict == INCONCLUSIVE
    assert Claim.interval("x", "x", 0.995, NAN, None).verdict == INCONCLUSIVE
    assert Claim.interval("x", "x", None, 0.9, (0.8, 1.0)).verdict == REPRODUCED      # nothing to contradict
    assert Claim.interval("x", "x", 0.995, 0.9, (0.8, 1.0)).direction == "n/a"


def test_minimum_information_and_stand_in_evidence_give_inconclusive():
    # one diverged run (T2-within-post_ln): no verdict, whatever the numbers
    info = claims.classes_information(1, 40)
    assert info and "1 positive" in info
    c = Claim.direction("T2-within-x", "x", None, 0.45, (0.4, 0.5), expected_sign=+1, p=0.3, information=info)
    assert c.verdict == INCONCLUSIVE and "too little information" in c.rule
    assert claims.classes_information(5, 5) == ""
    # a rate difference needs MIN_EVENTS events and non-events over both groups
    assert claims.events_information(1, 24, 2, 24)            # 3 events
    assert claims.events_information(24, 24, 22, 24)          # 2 non-events
    assert claims.events_information(3, 24, 3, 24) == ""
    assert counts_direction_claim("x", "x", -50.0, 0, 6, 2, 6).verdict == INCONCLUSIVE
    # a correlation over 3 points
    assert claims.points_information(3)
    # stand-in data: the criteria are reported, the verdict is inconclusive
    c = Claim.direction("T8", "x", (-15, -5), -99.0, (-99.5, -98.0), expected_sign=-1, p=1e-6,
                        stand_in="trained on pydoc (offline stand-in)")
    assert c.verdict == INCONCLUSIVE and c.size == "inconsistent" and "stand-in" in c.rule


def test_selection_targets_are_matched_by_design():
    c = Claim.interval("T1-m-pre_ln", "M≈1 at init", 0.16, 0.135, (0.116, 0.153))
    assert c.verdict == BY_DESIGN and "regime.md" in c.rule
    c = Claim.direction("T1-m-postln-gt-preln", "x", 0.5, 0.49, (0.47, 0.51), expected_sign=+1, p=1e-10)
    assert c.verdict == BY_DESIGN and math.isnan(c.p_raw_for_family)
    assert Claim.interval("T3-none-rate", "x", 66.7, 87.5, (69.0, 95.7)).verdict == BY_DESIGN
    assert Claim.interval("other", "x", 0.16, 0.135, (0.116, 0.153), by_design="rule 9").verdict == BY_DESIGN


def test_every_verdict_is_reachable_and_typed_verdicts_are_overwritten():
    seen = {Claim.interval("a", "a", 1.0, 1.0, (0.99, 1.01)).verdict,
            Claim.interval("a", "a", 1.0, 0.5, (0.4, 0.6)).verdict,
            Claim.interval("a", "a", 1.0, NAN, None).verdict,
            Claim.interval("T1-m-none", "a", 0.8, 0.8, None).verdict}
    assert seen == set(VERDICTS)
    c = Claim("x", "typed verdict", 1.0, 0.5, (0.4, 0.6), verdict="reproduced")
    assert c.verdict == NOT_REPRODUCED                       # the rule decides, not the constructor
    with pytest.raises(ValueError):
        Claim("x", "x", 1.0, 1.0, None, kind="guess")


# ---------------------------------------------------------------- multiplicity
def test_holm_adjustment_and_best_of_k():
    from rksp.experiments.stats import holm
    assert np.allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    assert np.isnan(holm([NAN, 0.01])[0]) and holm([NAN, 0.01])[1] == 0.01
    # three tested claims at p = 0.02: each alone is significant, after Holm none is
    cs = [Claim.direction(f"c{i}", "c", None, -1.0, None, expected_sign=-1, p=0.02) for i in range(3)]
    assert all(c.verdict == REPRODUCED for c in cs)
    t = judge_claims(claims.claims_table(cs).assign(source="nb"))
    assert list(t["p_adjusted"]) == pytest.approx([0.06] * 3) and (t["verdict"] == INCONCLUSIVE).all()
    assert list(t["source"]) == ["nb"] * 3
    # a best-of-5 choice multiplies its p by 4 before Holm
    c = Claim.direction("low", "lowest of 5", None, -1.0, None, expected_sign=-1, p=0.02, choice_k=5)
    assert c.p_raw_for_family == pytest.approx(0.08) and c.verdict == INCONCLUSIVE
    # claims that are not tested stay out of the family
    untested = [Claim.interval("v", "v", 1.0, 1.0, (0.9, 1.1)),
                Claim.direction("T1-m-postln-gt-preln", "x", 0.5, 0.5, None, expected_sign=1, p=0.01),
                Claim.direction("i", "i", None, 0.5, None, expected_sign=1, p=0.01, information="few")]
    t = judge_claims(claims.claims_table(untested + cs[:1]))
    assert t["p_adjusted"].notna().sum() == 1 and t.loc[3, "p_adjusted"] == pytest.approx(0.02)


def test_effects_with_a_ci_only_get_a_wald_p():
    c = Claim.direction("ppl", "KSS lowers PPL", (-15.0, -5.0), -10.0, (-14.0, -6.0), expected_sign=-1)
    assert 0 < c.p < 1e-4 and "Wald" in c.p_method and c.verdict == REPRODUCED


# ---------------------------------------------------------------- exact small-n tests
def test_spearman_uses_an_exact_permutation_p():
    from rksp.experiments.stats import spearman
    r = spearman([0.0, 0.1, 0.2], [3.0, 2.0, 1.0])          # F2-dose-m: rho = -1 over three means
    assert r["r"] == -1 and r["p"] == pytest.approx(1 / 3)
    r = spearman(range(5), [5, 4, 3, 2, 1])
    assert r["p"] == pytest.approx(2 / 120)
    c = Claim.direction("F2-dose-m", "x", -1.0, r["r"], None, p=spearman([0, .1, .2], [3, 2, 1])["p"],
                        expected_sign=-1, information=claims.points_information(3))
    assert c.verdict == INCONCLUSIVE


def test_auroc_permutation_p_matches_mann_whitney_exact():
    from scipy.stats import mannwhitneyu
    from rksp.experiments.prediction_stats import auroc_permutation_p
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=6), rng.normal(0.8, 1, size=5)
    s = np.r_[x, y]
    lab = np.r_[np.zeros(6), np.ones(5)]
    assert auroc_permutation_p(s, lab) == pytest.approx(mannwhitneyu(y, x, method="exact").pvalue)
    # one positive among four: the best rank still has p = 2/4
    assert auroc_permutation_p([1, 2, 3, 4], [0, 0, 0, 1]) == pytest.approx(0.5)
    assert math.isnan(auroc_permutation_p([1, 2], [0, 0]))


def test_cluster_bootstrap_resamples_inits_not_runs():
    from rksp.experiments.prediction_stats import auroc_ci
    rng = np.random.default_rng(0)
    inits = np.repeat(np.arange(8), 6)                       # 8 inits x 6 LRs, the score is per init
    score = rng.normal(size=8)[inits]
    y = (rng.random(48) < 0.3 + 0.4 * (score > 0)).astype(float)
    runs = auroc_ci(score, y, n_boot=400, seed=1)
    clus = auroc_ci(score, y, n_boot=400, seed=1, clusters=inits)
    assert clus["auroc"] == runs["auroc"] and clus["n_clusters"] == 8
    assert clus["hi"] - clus["lo"] > runs["hi"] - runs["lo"]   # 8 independent units, not 48


# ---------------------------------------------------------------- tables and pages
def test_claims_table_round_trips_through_csv(tmp_path):
    cs = [Claim.interval("T2-auroc", "AUROC", (0.986, 1.0), 0.99, (0.97, 1.0)),
          Claim.direction("T3", "KSS", -54.2, -40.0, (-60.0, -20.0), expected_sign=-1, p=0.001),
          Claim.interval("T1-m-none", "M", 0.8, 0.83, (0.8, 0.86)),
          Claim.interval("nan", "no value", 0.995, NAN, None)]
    df = claims.claims_table(cs)
    for col in ("direction", "size", "p_adjusted", "verdict"):
        assert col in df.columns
    df.to_csv(tmp_path / "c.csv", index=False)
    back = judge_claims(pd.read_csv(tmp_path / "c.csv"))
    assert list(back["verdict"]) == [REPRODUCED, REPRODUCED, BY_DESIGN, INCONCLUSIVE]
    md = claims.to_markdown(back, columns=claims.DISPLAY)
    assert md.splitlines()[0].startswith("| id | claim | paper |") and len(md.strip().splitlines()) == 2 + len(cs)
    assert claims.verdict_counts(back) == {REPRODUCED: 2, NOT_REPRODUCED: 0, INCONCLUSIVE: 1, BY_DESIGN: 1}


def test_claims_page_lists_the_rule_and_the_verdict_changes():
    new = judge_claims(claims.claims_table([Claim.interval("a", "a", 1.0, 0.5, (0.4, 0.6)),
                                            Claim.interval("b", "b", 1.0, 1.0, (0.9, 1.1))]).assign(source="s"))
    old = pd.DataFrame({"id": ["a", "c"], "verdict": [REPRODUCED, INCONCLUSIVE]})
    ch = claims.verdict_changes(old, new).set_index("id")
    assert ch.loc["a", "new"] == NOT_REPRODUCED and ch.loc["a", "changed"]
    assert ch.loc["b", "old"] == "(new claim)" and ch.loc["c", "new"] == "(dropped)"
    page = claims.claims_page(new, "smoke", old)
    assert claims.RULE_TEXT in page and "Verdicts changed" in page and "not reproduced: **1**" in page


# ---------------------------------------------------------------- label-flip fragility
def test_flips_to_change_finds_the_fewest_flips_and_flip_note_uses_the_measured_rate():
    from rksp.experiments.claims import flip_note, flips_to_change

    def verdict(a, na, b, nb):
        return counts_direction_claim('x', 'x', -50.0, a, na, b, nb).verdict
    # 0/24 vs 16/24 is significant and consistent with -50; it stays so for a few flips, not for many
    assert verdict(0, 24, 16, 24) == 'reproduced'
    t = flips_to_change(verdict, 0, 24, 16, 24, 12)
    assert t is not None and 1 <= t <= 12
    assert flips_to_change(verdict, 0, 24, 16, 24, t - 1) is None
    assert flip_note(verdict, 0, 24, 16, 24, rate=0.0) == ''
    note = flip_note(verdict, 0, 24, 16, 24, rate=t / 48)
    assert f'fragile: {t} flipped' in note


def test_annotate_flip_fragility_parses_counts_only_when_they_reproduce_the_claim():
    c = counts_direction_claim('a', 'a', -25.0, 2, 24, 8, 24)          # borderline: 2/24 vs 8/24
    base = claims.claims_table([c]).iloc[0].to_dict()
    row = dict(base, source='s', notes='KSS: 2/24, No control: 8/24 (task)')
    wrong = dict(row, id='b', notes='KSS: 3/24, No control: 8/24 (task)')    # counts do not give `ours`
    other = dict(row, id='c', kind='value', notes='3/3 inits')
    out = claims.annotate_flip_fragility(pd.DataFrame([row, wrong, other]), rate=0.1)
    assert 'fragile' in out.loc[0, 'notes'] and out.loc[0, 'notes'].startswith('KSS: 2/24')
    assert out.loc[1, 'notes'] == wrong['notes'] and out.loc[2, 'notes'] == other['notes']
    again = claims.annotate_flip_fragility(out, rate=0.1)
    assert again.loc[0, 'notes'] == out.loc[0, 'notes']                     # idempotent
