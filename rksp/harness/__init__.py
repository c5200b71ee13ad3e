"""Floor 4, the training harness: one `TrainConfig` -> one run -> one JSON record; many -> a sweep.

    config.py     TrainConfig, validation, the config hash
    registry.py   @register_optimizer / @register_hooks and name resolution (plugins load lazily)
    build.py      task data, the model, the seeded streams (`build_run`, `model_at_init`)
    hooks.py      the hook protocol (`TrainHooks`) and the step context
    labels.py     divergence labels (Sec. 3.1) and the Table 2 gradient baselines
    loop.py       `train(cfg)`: profile at init, the loop, evaluation, the record
    record.py     JSON helpers, reading records, records -> rows
    sweep.py      many runs, resumable, local / dask / serial
    tracking.py   the profile over training (`rksp.track`); integrations.py: the HF Trainer callback

The user-facing import path `rksp.train` (TrainConfig, train, ...) is kept as a facade.
"""
