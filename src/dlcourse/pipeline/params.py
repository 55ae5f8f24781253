"""The one schema of `params.yaml`, checked when a stage starts.

Every key is required and typed; an unknown key (a typo), a wrong type or an
out-of-range value stops the stage before any compute, with an error naming the key.
Every float is finite (`.inf` and `.nan` are refused); every size, count and batch has an upper
bound (what the datasets hold, or far above any useful value: a digit too many is refused before
it allocates anything); the seed is in numpy's range, 0 to 2**32 - 1.

The name of an entry (of `train_linear`, `train_cnn`, `train_gan`) matches ENTRY_NAME: a letter or
digit, then letters, digits, `_`, `-` or `.`, 64 characters at most. It becomes part of a DVC stage
name, of a command line and of output paths: no space, quote, slash or other character a shell or a
file system reads specially.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, model_validator

from .param_sections import (ENTRY_NAME, AttackParams, CnnRunParams, Dataset, DownloadParams, EntryName,
                             EvaluateParams, FoolingParams, GanParams, LinearRunParams, ScoreGanParams, Section,
                             SgdSchedule)

# The schema's parts, read by the stages as `params.<Section>`: each stage's section (param_sections.py)
__all__ = ["ENTRY_NAME", "AttackParams", "CnnRunParams", "DownloadParams", "EvaluateParams", "FoolingParams",
           "GanParams", "LinearRunParams", "Params", "ParamsError", "ScoreGanParams", "SgdSchedule", "load",
           "read_yaml", "validate"]

class Params(Section):
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)]  # numpy's range
    device: Literal["auto", "cpu", "cuda", "mps"]
    download: DownloadParams
    # The values a foreach section's entries share, each block a YAML anchor that the entries merge
    # (`<<: *cnn`): the YAML loader (DVC's too) gives every entry in full, so the entries are checked
    # below and a stage reads its entry alone. Absent: every entry states every key.
    defaults: dict[str, dict[str, object]] = Field(default_factory=dict)
    train_linear: dict[EntryName, LinearRunParams] = Field(min_length=1)
    train_cnn: dict[EntryName, CnnRunParams] = Field(min_length=1)
    evaluate: EvaluateParams
    attack: AttackParams
    fooling: dict[EntryName, FoolingParams] = Field(min_length=1)  # by dataset, unless the entry names its dataset
    train_gan: dict[EntryName, GanParams] = Field(min_length=1)
    score_gan: ScoreGanParams

    def entry(self, section: str, name: str):
        """The entry `name` of a `foreach` section (`train_cnn`, `attack.models`, ...): what a stage
        run by hand with a name params.yaml does not have is told which names there are."""
        entries = self
        for part in section.split("."):
            entries = getattr(entries, part)
        if name not in entries:
            raise ParamsError(f"params.yaml: {section} has no entry {name!r} (entries: {', '.join(sorted(entries))})")
        return entries[name]

    def trained_models(self) -> dict[str, str]:
        """Every model a train stage produces, by name, with the dataset it is trained on."""
        return {**{f"linear/{run}": "mnist" for run in self.train_linear},
                **{f"cnn/{name}": entry.dataset for name, entry in self.train_cnn.items()}}

    @model_validator(mode="after")
    def _defaults_are_keys_of_their_section(self):
        """A typo in `defaults` is named there, not once per entry that merges it."""
        schemas = {"train_linear": LinearRunParams, "train_cnn": CnnRunParams, "fooling": FoolingParams,
                   "train_gan": GanParams}
        for block, values in self.defaults.items():
            if block not in schemas:
                raise ValueError(f"defaults.{block}: not a foreach section (sections: {', '.join(schemas)})")
            unknown = sorted(set(values) - set(schemas[block].model_fields))
            if unknown:
                raise ValueError(f"defaults.{block}: unknown key(s) {unknown} (a typo?)")
        return self

    @model_validator(mode="after")
    def _fooling_entries_name_their_dataset(self):
        for name, entry in self.fooling.items():
            if entry.dataset is None and name not in typing.get_args(Dataset):
                raise ValueError(f"fooling.{name}: not a dataset's name ({', '.join(typing.get_args(Dataset))}): "
                                 "say which with `dataset:`")
        return self

    @model_validator(mode="after")
    def _models_read_are_models_trained(self):
        """A model named by a stage that reads it must be one a train entry produces, on the dataset
        said: checked here, before DVC looks for a models/<name>.pt that no stage writes."""
        trained = self.trained_models()
        read = {**{f"evaluate.models.{name}": (name, ref.dataset) for name, ref in self.evaluate.models.items()},
                **{f"attack.models.{name}": (name, ref.dataset) for name, ref in self.attack.models.items()},
                **{f"fooling.{name}.{role}": (getattr(entry, role), entry.dataset or name)
                   for name, entry in self.fooling.items() for role in ("model", "transfer_model")},
                "score_gan.classifier": (self.score_gan.classifier, next(iter(self.train_gan.values())).dataset)}
        for key, (name, dataset) in read.items():
            if name not in trained:
                raise ValueError(f"{key}: no train entry produces the model {name!r} "
                                 f"(trained: {', '.join(sorted(trained))})")
            if trained[name] != dataset:
                raise ValueError(f"{key}: {name} is trained on {trained[name]}, not {dataset}")
        judged = {name: entry.dataset for name, entry in self.train_gan.items()}
        if len(set(judged.values())) > 1:
            raise ValueError(f"train_gan: one classifier (score_gan.classifier) judges every entry, so every entry "
                             f"generates images of one dataset; got {judged}")
        return self


class ParamsError(ValueError):
    pass


def _describe(error: dict) -> str:
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "string_pattern_mismatch" and error["loc"][-1] == "[key]":
        section = ".".join(str(part) for part in error["loc"][:-2])
        return (f"{section}: the entry name {error['input']!r} is not allowed: a letter or digit, then letters, digits, "
                f"'_', '-' or '.', 64 characters at most (params.ENTRY_NAME), for it names a DVC stage, a command "
                f"argument and output paths")
    if error["type"] == "finite_number":
        return f"{key}: must be a finite number (got {error['input']!r})"
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key (a typo?); remove it or fix its name"
    if error["type"] == "missing":
        return f"{key}: missing; every key of the schema is required"
    if error["type"] == "value_error":
        return f"{key}: {error['msg'].removeprefix('Value error, ')}"
    return f"{key}: {error['msg']} (got {error['input']!r})"


def _one_per_value(errors: list[dict]) -> list[dict]:
    """A non-finite float in a union-typed value (a `model` argument) fails each member of the union:
    only the finite-number error is kept, at the value's own key."""
    non_finite = {tuple(e["loc"][:-1]) for e in errors if e["type"] == "finite_number" and len(e["loc"]) > 1
                  and str(e["loc"][-1]) == "float"}
    kept = []
    for e in errors:
        if tuple(e["loc"][:-1]) in non_finite:
            if e["type"] == "finite_number":
                kept.append({**e, "loc": e["loc"][:-1]})
            continue
        kept.append(e)
    return kept


def validate(raw: dict, source: str = "params.yaml") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        lines = "\n  ".join(_describe(e) for e in _one_per_value(exc.errors()))
        raise ParamsError(f"{source} is invalid:\n  {lines}") from None


def read_yaml(path: str | Path):
    """Parse a YAML file as DVC does: YAML 1.2, where `1e-3` is a float and `yes`/`on` are strings
    (PyYAML, a YAML 1.1 loader, reads them the other way round)."""
    from ruamel.yaml import YAML

    return YAML(typ="safe").load(Path(path))


def load(path: str | Path = "params.yaml") -> Params:
    from ruamel.yaml import YAMLError

    path = Path(path)
    try:
        raw = read_yaml(path)
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found; run the stage from the repository root") from None
    except YAMLError as exc:
        reason = str(exc).split("\n\nTo suppress")[0]  # ruamel's hint to allow duplicate keys: DVC refuses them
        raise ParamsError(f"{path}: not valid YAML: {reason}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    return validate(raw, str(path))
