"""Tests of rksp.experiments.stats: AUROC (+ bootstrap CI), predictor tables, CV logistic, ECE, Fisher, Wilson."""
import math

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from scipy import stats as sps  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from rksp import defaults
from rksp.experiments import prediction_stats as PS  # noqa: E402
from rksp.experiments import stats  # noqa: E402
from rksp.errors import RKSPInputError  # noqa: E402


# ---------------------------------------------------------------- AUROC
def test_auroc_matches_sklearn_random_and_ties():
    rng = np.random.default_rng(1)
    for n in (5, 37, 300):
        y = rng.integers(0, 2, n)
        y[0], y[1] = 0, 1
        s = rng.normal(size=n) + y
        assert PS.auroc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        s_tied = np.round(s)  # heavy ties
        assert PS.auroc(s_tied, y) == pytest.approx(roc_auc_score(y, s_tied), abs=1e-12)


def test_auroc_known_values():
    y = np.array([0, 0, 0, 1, 1])
    assert PS.auroc([0.1, 0.2, 0.3, 0.8, 0.9], y) == 1.0
    assert PS.auroc([0.9, 0.8, 0.7, 0.2, 0.1], y) == 0.0
    assert PS.auroc([0.5] * 5, y) == 0.5
    # one tie between a positive and a negative: (5 + 0.5) / 6
    assert PS.auroc([0.1, 0.2, 0.5, 0.5, 0.9], [0, 0, 0, 1, 1]) == pytest.approx(5.5 / 6)
    assert PS.auroc([1, 2, 3], [True, False, True]) == pytest.approx(roc_auc_score([1, 0, 1], [1, 2, 3]))


def test_auroc_one_class_is_nan_with_reason():
    v, note = PS.auroc([0.1, 0.2, 0.3], [1, 1, 1], return_note=True)
    assert math.isnan(v) and "one class only" in note
    r = PS.auroc_ci([0.1, 0.2], [0, 0])
    assert math.isnan(r["auroc"]) and math.isnan(r["lo"]) and "one class only" in r["note"]
    assert r["n_pos"] == 0 and r["n_neg"] == 2


def test_auroc_drops_nan_and_rejects_bad_labels():
    v, note = PS.auroc([0.1, np.nan, 0.9, 0.2], [0, 1, 1, np.nan], return_note=True)
    assert v == 1.0 and "dropped 2" in note
    with pytest.raises(RKSPInputError):
        PS.auroc([0.1, 0.2], [0, 2])


def _synthetic(n, shift=1.0, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    return rng.normal(size=n) + shift * y, y


def test_bootstrap_ci_contains_point_shrinks_and_is_deterministic():
    s, y = _synthetic(100)
    r = PS.auroc_ci(s, y, seed=3)
    assert r["lo"] <= r["auroc"] <= r["hi"]
    assert r["n"] == 100 and r["n_pos"] + r["n_neg"] == 100
    assert PS.auroc_ci(s, y, seed=3) == r
    assert PS.auroc_ci(s, y, seed=4)["lo"] != r["lo"]
    s2, y2 = _synthetic(2000)
    r2 = PS.auroc_ci(s2, y2, seed=3)
    assert (r2["hi"] - r2["lo"]) < 0.5 * (r["hi"] - r["lo"])
    assert r2["lo"] <= r2["auroc"] <= r2["hi"]


def test_bootstrap_matches_loop_reference():
    """The vectorized resample AUROCs equal sklearn on the same index rows."""
    s, y = _synthetic(40, seed=5)
    s = np.round(s, 1)  # ties
    y = y.astype(np.int8)
    rng = np.random.default_rng(0)
    idx = PS._boot_index(y, 50, rng, stratified=True)
    codes, nu = PS._dense_codes(s)
    fast = PS._auc_rows(codes, y, idx, nu)
    ref = np.array([roc_auc_score(y[i], s[i]) for i in idx])
    np.testing.assert_allclose(fast, ref, atol=1e-12)
    # plain resampling: one-class rows give NaN, others equal sklearn
    idx2 = np.vstack([np.flatnonzero(y == 0)[np.zeros(40, int)], np.random.default_rng(1).integers(0, 40, (20, 40))])
    fast2 = PS._auc_rows(codes, y, idx2, nu)
    assert math.isnan(fast2[0])
    np.testing.assert_allclose(fast2[1:], [roc_auc_score(y[i], s[i]) for i in idx2[1:]], atol=1e-12)


def test_plain_bootstrap_skips_one_class_resamples():
    s = np.arange(6.0)
    y = np.array([0, 0, 0, 0, 0, 1])
    r = PS.auroc_ci(s, y, stratified=False, seed=0)
    assert r["auroc"] == 1.0 and "skipped" in r["note"]
    assert r["lo"] == 1.0 and r["hi"] == 1.0
    rs = PS.auroc_ci(s, y, stratified=True, seed=0)
    assert "skipped" not in rs["note"] and "few of a class" in rs["note"]


def test_auroc_diff_ci():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 300)
    good = y * 2.0 + rng.normal(size=300)
    bad = y * 0.2 + rng.normal(size=300)
    r = PS.auroc_diff_ci(good, bad, y)
    assert r["lo"] > 0 and r["diff"] == pytest.approx(r["auroc_a"] - r["auroc_b"])
    assert r["auroc_a"] == pytest.approx(roc_auc_score(y, good))
    r0 = PS.auroc_diff_ci(good, good, y)
    assert r0["diff"] == 0 and r0["lo"] == 0 and r0["hi"] == 0


def test_bootstrap_default_is_paper_resamples():
    import inspect
    assert inspect.signature(PS.auroc_ci).parameters["n_boot"].default == defaults.BOOTSTRAP_RESAMPLES


# ---------------------------------------------------------------- predictor_table
def _runs(n=120, seed=0):
    rng = np.random.default_rng(seed)
    norm = rng.choice(["Pre-LN", "Post-LN", "No-Norm"], n)
    y = ((norm == "No-Norm") & (rng.random(n) < 0.9)) | ((norm == "Post-LN") & (rng.random(n) < 0.3))
    m = np.clip(0.2 + 0.6 * y + 0.1 * rng.normal(size=n), 0, 1)  # a mass lies in [0, 1]
    return pd.DataFrame({"norm": norm, "diverged": y, "m_near_unit": m, "rho": rng.normal(size=n),
                         "log_lr": rng.normal(size=n)})


def test_predictor_table_shape_and_values():
    df = _runs()
    t = PS.predictor_table(df, {"M≈1": "m_near_unit", "-rho": lambda d: -d["rho"]}, n_boot=200)
    assert list(t.columns) == ["predictor", "auroc", "lo", "hi", "p", "n", "n_pos", "n_neg", "note"]
    assert list(t["predictor"]) == ["M≈1", "-rho"]
    assert t.loc[0, "auroc"] == pytest.approx(roc_auc_score(df["diverged"], df["m_near_unit"]))
    assert t.loc[1, "auroc"] == pytest.approx(roc_auc_score(df["diverged"], -df["rho"]))
    assert (t["lo"] <= t["auroc"]).all() and (t["auroc"] <= t["hi"]).all()


def test_predictor_table_by_stratum_single_class_nan():
    df = _runs()
    df.loc[df["norm"] == "Pre-LN", "diverged"] = False
    t = PS.predictor_table(df, {"M≈1": "m_near_unit"}, by="norm", n_boot=100)
    assert set(t["norm"]) == {"Pre-LN", "Post-LN", "No-Norm"}
    pre = t[t["norm"] == "Pre-LN"].iloc[0]
    assert math.isnan(pre["auroc"]) and "one class only" in pre["note"]
    post = t[t["norm"] == "Post-LN"].iloc[0]
    sub = df[df["norm"] == "Post-LN"]
    assert post["auroc"] == pytest.approx(roc_auc_score(sub["diverged"], sub["m_near_unit"]))


def test_predictor_table_accepts_precomputed_result():
    df = _runs()
    t = PS.predictor_table(df, {"[M≈1, log LR]": lambda d: PS.cv_logistic(
        d, ["m_near_unit", "log_lr"], "diverged", n_boot=100)})
    assert t.loc[0, "auroc"] > 0.8 and t.loc[0, "n"] == len(df)


# ---------------------------------------------------------------- cv_logistic
def test_cv_logistic_separable_and_noise():
    rng = np.random.default_rng(0)
    n = 200
    y = rng.integers(0, 2, n)
    df = pd.DataFrame({"a": y * 3.0 + rng.normal(size=n), "b": rng.normal(size=n), "y": y})
    r = PS.cv_logistic(df, ["a", "b"], "y", n_boot=200)
    assert r["auroc"] > 0.9 and r["lo"] <= r["auroc"] <= r["hi"]
    assert r["probs"].index.equals(df.index) and r["probs"].notna().all()
    assert r["probs"].between(0, 1).all()
    assert r["coef"]["a"] > 1.0 and abs(r["coef"]["b"]) < 0.5
    assert r["model"] is not None and r["n_splits"] == 5
    noise = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "y": y})
    rn = PS.cv_logistic(noise, ["a", "b"], "y", n_boot=200)
    assert abs(rn["auroc"] - 0.5) < 0.15


def test_cv_logistic_few_of_a_class():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=30), "y": [1, 1, 1] + [0] * 27})
    r = PS.cv_logistic(df, ["a"], "y", n_boot=50)
    assert r["n_splits"] == 3 and "reduced" in r["note"] and not math.isnan(r["auroc"])
    df1 = pd.DataFrame({"a": rng.normal(size=30), "y": [1] + [0] * 29})
    r1 = PS.cv_logistic(df1, ["a"], "y", n_boot=50)
    assert math.isnan(r1["auroc"]) and "too few" in r1["note"]
    df0 = pd.DataFrame({"a": rng.normal(size=30), "y": [0] * 30})
    r0 = PS.cv_logistic(df0, ["a"], "y")
    assert math.isnan(r0["auroc"]) and r0["model"] is None


def test_cv_logistic_nan_rows_dropped():
    rng = np.random.default_rng(0)
    n = 60
    y = rng.integers(0, 2, n)
    df = pd.DataFrame({"a": y + 0.3 * rng.normal(size=n), "y": y})
    df.loc[3, "a"] = np.nan
    r = PS.cv_logistic(df, ["a"], "y", n_boot=50)
    assert r["n"] == n - 1 and math.isnan(r["probs"].loc[3]) and "dropped 1" in r["note"]


# ---------------------------------------------------------------- ECE
def test_ece_zero_for_calibrated_bins():
    # every bin: mean prediction = observed frequency (3/20 at 0.15, 5/10 at 0.5, 3/4 at 0.75, 2/2 at 1.0)
    p = [0.15] * 20 + [0.5] * 10 + [0.75] * 4 + [1.0] * 2
    y = [1] * 3 + [0] * 17 + [1] * 5 + [0] * 5 + [1] * 3 + [0] + [1, 1]
    r = PS.ece(p, y)
    assert r["ece"] == pytest.approx(0.0, abs=1e-12)
    b = r["bins"]
    assert list(b.columns)[:7] == ["bin_lo", "bin_hi", "n", "n_pos", "n_neg", "mean_pred", "frac_pos"]
    assert len(b) == defaults.ECE_BINS and b["n"].sum() == 36
    assert b.loc[9, "n"] == 2  # p = 1.0 falls in the last (closed) bin
    assert b.loc[5, "n"] == 10  # p = 0.5 in [0.5, 0.6)


def test_ece_hand_example():
    # bin [0.2,0.3): preds 0.2, 0.2 outcomes 1, 1 -> gap 0.8; bin [0.9,1]: 0.9, 0.9 outcomes 0, 1 -> gap 0.4
    r = PS.ece([0.2, 0.2, 0.9, 0.9], [1, 1, 0, 1])
    assert r["ece"] == pytest.approx(0.5 * 0.8 + 0.5 * 0.4)
    assert r["mce"] == pytest.approx(0.8)
    r5 = PS.ece([0.1, 0.3, 0.7], [0, 0, 1], n_bins=2)  # bins: [0,.5): mean .2 frac 0; [.5,1]: .7 vs 1
    assert r5["ece"] == pytest.approx(2 / 3 * 0.2 + 1 / 3 * 0.3)
    with pytest.raises(RKSPInputError):
        PS.ece([1.5], [1])


def test_calibration_raw_and_platt_and_plot(tmp_path):
    df = _runs(200)
    c = PS.calibration(df, "m_near_unit")
    assert 0 <= c["raw"]["ece"] <= 1 and 0 <= c["platt"]["ece"] <= 1
    assert c["platt_probs"].notna().all()
    fig = PS.reliability_plot(c["raw"]["bins"], ece_value=c["raw"]["ece"])
    assert len(fig.axes) == 2
    fig.savefig(tmp_path / "rel.png")
    import matplotlib.pyplot as plt
    plt.close(fig)
    fig2, ax = plt.subplots()
    PS.reliability_plot(c["platt"]["bins"], ax=ax, title="Platt")
    plt.close(fig2)


# ---------------------------------------------------------------- Fisher / Wilson / rates
def test_fisher_matches_scipy_and_hand_example():
    r = stats.fisher_exact(16, 24, 3, 24)
    ref = sps.fisher_exact([[16, 8], [3, 21]])
    assert r["p"] == pytest.approx(ref.pvalue) and r["odds_ratio"] == pytest.approx(ref.statistic)
    # hand: [[3, 0], [0, 3]]: tables with a = 0..3 have probs 1/20, 9/20, 9/20, 1/20; two-sided p = 2/20
    h = stats.fisher_exact(3, 3, 0, 3)
    assert h["p"] == pytest.approx(0.1) and math.isinf(h["odds_ratio"])
    assert math.isnan(stats.fisher_exact(0, 0, 1, 2)["p"])


def test_wilson_known_value():
    lo, hi = stats.wilson(5, 10)
    assert lo == pytest.approx(0.236593, abs=1e-5) and hi == pytest.approx(0.763407, abs=1e-5)
    lo0, hi0 = stats.wilson(0, 10)
    assert lo0 == 0.0 and hi0 == pytest.approx(0.277533, abs=1e-5)
    assert all(math.isnan(v) for v in stats.wilson(0, 0))


def test_rate_difference_newcombe():
    # Newcombe (1998) example 1: 56/70 vs 48/80 -> 0.2, CI (0.0524, 0.3339)
    r = stats.rate_difference(56, 70, 48, 80)
    assert r["delta"] == pytest.approx(0.2)
    assert r["lo"] == pytest.approx(0.0524, abs=5e-4) and r["hi"] == pytest.approx(0.3339, abs=5e-4)


def test_divergence_rate_table():
    df = pd.DataFrame({"norm": ["A"] * 10 + ["B"] * 20, "diverged": [1] * 9 + [0] + [0] * 19 + [1]})
    t = stats.divergence_rate_table(df, "norm")
    assert list(t["norm"]) == ["A", "B"] and list(t["n"]) == [10, 20] and list(t["n_div"]) == [9, 1]
    assert t.loc[0, "rate"] == pytest.approx(90.0)
    lo, hi = stats.wilson(9, 10)
    assert t.loc[0, "lo"] == pytest.approx(100 * lo) and t.loc[0, "hi"] == pytest.approx(100 * hi)
    assert t.loc[0, "p"] == pytest.approx(sps.fisher_exact([[9, 1], [1, 19]]).pvalue)
    t2 = stats.divergence_rate_table(df, "norm", reference="B")
    assert math.isnan(t2.loc[1, "p"]) and t2.loc[0, "vs"] == "B"
    assert t2.loc[0, "p"] == pytest.approx(t.loc[0, "p"])


# ---------------------------------------------------------------- correlation / fits / format
def test_pearson_and_loglinear():
    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    y = 2 * x + rng.normal(size=50)
    r = stats.pearson(x, y)
    ref = sps.pearsonr(x, y)
    assert r["r"] == pytest.approx(ref.statistic) and r["p"] == pytest.approx(ref.pvalue) and r["n"] == 50
    assert math.isnan(stats.pearson([1, 2], [3, 4])["r"])
    assert math.isnan(stats.pearson([1, 1, 1], [1, 2, 3])["r"])
    params = np.array([25e6, 125e6, 355e6, 7e9])
    m = 0.9 - 0.05 * np.log10(params)
    f = stats.loglinear_fit(params, m)
    assert f["slope"] == pytest.approx(-0.05) and f["intercept"] == pytest.approx(0.9) and f["r"] == pytest.approx(-1)
    f2 = stats.loglinear_fit([0, 10, 100, np.nan], [1, 2, 3, 4])
    assert f2["n"] == 2 and "dropped 1" in f2["note"] and f2["slope"] == pytest.approx(1.0)


def test_mean_sd():
    assert stats.mean_sd([0.15, 0.16, 0.17]) == "0.16±0.01"
    assert stats.mean_sd(pd.Series([1.0, np.nan, 3.0]), digits=1) == "2.0±1.4"
    assert stats.mean_sd([0.5]) == "0.50 (n=1)"
    assert stats.mean_sd([]) == "n/a"


def test_wilson_bounds_are_exact_at_zero_and_all():
    from rksp.experiments.stats import wilson
    for n in (1, 3, 9, 24, 1000):
        assert wilson(0, n)[0] == 0.0 and wilson(n, n)[1] == 1.0
        assert 0.0 < wilson(0, n)[1] < 1.0 and 0.0 < wilson(n, n)[0] < 1.0
