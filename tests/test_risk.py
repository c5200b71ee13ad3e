"""rksp.core.risk.RiskModel and Profile.divergence_risk."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

import rksp
from rksp.errors import RKSPInputError
from rksp.core.risk import RiskModel, feature_frame


def _synthetic(n=400, seed=0, b_score=3.0, b_lr=2.5):
    """Runs whose divergence follows a known logistic law in (M≈1, log10 LR)."""
    rng = np.random.default_rng(seed)
    score = rng.uniform(0, 1, n)
    lr = 10 ** rng.uniform(-3.5, -1.5, n)
    z = -1.0 + b_score * (score - 0.5) / 0.29 + b_lr * (np.log10(lr) + 2.5) / 0.58
    y = rng.uniform(size=n) < 1 / (1 + np.exp(-z))
    return pd.DataFrame({'prof_score': score, 'lr': lr, 'diverged': y,
                         'prof_rho_mean': 1 + rng.uniform(0, 1, n), 'prof_kappa_mean': 10 ** rng.uniform(0, 3, n)})


@pytest.mark.parametrize('signs', [(1, 1), (-1, 1), (1, -1)])
def test_fit_recovers_coefficient_signs(signs):
    df = _synthetic(b_score=3.0 * signs[0], b_lr=2.5 * signs[1])
    m = RiskModel.fit(df)
    assert m.features == ['m_near_unit', 'log10_lr']
    assert np.sign(m.coef).tolist() == list(signs)
    assert m.n == len(df) and m.n_pos + m.n_neg == m.n
    p_hi = m.predict(score=0.9 if signs[0] > 0 else 0.1, lr=0.03 if signs[1] > 0 else 3e-4)
    p_lo = m.predict(score=0.1 if signs[0] > 0 else 0.9, lr=3e-4 if signs[1] > 0 else 0.03)
    assert 0 <= p_lo < p_hi <= 1


def test_matches_sklearn_pipeline_and_predict_frame():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    df = _synthetic()
    m = RiskModel.fit(df)
    X = np.column_stack([df['prof_score'], np.log10(df['lr'])])
    ref = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, df['diverged'].astype(int))
    np.testing.assert_allclose(m.predict_frame(df).to_numpy(), ref.predict_proba(X)[:, 1], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(m.predict(df['prof_score'].to_numpy(), df['lr'].to_numpy()),
                               ref.predict_proba(X)[:, 1], rtol=1e-6, atol=1e-9)


def test_json_round_trip_identical_predictions(tmp_path):
    df = _synthetic()
    m = RiskModel.fit(df, features=['m_near_unit', 'rho', 'log10_kappa', 'log10_lr'],
                      fitted_on={'profile': 'test', 'data': 'synthetic', 'n_runs': np.int64(400)})
    path = tmp_path / 'sub' / 'risk.json'
    text = m.to_json(path)
    d = json.loads(path.read_text())
    assert d['features'] == m.features and d['fitted_on']['profile'] == 'test' and 'scope' in d
    for m2 in (RiskModel.from_json(path), RiskModel.from_json(str(path)), RiskModel.from_json(text)):
        a = m.predict_frame(df).to_numpy()
        b = m2.predict_frame(df).to_numpy()
        assert np.array_equal(a, b)
        assert m2.predict(0.5, 1e-3, rho=1.2, kappa=30.0) == m.predict(0.5, 1e-3, rho=1.2, kappa=30.0)
        assert m2.fitted_on == m.fitted_on


def test_nan_rows_dropped_and_counted():
    df = _synthetic(n=100)
    df.loc[:4, 'prof_score'] = np.nan
    df['diverged'] = df['diverged'].astype(object)
    df.loc[5, 'diverged'] = None
    m = RiskModel.fit(df)
    assert m.n == 94 and m.fitted_on['n_dropped'] == 6
    p = m.predict_frame(df)
    assert p[:5].isna().all() and p[5:].notna().all()


def test_bad_inputs_raise_clear_errors(tmp_path):
    df = _synthetic(n=60)
    with pytest.raises(RKSPInputError, match='both|n_pos=0'):
        RiskModel.fit(df.assign(diverged=False))
    with pytest.raises(RKSPInputError, match='unknown feature'):
        RiskModel.fit(df, features=['m_near_unit', 'depth'])
    with pytest.raises(RKSPInputError, match='label'):
        RiskModel.fit(df, label='exploded')
    with pytest.raises(RKSPInputError, match='0/1'):
        RiskModel.fit(df.assign(diverged=2))
    with pytest.raises(RKSPInputError, match='needs column'):
        RiskModel.fit(df.drop(columns=['lr']))
    with pytest.raises(RKSPInputError, match='DataFrame'):
        RiskModel.fit([1, 2, 3])
    m = RiskModel.fit(df)
    with pytest.raises(RKSPInputError, match='lr must be > 0'):
        m.predict(0.5, 0.0)
    with pytest.raises(RKSPInputError, match=r'\[0, 1\]'):
        m.predict(1.5, 1e-3)
    with pytest.raises(RKSPInputError, match='finite'):
        m.predict(np.nan, 1e-3)
    with pytest.raises(RKSPInputError, match='give'):
        m.predict(score=0.5)
    with pytest.raises(FileNotFoundError, match='risk model file not found'):
        RiskModel.from_json(tmp_path / 'nope.json')
    bad = tmp_path / 'bad.json'
    bad.write_text('{"kind": "rksp.RiskModel", ')
    with pytest.raises(RKSPInputError, match='malformed'):
        RiskModel.from_json(bad)
    bad.write_text(json.dumps({'kind': 'something else'}))
    with pytest.raises(RKSPInputError, match='not a risk model'):
        RiskModel.from_json(bad)
    d = m.to_dict()
    for broken in ({**d, 'coef': [1.0]}, {**d, 'scaler_scale': [0.0, 1.0]}, {k: v for k, v in d.items() if k != 'coef'},
                   {**d, 'version': 99}, {**d, 'coef': ['a', 'b']}):
        bad.write_text(json.dumps(broken))
        with pytest.raises(RKSPInputError):
            RiskModel.from_json(bad)


def test_feature_frame_handles_nan_and_nonpositive():
    df = pd.DataFrame({'prof_score': [0.5, None, 0.7], 'lr': [1e-3, 1e-2, -1.0], 'prof_kappa_mean': [10, 0, 100]})
    f = feature_frame(df, ['m_near_unit', 'log10_lr', 'log10_kappa'])
    assert f['m_near_unit'].isna().tolist() == [False, True, False]
    assert f['log10_lr'].tolist()[:2] == pytest.approx([-3, -2]) and np.isnan(f['log10_lr'][2])
    assert np.isnan(f['log10_kappa'][1])


def test_profile_divergence_risk_tiny_model(tmp_path):
    from rksp.models import GPT
    torch.manual_seed(0)
    prof = rksp.profile(GPT.from_preset('tiny'), torch.randint(0, 256, (4, 64)), n_snapshots=128, kreiss=False)
    m = RiskModel.fit(_synthetic(), fitted_on={'profile': 'test'})
    p = prof.divergence_risk(1e-3, m)
    assert p == pytest.approx(m.predict(prof.score, 1e-3)) and 0 < p < 1
    path = tmp_path / 'risk_model.json'
    m.to_json(path)
    assert prof.divergence_risk(1e-3, path) == p
    assert prof.divergence_risk(1e-3, str(path)) == p
    assert prof.divergence_risk(3e-2, path) > prof.divergence_risk(1e-4, path)   # fitted with a positive LR slope
    np.testing.assert_allclose(prof.divergence_risk(np.array([1e-3, 1e-2]), m),
                               [m.predict(prof.score, 1e-3), m.predict(prof.score, 1e-2)])
    with pytest.raises(FileNotFoundError):
        prof.divergence_risk(1e-3, tmp_path / 'missing.json')
    (tmp_path / 'junk.json').write_text('not json')
    with pytest.raises(RKSPInputError, match='malformed'):
        prof.divergence_risk(1e-3, tmp_path / 'junk.json')
    with pytest.raises(RKSPInputError, match='RiskModel or a path'):
        prof.divergence_risk(1e-3, 42)
    mk = RiskModel.fit(_synthetic(), features=['m_near_unit', 'log10_kappa', 'log10_lr'])
    assert 0 < prof.divergence_risk(1e-3, mk) < 1
