"""dvc.yaml declares every project file a stage's code reads: the import closure of its script
through src/dlcourse, computed with `ast`. A module missing from a stage's deps would let DVC skip
that stage after an edit of the module, and show a stale result."""

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "dlcourse"

# Modules that cannot change any output a stage caches or shows, so that an edit of them reruns
# nothing. Nothing else belongs here.
NOT_DEPENDENCIES = {
    "src/dlcourse/__init__.py",  # the package's docstring and version
    "src/dlcourse/course/__init__.py",  # the subpackages' docstrings
    "src/dlcourse/course/gans/__init__.py",
    "src/dlcourse/pipeline/__init__.py",
    "src/dlcourse/report/__init__.py",
    "src/dlcourse/pipeline/tracking.py",  # MLflow logging: run records are written by it, results are not
    "src/dlcourse/pipeline/dvc_params.py",  # the declared params a stage's MLflow run logs
    "src/dlcourse/pipeline/registry.py",  # MLflow models and the Model Registry: logged beside the outputs, never into them
    "src/dlcourse/report/champions.py",  # the claims' tags and champion aliases the report sets in the registry, alike
    "src/dlcourse/pipeline/guards.py",  # what the logged MLflow models refuse: shipped in them, never in an output
    "src/dlcourse/pipeline/params.py",  # the schema of params.yaml: refuses bad params, passes good ones unchanged
    "src/dlcourse/pipeline/param_sections.py",  # its sections, alike
    "src/dlcourse/pipeline/layout.py",  # where outputs go: a change there breaks dvc.yaml's outs loudly
}


def module_file(name: str) -> Path | None:
    """The project file of a dotted module name, or None for a module outside the project."""
    if name != "dlcourse" and not name.startswith("dlcourse."):
        return None
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def imported_files(path: Path) -> set[Path]:
    """The project modules one file imports (`import dlcourse.x`, `from dlcourse import x`, `from .x import y`)."""
    # the package a relative import starts from: `dlcourse.course` for src/dlcourse/course/data.py
    package = path.relative_to(PACKAGE.parent).parent.parts if path.is_relative_to(PACKAGE) else ()
    found = set()
    tree = ast.parse(path.read_text(), str(path))
    # `if TYPE_CHECKING:` imports never run: type annotations only
    typing_only = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
                   for inner in ast.walk(node)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1]) if node.level else ""
            base = ".".join(filter(None, [base, node.module]))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {file for name in names if (file := module_file(name)) is not None and file.exists()}
    return found


def import_closure(script: Path, through_exempt: bool = False) -> set[str]:
    """Every project file the script runs: itself and all it imports, transitively (not through the
    modules of NOT_DEPENDENCIES, whose imports serve them alone, unless `through_exempt`)."""
    seen, todo = set(), [script]
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            if through_exempt or path.relative_to(ROOT).as_posix() not in NOT_DEPENDENCIES:
                todo += imported_files(path)
    return {path.relative_to(ROOT).as_posix() for path in seen}


def stages(pipeline: dict) -> dict[str, dict]:
    """Each stage definition of dvc.yaml (a `foreach` stage's template once)."""
    return {name: definition.get("do", definition) for name, definition in pipeline["stages"].items()}


def undeclared(pipeline: dict) -> dict[str, list[str]]:
    missing = {}
    for name, stage in stages(pipeline).items():
        script = ROOT / stage["cmd"].split()[1]
        needed = import_closure(script) - NOT_DEPENDENCIES
        gaps = sorted(needed - set(stage.get("deps", [])))
        if gaps:
            missing[name] = gaps
    return missing


PIPELINE = yaml.safe_load((ROOT / "dvc.yaml").read_text())


def test_every_stage_declares_every_project_file_its_script_runs():
    assert undeclared(PIPELINE) == {}


def test_every_declared_library_module_is_one_the_stage_runs():
    extra = {}
    for name, stage in stages(PIPELINE).items():
        closure = import_closure(ROOT / stage["cmd"].split()[1], through_exempt=True)
        code = {dep for dep in stage.get("deps", []) if dep.endswith(".py")}
        if code - closure:
            extra[name] = sorted(code - closure)
    assert extra == {}


@pytest.mark.parametrize("stage, module", [("evaluate", "src/dlcourse/course/training.py"),
                                           ("train-gan", "src/dlcourse/files.py"),
                                           ("report", "src/dlcourse/report/claims.py")])
def test_a_removed_dep_line_is_caught(stage, module):
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    definition = stages(pipeline)[stage]
    definition["deps"].remove(module)
    assert undeclared(pipeline) == {stage: [module]}


def test_the_closure_follows_relative_imports():
    closure = import_closure(ROOT / "stages" / "score_gan.py")
    assert {"stages/score_gan.py", "src/dlcourse/course/gans/generative.py", "src/dlcourse/files.py"} <= closure
    assert "src/dlcourse/pipeline/tracking.py" in closure  # found, then exempted by NOT_DEPENDENCIES
