"""The house plan (docs/architecture.md): folders are dependency floors, read from the source.

A module imports only from its own floor or from floors below it (module-level and lazy imports
alike), the imports form no cycle (every import statement of a module, module-level or inside a
function, and those under `if TYPE_CHECKING:` too, which only annotate), no private name crosses a
module boundary and no module grows past MAX_LINES. The stable import paths users rely on still resolve.
"""
import ast
import importlib
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "rksp"
MAX_LINES = 650   # "no module over ~600 lines" (issue 12); the largest today is stats.py at 610

# prefix -> floor; the longest matching prefix wins
FLOORS = {
    "rksp.errors": 0, "rksp.defaults": 0, "rksp.atomic": 0, "rksp.checks": 0,
    "rksp.core": 1,
    "rksp.models": 2, "rksp.data": 2,
    "rksp.pretrained": 3,
    "rksp.harness": 4,
    "rksp.methods": 5,
    "rksp.experiments": 6,
    "rksp": 7,   # the package itself, cli, reproduce, __main__ and the facades rksp.train / rksp.sweep
}


def floor(mod: str) -> int:
    best = max((p for p in FLOORS if mod == p or mod.startswith(p + ".")), key=len)
    return FLOORS[best]


def modules():
    out = {}
    for path in PKG.rglob("*.py"):
        parts = path.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODS = modules()


def _type_checking_only(tree: ast.AST) -> set:
    """ids of the import nodes under `if TYPE_CHECKING:` (annotations only: never run)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and (
                (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
                or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")):
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return out


def imports_in(source: str, name: str, is_pkg: bool, mods):
    """(target module, names, top-level?, runs?) for every import of rksp anywhere in `source`
    (module `name`); `runs` is False for imports under `if TYPE_CHECKING:`."""
    tree = ast.parse(source)
    annotations_only = _type_checking_only(tree)
    found = []
    for node in ast.walk(tree):
        runs = id(node) not in annotations_only
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".") if is_pkg else name.split(".")[:-1]
                parts = parts[:len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            if not base.startswith("rksp"):
                continue
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods]
            names = [a.name for a in node.names if f"{base}.{a.name}" not in mods]
            for sub in subs:
                found.append((sub, [], node in tree.body, runs))
            if names:
                found.append((base, names, node in tree.body, runs))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("rksp"):
                    found.append((a.name, [], node in tree.body, runs))
    return found


def imports(name: str):
    """(target module, names, top-level?, runs?) for every import of rksp in module `name`."""
    path = MODS[name]
    return imports_in(path.read_text(), name, path.name == "__init__.py", MODS)


def import_cycles(graph):
    """Every cycle a depth-first walk of `graph` (module -> modules it imports) closes; a package
    importing its own submodules (re-exports) is not a cycle of modules."""
    state, cycles = {}, []

    def visit(u, stack):
        state[u] = 1
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                cycles.append(stack[stack.index(v):] + [v])
            elif v not in state:
                visit(v, stack + [v])
        state[u] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return [c for c in cycles if not any(a.startswith(b + ".") or b.startswith(a + ".") for a, b in zip(c, c[1:]))]


def import_graph(sources, type_checking: bool = False):
    """module -> the rksp modules it imports when it runs (any level; with `type_checking`, also
    those under `if TYPE_CHECKING:`), from {module name: (source, is_pkg)}."""
    mods = set(sources)
    return {m: {t for t, _, _, runs in imports_in(src, m, is_pkg, mods) if (runs or type_checking) and t in mods
                and t != m} for m, (src, is_pkg) in sources.items()}


def test_the_floors_cover_every_module():
    assert {"rksp.core.dmd", "rksp.harness.loop", "rksp.methods.stabilizers", "rksp.experiments.tables.norms",
            "rksp.pretrained.hf", "rksp.cli"} <= set(MODS)
    assert floor("rksp.core.dmd") == 1 and floor("rksp.experiments.tables.norms") == 6 and floor("rksp.cli") == 7


def test_no_module_imports_from_a_floor_above_it():
    upward = [f"{m} (floor {floor(m)}) imports {t} (floor {floor(t)})"
              for m in MODS for t, _, _, _ in imports(m) if floor(t) > floor(m)]
    assert upward == []


def test_module_level_imports_have_no_cycle():
    graph = {m: {t for t, _, top, runs in imports(m) if top and runs and t in MODS and t != m} for m in MODS}
    assert import_cycles(graph) == []


def test_no_import_cycle_at_all_including_imports_inside_functions():
    graph = import_graph({m: (p.read_text(), p.name == "__init__.py") for m, p in MODS.items()})
    assert import_cycles(graph) == []


def test_no_import_cycle_even_counting_type_checking_imports():
    """An annotation-only import is still a dependency: the type belongs in the lower module."""
    graph = import_graph({m: (p.read_text(), p.name == "__init__.py") for m, p in MODS.items()}, type_checking=True)
    assert import_cycles(graph) == []


def test_the_cycle_check_sees_imports_inside_functions_and_type_checking_ones_when_asked():
    a = "import torch\n\ndef f():\n    from rksp.b import g\n    return g\n"
    b = "from rksp.a import f\n"
    assert import_cycles(import_graph({"rksp.a": (a, False), "rksp.b": (b, False)})) == [["rksp.a", "rksp.b", "rksp.a"]]
    a_annot = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from rksp.b import g\n"
    assert import_cycles(import_graph({"rksp.a": (a_annot, False), "rksp.b": (b, False)})) == []
    a_typing = "import typing\nif typing.TYPE_CHECKING:\n    from rksp.b import g\n"
    assert import_cycles(import_graph({"rksp.a": (a_typing, False), "rksp.b": (b, False)})) == []
    for src in (a_annot, a_typing):
        graph = import_graph({"rksp.a": (src, False), "rksp.b": (b, False)}, type_checking=True)
        assert import_cycles(graph) == [["rksp.a", "rksp.b", "rksp.a"]]


def test_the_harness_is_a_one_way_pipeline():
    """config -> resolve -> build -> loop: the config imports nothing from the harness, and no module
    imports one that comes after it in the pipeline."""
    order = ["rksp.harness.config", "rksp.harness.registry", "rksp.harness.hooks", "rksp.harness.resolve",
             "rksp.harness.build", "rksp.harness.loop"]
    assert not [t for t, _, _, runs in imports("rksp.harness.config") if runs and t.startswith("rksp.harness")]
    backward = [f"{m} imports {t}" for i, m in enumerate(order) for t, _, _, runs in imports(m)
                if runs and t in order[i + 1:]]
    assert backward == []


def test_no_private_name_crosses_a_module():
    leaks = [f"{m} imports {n} from {t}" for m in MODS for t, names, _, _ in imports(m) for n in names
             if n.startswith("_") and not n.startswith("__")]
    assert leaks == []


def test_no_module_is_longer_than_the_limit():
    long = {m: n for m, p in MODS.items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_the_user_facing_import_paths_still_resolve():
    import rksp
    import rksp.sweep as S
    import rksp.train as T
    from rksp.harness import config, hooks, loop, registry, sweep
    assert T.TrainConfig is config.TrainConfig and T.train is loop.train and T.TrainHooks is hooks.TrainHooks
    assert T.register_hooks is registry.register_hooks and S.run is sweep.run
    assert callable(rksp.profile) and rksp.Profile and callable(rksp.whitened_dmd) and callable(rksp.track)


def test_every_rksp_subcommand_resolves_to_a_function():
    from rksp.cli import PASSTHROUGH, build_parser
    for name, (mod, fn, _) in PASSTHROUGH.items():
        assert callable(getattr(importlib.import_module(mod), fn)), name
    help_text = build_parser().format_help()
    assert all(name in help_text for name in ("profile", *PASSTHROUGH))


@pytest.mark.parametrize("name", ["sweep", "reproduce", "runs", "pretrained", "fetch", "init-study", "kernels"])
def test_every_subcommand_prints_its_help(name, capsys):
    from rksp.cli import main
    try:
        code = main([name, "--help"])
    except SystemExit as exc:   # argparse exits after --help; `rksp sweep` returns the status instead
        code = exc.code
    assert code == 0
    assert "usage" in capsys.readouterr().out.lower()
