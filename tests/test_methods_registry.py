"""The method registry (dml_core.methods.registry): each method declared once; every other map of
method names (classes, recipes, notebooks, the fair protocol, the pre-flight, the report) derived."""
from __future__ import annotations

import ast
import re
import subprocess
import sys

import pytest

from dml_core.core.paths import NOTEBOOKS_DIR, PACKAGE_DIR, REPO_ROOT
from dml_core.methods import build_method, fair, recipes
from dml_core.methods.registry import SPECS, declare_method, methods_of_notebook, published
from dml_core.profiles import params


def test_the_derived_maps_follow_the_declarations():
    import dml_core.methods as methods
    from dml_core.report.figures import method_color
    from dml_core.report.reported import METHOD_NAMES

    assert published() == recipes.METHODS == tuple(n for n in SPECS if n != "toy")
    assert methods.METHODS == {n: s.load() for n, s in SPECS.items()}
    assert fair.NOTEBOOK == {n: f"{SPECS[n].notebook}.ipynb" for n in published()}
    assert fair.LOSS_HPARAMS == {n: SPECS[n].loss_hparams for n in published()}
    assert METHOD_NAMES == {n: SPECS[n].label for n in published()}
    assert all(method_color(n) == SPECS[n].color for n in published())
    assert params.notebook_method_of()["05_dynamic_margin"] == ("dynamic_margin", "proxy_anchor")
    assert params.NOTEBOOK_PARAMETERS["05_dynamic_margin"]["method"][2] == \
        methods_of_notebook("05_dynamic_margin")
    assert params.check_registries() == []
    # the fair protocol's other tables name declared methods only
    assert set(fair.LOSS_GRID) == set(published()) and set(fair.DEVIATIONS) <= set(published())


def test_every_declaration_is_complete():
    for name, spec in SPECS.items():
        cls = spec.load()
        assert cls.name == name and spec.path.startswith("dml_core.methods.")
        assert (NOTEBOOKS_DIR / f"{spec.notebook}.ipynb").is_file(), name
        if spec.rows is None:  # the toy
            continue
        rows = [recipes.recipe_by_name(n) for n in recipes.list_recipes(method=name)]
        assert set(spec.loss_hparams) <= set(rows[0]), name
        assert f"{name}/{spec.demo.base}" in recipes.list_recipes(method=name)
        assert spec.color and spec.label


def test_build_method_names_its_method_from_the_declaration():
    torch = pytest.importorskip("torch")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        m = build_method(recipes.get_recipe("proxy_anchor", "demo", "resnet18_s2"), 5)
    finally:
        torch.set_num_threads(n)
    assert type(m) is SPECS["proxy_anchor"].load() and m.name == "proxy_anchor"
    with pytest.raises(ValueError, match="valid methods: normsoftmax, cgd"):
        build_method({"method": "arcface"}, 5)


def test_a_name_is_declared_once():
    with pytest.raises(ValueError, match="declared twice"):
        declare_method("cgd", "dml_core.methods.cgd:CGDMethod", label="CGD again")
    assert SPECS["cgd"].label == "CGD"


def _string_constants(path):
    """The string literals of a module, docstrings left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and n.body and isinstance(n.body[0], ast.Expr)
            and isinstance(n.body[0].value, ast.Constant)}
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
            and isinstance(n.value, str) and id(n) not in docs]


def test_only_the_declarations_name_the_training_notebooks():
    """Which notebook trains which method is said once: no other module spells a training
    notebook's name (fair.NOTEBOOK, params, the pre-flight derive it)."""
    stems = {s.notebook for s in SPECS.values() if s.rows is not None}
    found = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        hits = [v for v in _string_constants(path) if re.sub(r"\.ipynb$", "", v) in stems]
        if hits:
            found[str(path.relative_to(REPO_ROOT))] = hits
    assert list(found) == ["dml_core/methods/recipes.py"], found


def test_reading_the_declarations_and_the_schema_does_not_import_torch():
    code = ("import sys\nfrom dml_core.methods import recipes, registry, schema\n"
            "from dml_core.profiles import load_profile, parse_settings\n"
            "load_profile('demo')  # every run's parameters and overrides checked\n"
            "from dml_core.report import reported\n"
            "parse_settings(['lr=1e-3', 'epochs=2'])\n"
            "assert recipes.get_recipe('cgd', 'demo', 'resnet18_s2', lr=1e-3)['lr'] == 0.001\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=REPO_ROOT)
    assert out.stdout.strip() == "False", out.stderr


def test_the_command_lists_the_declared_methods(capsys):
    from dml_core.methods.__main__ import main

    assert main([]) == 0
    out = capsys.readouterr().out
    assert all(f"{name} " in out for name in SPECS) and "# Recipe keys" in out


def test_the_declared_loss_hyper_parameters_are_the_shared_builds_loss_keys():
    """A method's declared loss hyper-parameters (what the fair protocol lets it keep, and tunes)
    are exactly the keys of its ``loss_spec``, the only keys its shared build reads from the loss."""
    from dml_core.methods import METHODS
    from dml_core.methods.registry import SPECS, published

    for m in published():
        assert tuple(SPECS[m].loss_hparams) == tuple(METHODS[m].loss_spec.keys), m
