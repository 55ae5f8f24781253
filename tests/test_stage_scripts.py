"""The stage scripts share no prologue: what every stage does before its own work (params, entry,
MLflow run, seed, device) is dlcourse.pipeline.stage's, and no six lines of one script have the
shape of six lines of another (names and strings aside)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WINDOW = 6


def shape(line: str) -> str:
    line = re.sub(r"\"[^\"]*\"|'[^']*'", "S", line.strip())
    return re.sub(r"\b[A-Za-z_]\w*\b", "n", line)


def shared_shapes(scripts: dict[str, str]) -> dict[tuple[str, ...], set[str]]:
    seen: dict[tuple[str, ...], set[str]] = {}
    for name, text in scripts.items():
        lines = [shape(line) for line in text.splitlines()
                 if line.strip() and not line.strip().startswith(("#", "from ", "import "))]
        for i in range(len(lines) - WINDOW + 1):
            seen.setdefault(tuple(lines[i:i + WINDOW]), set()).add(name)
    return {window: names for window, names in seen.items() if len(names) > 1}


def scripts() -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted((ROOT / "stages").glob("*.py"))}


def test_no_two_stage_scripts_share_six_lines_of_the_same_shape():
    assert shared_shapes(scripts()) == {}


def test_a_prologue_copied_into_two_scripts_is_caught():
    prologue = '''
def main(name: str) -> None:
    all_params = params.load()
    p = all_params.entry("attack.models", name)
    stage = f"attack@{name}"
    with tracking.stage_run(stage, dvc_params.declared_params(stage, all_params)) as run:
        rng = seed_everything(all_params.seed)
        device = resolve_device(all_params.device)
'''
    copied = scripts()
    copied["attack.py"] += prologue
    copied["fooling.py"] += prologue.replace("attack", "fooling")
    assert any(names == {"attack.py", "fooling.py"} for names in shared_shapes(copied).values())
