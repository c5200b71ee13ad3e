"""Floor 4, the training harness: one `TrainConfig` -> one run -> one JSON record; many -> a sweep.

One run is a one-way pipeline, each module importing only the ones above it in this list:

    config.py     TrainConfig (plain data), its field checks, the config hash
    registry.py   @register_optimizer / @register_hooks and name lookup (plugins load lazily)
    hooks.py      the hook protocol (`TrainHooks`, every member the loop reads), HookList, the step context
    resolve.py    config -> objects: hooks built with their arguments, optimizer, task and model config;
                  the checks that need them (run by `TrainConfig.validate()`, so before any run)
    build.py      task data, the model, the seeded streams (`build_run`, `model_at_init`)
    labels.py     divergence labels (Sec. 3.1) and the Table 2 gradient baselines
    record.py     JSON helpers, reading records, records -> rows
    loop.py       `train(cfg)`: setup (profile at init), the steps, finish (evaluation, the record)
    sweep.py      many runs, resumable, local / dask / serial
    tracking.py   the profile over training (`rksp.track`); integrations.py: the HF Trainer callback

The user-facing import path `rksp.train` (TrainConfig, train, ...) is kept as a facade.
"""
from rksp.harness import resolve  # noqa: F401 -- adds the resolving checks to TrainConfig.validate()
