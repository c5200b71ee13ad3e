"""Table builders, one module per topic: each builder is a function `runs DataFrame -> table DataFrame`
(plus the claims it supports); the notebooks call them and write the results with `results_io`.

    norms.py          Tables 1-2, App. H calibration, Fig. 1 (normalization, AUROC, ECE)
    methods.py        Tables 3, 4, 6, 13, 14 (recall method tables) and their statistics
    kss_paths.py      the KSS gradient-path ablation (notebook 06)
    maxlr.py          Table 5 (max stable LR)
    scale.py          Tables 7-9 (LM and ViT)
    architectures.py  Tables 11, 16-18
    pretrained.py     Tables 10, 12, 15 (pretrained LMs)
    delay.py          delay vs prevention (notebook 13, issue 21): KSS dose x frequency, QK-LayerNorm /
                      z-loss, the attention diagnostic (not the paper's tables; no claims)
    common.py         what every builder shares
"""
