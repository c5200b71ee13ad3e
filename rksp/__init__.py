"""Residual Koopman Spectral Profiling (RKSP) and Koopman Spectral Shaping (KSS).

Reference implementation of arXiv 2602.22988. Main entry points::

    import rksp
    prof = rksp.profile(model, inputs)          # one forward pass at init
    prof.layers, prof.summary, prof.plot()
    rksp.whitened_dmd(X, Y)                     # raw d x N snapshot matrices
"""
from .dmd import WhitenedDMD, randomized_dmd_eigvals, whitened_dmd
from .errors import RKSPInputError
from .kss import KSS, KSSConfig, kss_layer_loss
from .profiling import Profile, profile, profile_hidden
from .risk import RiskModel

__version__ = "0.1.0"


__all__ = ["whitened_dmd", "randomized_dmd_eigvals", "WhitenedDMD", "RKSPInputError",
           "profile", "profile_hidden", "Profile", "KSS", "KSSConfig", "kss_layer_loss"]
__all__ += ["RiskModel"]
