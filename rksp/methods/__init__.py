"""Floor 5, the methods the paper compares: stabilizers (hooks) and optimizers, each registered once
where it is defined (`@register_hooks` / `@register_optimizer`), and `rows.py`, the named rows of the
paper's method tables (one `MethodRow` each: id, display string, config overrides, the paper's numbers).
"""
