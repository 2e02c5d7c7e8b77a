"""A command refuses installed packages that t2t-mtl's requirements (setup.py's INSTALL_REQUIRES) do not allow, naming
each with its installed and needed version, as an environment that held older versions gives them when t2t-mtl is
installed into it without pip resolving them. The environments here are dist-info folders put first on sys.path."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from t2t_mtl import dependency_floors
from t2t_mtl.cli import main as cli_main
from t2t_mtl.dependency_floors import unmet_requirements

SETUP = Path(__file__).resolve().parents[1] / "setup.py"
PROBE = "floors-probe"


def _install(root: Path, name: str, version: str, requires: tuple = ()) -> None:
    """A distribution `name` `version` (requiring `requires`) as pip would leave it in `root`."""
    folder = root / f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}.dist-info"
    folder.mkdir()
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
             *(f"Requires-Dist: {r}" for r in requires)]
    (folder / "METADATA").write_text("\n".join(lines) + "\n")


def _setup_requirements() -> list:
    """setup.py's INSTALL_REQUIRES, read from its source."""
    for node in ast.parse(SETUP.read_text()).body:
        if isinstance(node, ast.Assign) and [t.id for t in node.targets] == ["INSTALL_REQUIRES"]:
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py has no INSTALL_REQUIRES")


def _floors() -> dict:
    """name → the floor setup.py gives it (its `>=` version), for the requirements that apply on this machine."""
    from packaging.requirements import Requirement

    floors = {}
    for line in _setup_requirements():
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate():
            floors[requirement.name] = re.search(r">=\s*([\w.]+)", line).group(1)
    return floors


def _below(version: str) -> str:
    """A release just under `version`: its last non-zero part less one (5.3 → 5.2, 0.4.1 → 0.4.0, 6 → 5)."""
    parts = [int(p) for p in version.split(".")]
    last = max(i for i, p in enumerate(parts) if p)
    parts[last] -= 1
    return ".".join(map(str, parts))


@pytest.fixture
def environment(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_each_package_at_its_setup_py_floor_is_accepted_and_each_under_it_is_refused_by_name(environment):
    floors = _floors()
    assert {"torch", "transformers", "datasets", "deepspeed", "evaluate"} <= set(floors)
    _install(environment, PROBE, "1", tuple(_setup_requirements()))
    at_floor = environment / "at_floor"
    at_floor.mkdir()
    for name, floor in floors.items():
        _install(at_floor, name, floor)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(at_floor))
        assert unmet_requirements(PROBE) == []
    for name, floor in floors.items():
        _install(environment, name, _below(floor))
    unmet = unmet_requirements(PROBE)
    assert len(unmet) == len(floors), unmet
    for problem, (name, floor) in zip(unmet, floors.items()):
        assert problem.startswith(f"{name} {_below(floor)} is installed; t2t-mtl needs {name}"), problem
        assert f">={floor}" in problem and problem.endswith("')"), problem


def test_a_missing_package_is_named_and_extras_and_other_platforms_are_not_checked(environment):
    _install(environment, PROBE, "1", ("gone-pkg>=1.0", "devonly>=2; extra == 'dev'",
                                       "elsewhere>=3; platform_system == 'Nowhere'"))
    assert unmet_requirements(PROBE) == ["gone-pkg is not installed; t2t-mtl needs gone-pkg>=1.0 "
                                         "(pip install 'gone-pkg>=1.0')"]


def test_without_an_installed_distribution_nothing_is_checked():
    assert unmet_requirements("no-such-distribution-here") == []


def test_a_command_refuses_an_older_package_before_it_runs(environment, monkeypatch, capsys):
    _install(environment, PROBE, "1", ("transformers>=5.3,<6", "jinja2>=3.1,<4"))
    _install(environment, "transformers", "5.0.0")
    _install(environment, "jinja2", "3.0.3")  # (each on a line of its own; mutation testing: one line passed)
    monkeypatch.setattr(dependency_floors, "DISTRIBUTION", PROBE)
    assert cli_main(["tasks", "list"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ("error: transformers 5.0.0 is installed; t2t-mtl needs transformers<6,>=5.3 "
                            "(pip install 'transformers<6,>=5.3')\n"
                            "error: jinja2 3.0.3 is installed; t2t-mtl needs jinja2<4,>=3.1 "
                            "(pip install 'jinja2<4,>=3.1')\n")


def test_a_development_release_above_a_floor_is_accepted_and_a_pre_release_of_the_floor_is_refused(environment):
    # mutation testing: reading the installed version without pre-releases passed its tests; under packaging
    # 20-24 (its floor is 20) it then refused a transformers installed from its main branch (5.14.0.dev0) or a torch
    # nightly as below floors they are above (packaging 26 accepts them either way)
    _install(environment, PROBE, "1", ("transformers>=5.13", "torch>=2.8", "tokenizers>=0.22"))
    _install(environment, "transformers", "5.14.0.dev0")
    _install(environment, "torch", "2.10.0.dev20251201")
    _install(environment, "tokenizers", "0.22.0rc1")  # (0.22.0rc1 comes before 0.22.0: under the floor)
    assert unmet_requirements(PROBE) == ["tokenizers 0.22.0rc1 is installed; t2t-mtl needs tokenizers>=0.22 "
                                         "(pip install 'tokenizers>=0.22')"]


@pytest.mark.parametrize("package, args, installed", [
    ("numpy", ("tasks", "list"), True),  # imported by the command modules (sampling), before the arguments are read
    ("datasets", ("tasks", "preview", "parity", "-n", "1"), True),  # imported by the command as it runs
    # the system's Python given the checkout on PYTHONPATH: no t2t-mtl distribution, nor packaging (that
    # unmet_requirements imported before it found no distribution to check)
    ("numpy", ("tasks", "list"), False),
])
def test_a_package_this_python_cannot_import_is_named_with_the_python_in_one_line(package, args, installed):
    # a rank started with another node's or the system's Python (a cluster node without the job's environment) was
    # a traceback of t2t-mtl's own imports ending in "No module named 'numpy'", one per rank
    import subprocess
    import sys

    missing = (package,) if installed else (package, "packaging")
    child = ("import importlib.abc, sys\n"
             "class Missing(importlib.abc.MetaPathFinder):\n"
             "    def find_spec(self, name, path=None, target=None):\n"
             f"        if name.split('.')[0] in {missing!r}:\n"
             "            raise ModuleNotFoundError(f\"No module named '{name}'\", name=name)\n"
             "sys.meta_path.insert(0, Missing())\n"
             "import t2t_mtl.dependency_floors as floors\n"
             f"floors.DISTRIBUTION = {dependency_floors.DISTRIBUTION if installed else 'absent-here'!r}\n"
             "from t2t_mtl.cli import main\n"
             "sys.exit(main(sys.argv[1:]))\n")
    done = subprocess.run([sys.executable, "-c", child, *args], capture_output=True, text=True, timeout=300,
                          cwd=SETUP.parent)
    assert (done.returncode, done.stdout) == (2, ""), done.stderr[-3000:]
    assert done.stderr == (f"error: t2t-mtl cannot import {package} (No module named '{package}') in the Python it "
                           f"was started with, {sys.executable}: start it with the Python of the environment t2t-mtl "
                           f"is installed in (on a cluster, the same environment on every node), or install "
                           f"{package} there\n")


def _parser_importing(monkeypatch, name: str) -> None:
    """The command modules' imports, as `main` builds its parser, meeting a missing module `name`."""
    import t2t_mtl.cli

    def build_parser():
        raise ModuleNotFoundError(f"No module named '{name}'", name=name)
    monkeypatch.setattr(t2t_mtl.cli, "build_parser", build_parser)


def test_a_missing_package_that_the_metadata_names_as_unmet_is_said_as_unmet(monkeypatch, capsys):
    # the installed distribution's requirements name the cause with the pip line to fix it; the generic line is for
    # a Python whose t2t-mtl has no metadata to check
    import t2t_mtl.cli

    unmet = "numpy is not installed; t2t-mtl needs numpy>=1.24 (pip install 'numpy>=1.24')"
    monkeypatch.setattr(t2t_mtl.cli, "unmet_requirements", lambda: [unmet])
    _parser_importing(monkeypatch, "numpy")
    assert cli_main(["tasks", "list"]) == 2
    assert capsys.readouterr().err == f"error: {unmet}\n"


@pytest.mark.parametrize("module", ["t2t_mtl.sampling.gone", "task_registry.gone"])
def test_a_missing_module_of_t2t_mtl_itself_is_raised_as_it_is(monkeypatch, module):
    # a fault of the installation (a module of its own missing), not of the Python it was started with: telling the
    # user to install t2t_mtl into that Python would hide the module's name and the import that needed it
    _parser_importing(monkeypatch, module)
    with pytest.raises(ModuleNotFoundError, match=f"^No module named '{module}'$"):
        cli_main(["tasks", "list"])
