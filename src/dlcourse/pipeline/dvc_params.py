"""The params keys dvc.yaml declares for a stage, with their values: what its MLflow run logs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .params import Params


def flatten(params: dict, prefix: str = "") -> dict[str, object]:
    flat = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def declared_params(stage: str, all_params: Params) -> dict[str, object]:
    """Exactly the params.yaml keys that dvc.yaml declares for the stage (a `foreach` entry's, resolved
    by DVC), flattened with their values: what the stage's MLflow run logs."""
    values = all_params.model_dump()
    keys = declared_keys(stage, values)
    if keys is None:
        keys = dvc_declared_keys(stage)
    selected = {}
    for key in keys:
        value = values
        for part in key.split("."):
            value = value[part]
        selected.update(flatten({key: value}))
    return selected


def declared_keys(stage: str, values: dict, dvc_yaml: str | Path = "dvc.yaml") -> list[str] | None:
    """The params keys dvc.yaml declares for `stage`, as DVC resolves them, read from the file alone
    (opening DVC's Repo costs about 0.4 s of a stage's start-up). It knows two forms: a plain stage,
    and an entry of a `foreach` over a section of params.yaml (`values`) whose params name `${key}`;
    for any other it returns None, and `dvc_declared_keys` asks DVC. `tests/test_tracking.py` checks
    that both agree on every stage of the project's dvc.yaml."""
    from ruamel.yaml import YAML

    pipeline = YAML(typ="safe").load(Path(dvc_yaml))
    name, at, key = stage.partition("@")
    definition = (pipeline.get("stages") or {}).get(name)
    if "vars" in pipeline or not isinstance(definition, dict) or "matrix" in definition:
        return None
    if at:
        section = re.fullmatch(r"\$\{([\w.-]+)\}", str(definition.get("foreach")))
        if not section or not isinstance(definition.get("do"), dict):
            return None
        entries = values
        for part in section.group(1).split("."):
            entries = entries.get(part) if isinstance(entries, dict) else None
        if not isinstance(entries, dict) or key not in entries:
            return None
        definition = definition["do"]
    elif "foreach" in definition:
        return None
    declared = definition.get("params") or []
    if not all(isinstance(item, str) for item in declared):
        return None  # `- other.yaml: [...]`: keys of another file
    keys = [item.replace("${key}", key) for item in declared] if at else declared
    return None if any(mark in k for k in keys for mark in ("${", ":", ",")) else keys


def dvc_declared_keys(stage: str) -> list[str]:
    """The params keys of `stage` as DVC's own Repo resolves them from dvc.yaml."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    with Repo() as repo:
        [definition] = repo.stage.collect(stage)
    return [key for dep in definition.deps if isinstance(dep, ParamsDependency) for key in dep.params]
