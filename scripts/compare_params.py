"""Whether every stage of dvc.yaml resolves the same params values from two versions of params.yaml:
a rewrite of params.yaml's layout (anchors, merge keys, comments) must leave each stage's values,
as DVC reads them, exactly as they were (and so `dvc status` and `dvc repro` see no change).

    python scripts/compare_params.py 8f44494              # params.yaml at a git revision vs the file here
    python scripts/compare_params.py old.yaml params.yaml  # two files

Prints the stages compared, or each stage whose values differ, and exits 1 then.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def stage_params(dvc_yaml: Path, params_text: str) -> dict[str, dict]:
    """Each stage's params values as DVC resolves them: the stage's `foreach` item and every params
    key it declares (`train_cnn.${key}` and the like), read from `params_text` by DVC's own loader."""
    from dvc.repo import Repo

    with tempfile.TemporaryDirectory() as folder:
        logging.getLogger("dvc").setLevel(logging.WARNING)  # not DVC's greeting on init
        Repo.init(folder, no_scm=True).close()
        shutil.copy(dvc_yaml, Path(folder) / "dvc.yaml")
        (Path(folder) / "params.yaml").write_text(params_text)
        with Repo(folder) as repo:
            resolved = {}
            for stage in repo.index.stages:
                values = {str(dep): dep.read_params() for dep in stage.deps if type(dep).__name__ == "ParamsDependency"}
                resolved[stage.name] = {"cmd": stage.cmd, "params": values,
                                              "deps": sorted(str(dep) for dep in stage.deps),
                                              "outs": sorted(str(out) for out in stage.outs)}
    return resolved


def canonical(value) -> str:
    """The value as DVC compares it: mappings in any order, but 1, 1.0 and true told apart."""
    return json.dumps(value, sort_keys=True)


def differences(old: dict[str, dict], new: dict[str, dict]) -> list[str]:
    lines = [f"{name}: only in the {side} params" for side, names in
             (("old", old.keys() - new.keys()), ("new", new.keys() - old.keys())) for name in sorted(names)]
    for name in sorted(old.keys() & new.keys()):
        for part in old[name]:
            if canonical(old[name][part]) != canonical(new[name][part]):
                lines.append(f"{name}: {part} differ:\n  old {old[name][part]!r}\n  new {new[name][part]!r}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", help="a git revision (its params.yaml) or a params file")
    parser.add_argument("new", nargs="?", default=str(ROOT / "params.yaml"), help="a params file (default: params.yaml)")
    args = parser.parse_args()
    if Path(args.old).is_file():
        old_text = Path(args.old).read_text()
    else:
        shown = subprocess.run(["git", "show", f"{args.old}:params.yaml"], cwd=ROOT, capture_output=True, text=True)
        if shown.returncode:
            raise SystemExit(f"{args.old}: neither a file nor a git revision with a params.yaml: {shown.stderr.strip()}")
        old_text = shown.stdout
    dvc_yaml = ROOT / "dvc.yaml"
    old, new = stage_params(dvc_yaml, old_text), stage_params(dvc_yaml, Path(args.new).read_text())
    found = differences(old, new)
    if found:
        print("\n".join(found))
        sys.exit(1)
    keys = sum(len(values) for stage in new.values() for values in stage["params"].values())
    print(f"{len(new)} stages of dvc.yaml, {keys} params keys declared: the same values from {args.old} and {args.new}")


if __name__ == "__main__":
    main()
