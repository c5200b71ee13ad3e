"""A stabilizer defined outside the package: one class, one registration, run from a sweep config
(issue 12: adding a stabilizer = one class + one registration)."""
import torch

from rksp.harness.sweep import run
from rksp.harness.registry import HOOKS, register_hooks
from rksp.harness.config import TrainConfig
from rksp.harness.hooks import TrainHooks

TINY = dict(task='recall', model='gpt', model_cfg=dict(d_model=16, n_layer=2, n_head=2), steps=6,
            warmup_steps=1, batch_size=4, n_train=32, n_val=8, profile_at_init=False, lr=1e-3, seed=3)


@register_hooks('toy_hidden_l2')
class ToyHiddenL2(TrainHooks):
    """λ · mean squared residual-stream state, every `every` steps (a toy regularizer)."""

    def __init__(self, lam: float = 0.1, every: int = 2):
        self.lam, self.every, self.applied = lam, every, []

    def needs_hidden(self, step):
        return step % self.every == 0

    def extra_loss(self, model, batch, outputs, step):
        if not self.needs_hidden(step):
            return None
        self.applied.append(step)
        return self.lam * torch.stack([h.square().mean() for h in outputs.hidden[1:]]).mean()

    def on_end(self, record, model):
        record['extras']['toy_hidden_l2_steps'] = list(self.applied)


def test_a_toy_stabilizer_registered_outside_the_package_runs_from_a_sweep_config(tmp_path):
    assert HOOKS['toy_hidden_l2'] is ToyHiddenL2
    cfg = {**TINY, 'hooks': [{'target': 'toy_hidden_l2', 'kwargs': {'lam': 0.5, 'every': 2}}]}
    TrainConfig.from_dict(dict(cfg)).validate()
    df = run([cfg, TINY], tmp_path, executor='serial')
    assert list(df['status']) == ['ok', 'ok']
    from rksp.harness.record import read_record
    rec = read_record(df['path'].iloc[0])
    steps = rec['extras']['toy_hidden_l2_steps']
    assert len(steps) == 3 and all(s % 2 == 0 for s in steps)
    # the regularizer changed the trajectory: the two runs differ only by the hook
    assert df['final_train_loss'].iloc[0] != df['final_train_loss'].iloc[1]
