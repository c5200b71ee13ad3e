"""RKSP over training: Trainer callback (logged keys, KSS changes the gradients), plain-loop tracker."""
import math

import pytest
import torch

import rksp
from rksp.errors import RKSPInputError

transformers = pytest.importorskip("transformers")


def _tiny_gpt2(seed=0):
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(seed)
    cfg = GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=64, n_positions=32)
    return GPT2LMHeadModel(cfg)


def _data(n=16, T=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 64, (n, T), generator=g)
    return [{"input_ids": r, "labels": r.clone()} for r in ids]


class _GradGrab(transformers.TrainerCallback):
    def __init__(self):
        self.grads = {}

    def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
        self.grads[state.global_step] = torch.cat([p.grad.flatten().clone() for p in model.parameters()
                                                   if p.grad is not None])


def _run(tmp_path, kss, steps=4, every=2):
    from transformers import Trainer, TrainingArguments
    model = _tiny_gpt2()
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=steps, per_device_train_batch_size=4,
                             logging_steps=1, report_to=[], use_cpu=True, save_strategy="no", seed=0,
                             disable_tqdm=True, learning_rate=1e-3, data_seed=0)
    grab = _GradGrab()
    trainer = Trainer(model=model, args=args, train_dataset=_data(), callbacks=[grab])
    held_out = {"input_ids": torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(7))}
    cb = rksp.integrations.RKSPCallback(held_out, every=every, kss=kss, n_snapshots=None)
    cb.attach(trainer)
    trainer.train()
    return trainer, cb, grab


def test_trainer_callback_logs_profile_and_kss_changes_gradients(tmp_path):
    kss = rksp.KSSConfig(alpha=1.0, every=1, rank=8, n_snapshots=None, layer_fraction=1.0)
    trainer, cb, grab = _run(tmp_path / "kss", kss)
    hist = trainer.state.log_history
    prof_logs = [r for r in hist if "rksp/score" in r]
    assert [r["step"] for r in prof_logs] == [0, 2, 4]
    for key in ("rksp/score", "rksp/rho_max", "rksp/m_expansive_mean", "rksp/kappa_mean", "rksp/eta_nl_mean"):
        assert all(math.isfinite(r[key]) for r in prof_logs), key
    assert all(r["rksp/kss_loss"] > 0 for r in prof_logs[1:])       # the term was applied and logged
    assert any("loss" in r for r in hist)                             # the Trainer's own logs are intact

    df = cb.frame()
    assert set(df.columns) == {"step", "layer", "metric", "value"}
    assert sorted(df["step"].unique()) == [0, 2, 4] and set(df["layer"]) == {-1, 0, 1}
    assert {"m_near_unit", "m_expansive", "rho"} <= set(df["metric"])
    first = df[(df.step == 0) & (df.layer == -1) & (df.metric == "score")]["value"].item()
    assert first == pytest.approx(prof_logs[0]["rksp/score"])
    lh = rksp.integrations.RKSPCallback.from_log_history(hist)
    assert sorted(lh["step"].unique()) == [0, 2, 4]

    _, _, g_none = _run(tmp_path / "none", None)
    _, _, g_zero = _run(tmp_path / "zero", rksp.KSSConfig(alpha=0.0, every=1, rank=8, n_snapshots=None,
                                                          layer_fraction=1.0))
    # control: a zero-weight KSS term leaves the gradient as it is (same seed, same data order) ...
    assert torch.allclose(g_zero.grads[0], g_none.grads[0], rtol=1e-6, atol=1e-9)
    # ... and alpha = 1 changes it
    diff = (grab.grads[0] - g_none.grads[0]).norm() / g_none.grads[0].norm()
    assert diff > 1e-3, diff


def test_callback_without_attach_refuses_kss(tmp_path):
    from transformers import Trainer, TrainingArguments
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=4,
                             report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True)
    cb = rksp.integrations.RKSPCallback({"input_ids": torch.zeros(2, 8, dtype=torch.long)},
                                        kss=rksp.KSSConfig(rank=4, n_snapshots=None))
    trainer = Trainer(model=_tiny_gpt2(), args=args, train_dataset=_data(), callbacks=[cb])
    with pytest.raises(RKSPInputError, match="attach"):
        trainer.train()


def test_plain_loop_tracker_three_lines():
    model = _tiny_gpt2()
    held_out = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(3))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    data = torch.randint(0, 64, (6, 4, 16), generator=torch.Generator().manual_seed(4))
    tracker = rksp.track(model, held_out, every=3, n_snapshots=None,
                         kss=rksp.KSSConfig(alpha=0.5, every=2, rank=8, n_snapshots=None))
    terms = []
    for step, x in enumerate(data):
        loss = model(x, labels=x).loss
        term = tracker.step(step)
        terms.append(float(term.detach()))
        (loss + term).backward()
        opt.step()
        opt.zero_grad()
    tracker.close()
    assert [s for s, _ in tracker.records] == [0, 3]
    assert [t > 0 for t in terms] == [True, False, True, False, True, False]   # KSS every 2 steps
    assert [r["step"] for r in tracker.kss_log] == [0, 2, 4]
    assert model.training                                                     # profiling restored train mode
    df = tracker.frame(run="a")
    assert list(df.columns) == ["run", "step", "layer", "metric", "value"]
    fig = tracker.plot()
    assert len(fig.axes) >= 3
    _check_tracker_plot(tracker)
    # after close() no hooks remain: a training forward records nothing, so a KSS step says so
    model(held_out)
    with pytest.raises(RKSPInputError, match="no complete residual stream"):
        tracker.kss_loss(0)


def test_tracker_bad_arguments():
    with pytest.raises(RKSPInputError, match="every"):
        rksp.track(_tiny_gpt2(), torch.zeros(1, 4, dtype=torch.long), every=0)
    with pytest.raises(RKSPInputError, match="kss"):
        rksp.track(_tiny_gpt2(), torch.zeros(1, 4, dtype=torch.long), kss={"alpha": 1})
    with pytest.raises(RKSPInputError, match="no profile"):
        rksp.integrations.RKSPCallback({"input_ids": torch.zeros(1, 4, dtype=torch.long)}).frame()


def test_track_runs_no_norm_with_and_without_kss():
    from rksp.harness.tracking import plot_track
    from rksp.experiments.runs import track_runs
    # an LR at which neither run diverges on any CPU (at the band's 0.05 No control can diverge before
    # step 10 under one kernel set and not under another: docs/kernel-sets.md)
    df = track_runs("smoke", every=10, lr=3e-3, progress=False)
    assert set(df["run"]) == {"No control", "KSS α=0.15"}
    steps = sorted(df["step"].unique())
    assert steps[0] == 0 and len(steps) >= 2 and all(s % 10 == 0 for s in steps)
    near = df[(df.metric == "rho") & (df.layer >= 0)]       # continuous: masses can sit at 1.0 early on
    at0 = near[near.step == 0].groupby("run")["value"].apply(list)
    assert at0["No control"] == at0["KSS α=0.15"]          # same init (same seed), before any KSS step
    # the harness applies KSS on steps 10, 20, 30 (counted from 1): the profile after 9 steps would
    # still be identical, the one after 10 completed steps already differs
    at10 = near[near.step == 10].groupby("run")["value"].apply(list)
    assert at10["No control"] != at10["KSS α=0.15"]
    later = near[near.step == steps[-1]].groupby("run")["value"].apply(list)
    assert later["No control"] != later["KSS α=0.15"]      # the runs differ once KSS has acted
    fig = plot_track(df, by="run")
    assert len(fig.axes) == 3


def _check_tracker_plot(tracker):
    """Tracker.plot(path=None, metrics=...): a first positional path saves the figure (as Profile.plot);
    metrics that are not a list of tracked metric names are a clear RKSPInputError."""
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "track.png"
        fig = tracker.plot(path)
        assert path.stat().st_size > 0 and len(fig.axes) >= 3
        fig = tracker.plot(str(path.with_name("rho.png")), metrics=["rho"])
        assert path.with_name("rho.png").exists() and fig.axes[0].get_title().startswith("ρ")
    for bad, why in (("rho", "metrics must be a non-empty list"), ([], "metrics must be a non-empty list"),
                     (["rho", "nope"], r"unknown metric\(s\) \['nope'\]")):
        with pytest.raises(RKSPInputError, match=why):
            tracker.plot(metrics=bad)
    with pytest.raises(RKSPInputError, match="first argument is the file"):
        tracker.plot(["rho"])                     # the old positional metrics
