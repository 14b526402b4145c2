"""The package's import graph (docs/ARCHITECTURE.md, "Layout"): no module imports, even inside a
function, a module that imports it back, directly or through others."""
from __future__ import annotations

import ast
from pathlib import Path

import dml_core

PACKAGE = Path(dml_core.__file__).resolve().parent

#: The layers of docs/ARCHITECTURE.md, bottom up, by folder under ``dml_core``: a module imports only
#: from its own layer or the layers below it.
LAYERS = [
    {"core"},
    {"data", "evaluation", "models", "losses"},
    {"methods"},
    {"training"},
    {"profiles"},
    {"report"},
    {"study", "batch"},
]


def module_files(package: Path = PACKAGE) -> dict[str, Path]:
    """``{dotted module name: file}`` for every module of the package (``__init__`` = package)."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its file (function level too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x, from ..io import y
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:  # `from pkg import module` imports the module itself
                sub = f"{source}.{alias.name}"
                found.add(sub if sub in modules else source)
    return {m for m in found if m in modules and m != name}


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    modules = module_files(package)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle ``[a, b, ..., a]`` of ``graph``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_checker_sees_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from pkg.sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("from ..c import x\n")
    (pkg / "c.py").write_text("import os\n\ndef g():\n    from pkg import a\n")
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.c"}
    assert find_cycle(graph) == ["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]
    (pkg / "c.py").write_text("import os\n")
    assert find_cycle(import_graph(pkg)) is None


def test_dml_core_has_no_import_circle():
    graph = import_graph()
    assert {"dml_core.batch", "dml_core.profiles", "dml_core.batch.execution"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, (
        "import circle: " + " -> ".join(cycle) + ". Move what both need into a lower module "
        "(docs/ARCHITECTURE.md, 'Layout: who imports whom').")


def test_the_batch_layers_import_downwards_only():
    """Profiles, execution, Slurm back-end and pre-flight never import the batch driver, and the
    report reads profiles without it (docs/ARCHITECTURE.md)."""
    graph = import_graph()
    for low in ("dml_core.profiles.slurm", "dml_core.profiles.profile", "dml_core.batch.execution",
                "dml_core.batch.cluster", "dml_core.batch.preflight", "dml_core.report.book"):
        assert not {"dml_core.batch", "dml_core.batch.driver"} & graph[low], f"{low} imports the driver"
    assert "dml_core.batch.execution" not in graph["dml_core.profiles.profile"]
    assert not {"dml_core.batch.cluster", "dml_core.batch.preflight"} & graph["dml_core.batch.execution"]


def layer_of(module: str) -> int | None:
    """The index in :data:`LAYERS` of ``dml_core.<name>[.<sub>...]``; None when unplaced."""
    name = module.split(".")[1]
    return next((i for i, names in enumerate(LAYERS) if name in names), None)


def test_the_top_of_the_package_holds_only_the_layers_packages():
    """``dml_core/`` shows the layers: its top holds the layer packages and ``__init__.py`` only."""
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert not loose, f"loose modules {loose} at the top of dml_core/: move each into its layer's folder"
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert folders == set().union(*LAYERS), "every package of dml_core/ is a layer's, and only those"


def test_every_import_points_down_the_layers():
    graph = import_graph()
    modules = [m for m in graph if m != "dml_core"]
    unplaced = sorted({m.split(".")[1] for m in modules if layer_of(m) is None})
    assert not unplaced, (f"packages {unplaced} have no layer: add each to LAYERS here and to "
                          "docs/ARCHITECTURE.md ('Layout: who imports whom')")
    upward = sorted(f"{a} (layer {layer_of(a) + 1}) imports {b} (layer {layer_of(b) + 1})"
                    for a in modules for b in graph[a] if b != "dml_core"
                    and layer_of(b) > layer_of(a))
    assert not upward, "imports that point up the layers:\n" + "\n".join(upward)
