"""Floor 5, the methods the paper compares: stabilizers (hooks) and optimizers, each registered once
where it is defined (`@register_hooks` / `@register_optimizer`), and `rows.py`, the named rows of the
paper's method tables (row name -> config overrides).
"""
