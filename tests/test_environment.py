"""The conda environment and the pip project pin the same packages at the same versions."""
import re
import tomllib

import yaml

from dml_core.core.paths import REPO_ROOT


def _norm(req: str) -> tuple[str, str]:
    name, _, version = req.partition("==")
    return re.sub(r"[-_.]+", "-", name.strip().lower()), version.strip()


def test_environment_yml_pins_equal_pyproject():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    pyproject = dict(_norm(r) for r in project["dependencies"]
                    + project["optional-dependencies"]["dev"]
                    + project["optional-dependencies"]["cluster"])
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda = dict(_norm(r) for r in pip_section if not r.startswith("-e"))
    assert conda == pyproject
    assert all(v for v in pyproject.values()), "every dependency is pinned with =="


def test_atomic_writes_leave_no_temporary_file_and_usual_permissions(tmp_path):
    import os
    import stat

    from dml_core.core import io

    target = tmp_path / "a.json"
    io.write_json(target, {"x": 1})
    assert io.read_json(target) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
