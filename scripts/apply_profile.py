"""Apply a params profile (profiles/*.yaml): overrides of params.yaml for a purpose (the tests' tiny
run, CI's shortened run, a quick look at every figure, a GPU), one mechanism for all of them.

    python scripts/apply_profile.py profiles/quick.yaml          # rewrites params.yaml in place
    python scripts/apply_profile.py --flags profiles/quick.yaml  # prints the `dvc exp run -S` flags
    dvc exp run $(python scripts/apply_profile.py --flags profiles/quick.yaml)

A profile is a YAML mapping of dotted params.yaml keys to values; a `*` part stands for every
entry of a section (`train_cnn.*.epochs: 1`), and a later key wins over an earlier one
(`train_cnn.cifar10-airnet.epochs: 2` after it). Every key must exist in params.yaml (an entry
may take a value from `defaults` through its merge key); params.yaml with the profile applied must
pass the stages' own check (src/dlcourse/pipeline/checks.py, as check-params runs it) before anything
is written. In place, the file keeps its comments, anchors and layout (ruamel.yaml's round trip):
only the values set change.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # this checkout's library

from dlcourse.pipeline import params  # noqa: E402


class ProfileError(ValueError):
    pass


def round_trip():
    from ruamel.yaml import YAML

    yaml = YAML()  # round trip: comments, anchors, merge keys and flow styles kept
    yaml.width = 4096  # a long line stays one line
    yaml.preserve_quotes = True
    return yaml


def read_profile(path: Path) -> dict:
    from ruamel.yaml import YAMLError

    try:
        overrides = params.read_yaml(path)
    except FileNotFoundError:
        known = ", ".join(sorted(p.name for p in (ROOT / "profiles").glob("*.yaml")))
        raise ProfileError(f"{path}: no such profile (profiles/ holds {known})") from None
    except YAMLError as exc:  # ruamel's parser and constructor errors (a duplicate key too)
        raise ProfileError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(overrides, dict) or not overrides:
        raise ProfileError(f"{path}: expected a mapping of dotted params.yaml keys to values")
    return overrides


def expand(tree, key: str, source: str) -> list[list[str]]:
    """The concrete key paths that the dotted `key` (with `*` parts) names in `tree`; each must exist."""
    paths = [[]]
    *sections, name = key.split(".")
    for part in sections:
        following = []
        for path in paths:
            node = lookup(tree, path)
            if not isinstance(node, dict):
                raise ProfileError(f"{source}: {key}: params.yaml's {'.'.join(path)} is not a section")
            if part == "*":
                following += [[*path, entry] for entry in node]
            elif part in node:
                following.append([*path, part])
            else:
                where = ".".join(path) or "the top level"
                raise ProfileError(f"{source}: {key}: params.yaml has no {part!r} in {where} "
                                   f"(there: {', '.join(map(str, node))})")
        paths = following
    if not paths:
        raise ProfileError(f"{source}: {key}: `*` matches no entry in params.yaml")
    for path in paths:
        node = lookup(tree, path)
        if not isinstance(node, dict) or name not in node:
            raise ProfileError(f"{source}: {key}: params.yaml has no such key ({'.'.join([*path, name])})")
    return [[*path, name] for path in paths]


def lookup(tree, path: list[str]):
    for part in path:
        tree = tree[part]
    return tree


def assignments(tree, overrides: dict, source: str) -> dict[tuple[str, ...], object]:
    """Every concrete key the profile sets, with its value: a later profile key wins."""
    result = {}
    for key, value in overrides.items():
        if not isinstance(key, str):
            raise ProfileError(f"{source}: {key!r}: a key must be a dotted params.yaml key")
        for path in expand(tree, key, source):
            result.pop(tuple(path), None)  # the later key's place in the flags too
            result[tuple(path)] = value
    return result


def styled(value):
    """A value as params.yaml writes one: lists and mappings in flow style, `[8, 16]`, on one line."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(value, dict):
        node = CommentedMap((k, styled(v)) for k, v in value.items())
    elif isinstance(value, list):
        node = CommentedSeq(styled(v) for v in value)
    else:
        return copy.deepcopy(value)
    node.fa.set_flow_style()
    return node


def applied_text(params_path: Path, profile_path: Path) -> tuple[str, dict]:
    """params.yaml's text with the profile applied, and the concrete keys set; checked as a stage
    would check it."""
    yaml = round_trip()
    text = params_path.read_text()
    tree = yaml.load(text)
    plain = params.read_yaml(params_path)  # the values as DVC reads them: merge keys resolved
    overrides = assignments(plain, read_profile(profile_path), str(profile_path))
    for path, value in overrides.items():
        lookup(tree, list(path[:-1]))[path[-1]] = styled(value)
    out = io.StringIO()
    yaml.dump(tree, out)
    new_text = out.getvalue()
    check(params_path, profile_path, new_text)
    return new_text, overrides


def check(params_path: Path, profile_path: Path, text: str) -> None:
    from ruamel.yaml import YAML

    from dlcourse.pipeline.checks import check as check_networks  # builds networks: torch, imported when needed

    source = f"{params_path} with {profile_path}"
    try:
        check_networks(params.validate(YAML(typ="safe").load(text), source))
    except ValueError as exc:  # ParamsError too: it names the key
        raise ProfileError(str(exc)) from None


def flag(path: tuple[str, ...], value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    setting = f"{'.'.join(path)}={text}"
    if any(c.isspace() for c in setting):
        raise ProfileError(f"{'.'.join(path)}: {value!r} holds a space, which the shell would split")
    return f"-S {setting}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", type=Path, help="a profile, e.g. profiles/quick.yaml")
    parser.add_argument("--flags", action="store_true",
                        help="print the equivalent `dvc exp run -S` flags instead of rewriting params.yaml")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="the params file (default: params.yaml)")
    args = parser.parse_args(argv)
    try:
        if not args.params.is_file():
            raise ProfileError(f"{args.params}: not found; run from the repository root")
        new_text, overrides = applied_text(args.params, args.profile)
        if args.flags:
            print(" ".join(flag(path, value) for path, value in overrides.items()))
            return
    except ProfileError as exc:
        raise SystemExit(str(exc)) from None
    temporary = args.params.with_name(f".{args.params.name}.tmp")
    temporary.write_text(new_text)
    temporary.replace(args.params)  # whole or not at all
    print(f"{args.params}: {len(overrides)} values set from {args.profile}", file=sys.stderr)


if __name__ == "__main__":
    main()
