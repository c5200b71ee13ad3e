"""The user-facing import path of the training harness, kept stable: the code lives in `rksp.harness`.

    from rksp.train import TrainConfig, train, TrainHooks, register_hooks, register_optimizer
"""
from rksp.errors import ConfigError
from rksp.harness.config import TrainConfig
from rksp.harness.hooks import StepOutputs, TrainHooks
from rksp.harness.loop import train
from rksp.harness.registry import register_hooks, register_optimizer

__all__ = ["TrainConfig", "train", "TrainHooks", "StepOutputs", "ConfigError", "register_hooks", "register_optimizer"]
