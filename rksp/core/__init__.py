"""Floor 1, the maths: whitened DMD (Eqs. 6-9), the spectral metrics (Eqs. 3-10), the Kreiss constant,
residual-stream snapshots, `profile` -> `Profile`, the KSS penalty (Eqs. 11-14) and the risk model.

Imports only `rksp.defaults` / `rksp.errors`; everything above it (models, harness, experiments)
imports from here. The public names are re-exported by `rksp` itself (`rksp.profile`, ...).
"""
