"""Residual Koopman Spectral Profiling (RKSP) and Koopman Spectral Shaping (KSS).

Reference implementation of arXiv 2602.22988. Main entry points::

    import rksp
    prof = rksp.profile(model, inputs)          # one forward pass at init
    prof.layers, prof.summary, prof.plot()
    rksp.whitened_dmd(X, Y)                     # raw d x N snapshot matrices
    tracker = rksp.track(model, batch, every=50, kss=rksp.KSSConfig())   # over training
    rksp.RKSPCallback(batch, every=50).attach(trainer)                   # HF Trainer
"""
from rksp.core.dmd import WhitenedDMD, randomized_dmd_eigvals, whitened_dmd
from rksp.errors import RKSPInputError
from rksp.core.kss import KSS, KSSConfig, kss_layer_loss
from rksp.core.profiling import Profile, profile, profile_hidden
from rksp.core.risk import RiskModel


def __getattr__(name):  # lazy: the training harness / transformers load only when tracking is used
    import importlib
    if name in ("integrations", "RKSPCallback"):
        mod = importlib.import_module("rksp.harness.integrations")
        return mod if name == "integrations" else mod.RKSPCallback
    if name in ("track", "Tracker", "tracking"):
        mod = importlib.import_module("rksp.harness.tracking")
        return mod if name == "tracking" else getattr(mod, name)
    raise AttributeError(f"module 'rksp' has no attribute {name!r}")

__version__ = "0.1.0"


__all__ = ["whitened_dmd", "randomized_dmd_eigvals", "WhitenedDMD", "RKSPInputError",
           "profile", "profile_hidden", "Profile", "KSS", "KSSConfig", "kss_layer_loss"]
__all__ += ["RiskModel", "track", "Tracker"]
