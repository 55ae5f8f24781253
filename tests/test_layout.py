"""dlcourse.pipeline.layout names every output path once: dvc.yaml's outs, metrics and plots, for
every stage and every entry of params.yaml, are exactly the ones it lists."""

from pathlib import Path

import pytest
import yaml

from dlcourse.files import writer_stage
from dlcourse.pipeline import layout

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = yaml.safe_load((ROOT / "dvc.yaml").read_text())
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def declared(definition: dict, key: str | None) -> set[str]:
    paths = set()
    for kind in ("outs", "metrics", "plots"):
        for out in definition.get(kind) or []:
            path = out if isinstance(out, str) else next(iter(out))
            paths.add(path.replace("${key}", key) if key is not None else path)
    return paths


def runs(pipeline: dict) -> list[tuple[str, str | None, dict]]:
    """(stage, key, definition) for every stage, a `foreach` stage once per entry of its params section."""
    found = []
    for name, definition in pipeline["stages"].items():
        if "foreach" not in definition:
            found.append((name, None, definition))
            continue
        section = PARAMS
        for part in definition["foreach"].removeprefix("${").removesuffix("}").split("."):
            section = section[part]
        found += [(name, key, definition["do"]) for key in section]
    return found


def mismatches(pipeline: dict) -> dict[str, tuple[list[str], list[str]]]:
    """Per stage run: (in dvc.yaml only, in the layout only)."""
    differ = {}
    for name, key, definition in runs(pipeline):
        named = {path.as_posix() for path in layout.outputs(name, key)}
        outs = declared(definition, key)
        if named != outs:
            differ[f"{name}@{key}" if key else name] = (sorted(outs - named), sorted(named - outs))
    return differ


def test_every_stage_writes_where_the_layout_says():
    assert mismatches(PIPELINE) == {}


def test_every_top_level_plot_is_an_output_of_a_stage():
    every = {path.as_posix() for name, key, _ in runs(PIPELINE) for path in layout.outputs(name, key)}
    drawn = {path for plot in PIPELINE["plots"] for spec in plot.values() for path in spec["y"]}
    assert drawn and drawn <= every, sorted(drawn - every)


def test_an_out_moved_in_dvc_yaml_is_caught():
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    outs = pipeline["stages"]["train-cnn"]["do"]["outs"]
    outs[0] = "models/cnns/${key}.pt"
    differ = mismatches(pipeline)
    assert differ["train-cnn@mnist"] == (["models/cnns/mnist.pt"], ["models/cnn/mnist.pt"])


def test_an_unknown_stage_is_refused():
    with pytest.raises(KeyError, match="no stage 'train-rnn'"):
        layout.outputs("train-rnn", "x")


def test_the_stage_an_error_says_to_rerun_is_the_one_that_writes_the_file():
    """files.writer_stage (below the layers, so with patterns of its own) names, for every output the
    layout lists (a file inside it, for a folder), the stage that writes it."""
    wrong = {}
    for name, key, _ in runs(PIPELINE):
        stage = f"{name}@{key}" if key else name
        for path in layout.outputs(name, key):
            inside = path if path.suffix else path / "epoch_01.png"
            if writer_stage(inside) != stage:
                wrong[inside.as_posix()] = (writer_stage(inside), stage)
    assert wrong == {}
