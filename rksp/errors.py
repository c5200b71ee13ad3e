"""Errors raised for bad input; the CLI turns them into one line and exit status 2."""


class RKSPInputError(ValueError):
    """Bad input: wrong shape, too few snapshots, NaN/Inf, no detectable blocks, ..."""


class ConfigError(RKSPInputError):
    """An invalid TrainConfig (raised before anything runs)."""
