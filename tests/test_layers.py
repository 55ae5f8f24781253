"""The library's three layers: `dlcourse.course` (the course's machine learning) below
`dlcourse.pipeline` (the machinery that runs it as DVC stages tracked in MLflow) below
`dlcourse.report` (the claims and the document). A module imports only from its own layer or
those below it; `dlcourse.files` (atomic writes, checked loads) and `dlcourse.progress` (what a long
stage prints on stderr, used by the course's training loops and by the stages) are the base, below
all three.
Imports inside functions count: they run as well."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "dlcourse"
LAYERS = {"files": 0, "progress": 0, "course": 1, "pipeline": 2, "report": 3}


def layer(module: str) -> int | None:
    """The layer of a dotted project module (`dlcourse.course.data`); None outside the project."""
    parts = module.split(".")
    if parts[0] != "dlcourse" or len(parts) < 2 or parts[1] == "__init__":
        return None
    return LAYERS[parts[1]]


def imports(path: Path, root: Path = PACKAGE) -> list[str]:
    """The dotted project modules (or packages) one file imports, relative imports resolved."""
    package = path.relative_to(root.parent).parent.parts
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1]) if node.level else ""
            base = ".".join(filter(None, [base, node.module]))
            found += [f"{base}.{alias.name}" for alias in node.names]
    return [name for name in found if name.startswith("dlcourse.")]


def upward_imports(root: Path = PACKAGE) -> dict[str, list[str]]:
    upward = {}
    for path in sorted(root.rglob("*.py")):
        name = ".".join(path.relative_to(root.parent).with_suffix("").parts)
        own = layer(name)
        if own is None:  # the package's own __init__
            continue
        above = sorted(module for module in imports(path, root) if (layer(module) or 0) > own)
        if above:
            upward[name] = above
    return upward


def test_every_module_belongs_to_a_layer():
    for path in PACKAGE.iterdir():
        if path.name not in ("__init__.py", "__pycache__"):
            assert path.stem in LAYERS, f"{path}: not in a layer of {sorted(LAYERS)}"


def test_no_module_imports_from_a_layer_above_its_own():
    assert upward_imports() == {}


def test_the_packages_initialisers_import_nothing():
    """Importing `dlcourse.course.data` runs every `__init__.py` above it: they hold docstrings only,
    so that a stage loads no module it does not use (and dvc.yaml need not declare them)."""
    for path in PACKAGE.rglob("__init__.py"):
        body = ast.parse(path.read_text()).body
        assert all(isinstance(node, ast.Expr) for node in body), f"{path}: more than a docstring"


@pytest.mark.parametrize("module, line", [("course/models.py", "from ..pipeline import params"),
                                          ("pipeline/registry.py", "    from ..report.environment import x"),
                                          ("files.py", "from dlcourse.course import data"),
                                          ("progress.py", "from .pipeline import tracking")])
def test_an_upward_import_is_caught(tmp_path, module, line):
    copy = tmp_path / "dlcourse"
    for path in PACKAGE.rglob("*.py"):
        (copy / path.relative_to(PACKAGE)).parent.mkdir(parents=True, exist_ok=True)
        (copy / path.relative_to(PACKAGE)).write_text(path.read_text())
    target = copy / module
    target.write_text(target.read_text() + f"\n\ndef f():\n    pass\n{line}\n" if line.startswith(" ")
                      else target.read_text() + f"\n{line}\n")
    name = "dlcourse." + module.removesuffix(".py").replace("/", ".")
    assert name in upward_imports(copy)
