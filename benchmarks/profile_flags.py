"""The `-S key=value` flags of `dvc exp run` for a params profile (a YAML file of dotted params.yaml
keys and their values, e.g. profiles/gan-cifar10-gpu.yaml), after checking that params.yaml with
them applied is valid (the schema, and every network check-params builds).
Run: dvc exp run $(python benchmarks/profile_flags.py profiles/gan-cifar10-gpu.yaml)
"""

import copy
import json
import sys
from pathlib import Path

from dlcourse.pipeline import params
from dlcourse.pipeline.checks import check


def apply(base: dict, overrides: dict) -> dict:
    """params.yaml's values with the dotted overrides applied; a key that params.yaml lacks is refused."""
    result = copy.deepcopy(base)
    for key, value in overrides.items():
        *sections, name = key.split(".")
        node = result
        for part in sections:
            if not isinstance(node, dict) or part not in node:
                raise SystemExit(f"profile: {key}: params.yaml has no {part!r} there")
            node = node[part]
        if name not in node:
            raise SystemExit(f"profile: {key}: params.yaml has no such key")
        node[name] = value
    return result


def main(profile: Path) -> None:
    overrides = params.read_yaml(profile)
    check(params.validate(apply(params.read_yaml("params.yaml"), overrides), f"params.yaml with {profile}"))
    flags = [f"-S {key}={value if isinstance(value, str) else json.dumps(value)}" for key, value in overrides.items()]
    if any(" " in flag[3:] for flag in flags):
        raise SystemExit(f"profile: {profile}: a key or value holds a space, which the shell would split")
    print(" ".join(flags))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python benchmarks/profile_flags.py <profile.yaml>")
    main(Path(sys.argv[1]))
