"""The drift check: after a rebuild, did the results move, and did the code or the environment move them?

Compares two runs of the pipeline through their `dvc.lock` files, output by output:

1. every output both locks record, by md5: byte-identical or not (run records, timings and the
   report, which hold run ids and wall times, are left out), and the outputs only one run has;
2. per stage whose outputs differ, whether its inputs (code, data, params: the `deps` and `params`
   of its `dvc.lock` entry) differ too; when they do not, the environment moved them;
3. for each differing JSON output (the metrics), every number that moved, by how much, and whether
   beyond the tolerance (`--rtol`, `--atol`);
4. every claim of `reports/claims.json`: its verdict and measurement in both runs;
5. the environments the stages ran in (`tracking/<stage>.json`: Python, torch, numpy and the other
   packages whose version moves bytes, the sha256 of `uv.lock`, CUDA, the processor).

Each run is a checkout (a folder holding `dvc.lock`, or the `dvc.lock` file itself), or a git
revision of the repository the command runs in, whose committed files are read. By default the
committed results (`HEAD`) are compared with the working tree (`.`), what one wants after `dvc repro`:

    python scripts/compare_locks.py                        # HEAD against the working tree
    python scripts/compare_locks.py HEAD ../other-checkout  # against another rebuild
    python scripts/compare_locks.py a/dvc.lock b/dvc.lock   # two checkouts

Exit status: 0 when every output both runs have is byte-identical and neither has one the other
lacks; 1 when outputs differ but every number is within the tolerance and every claim that held in
the first run holds in the second; 2 when a claim no longer holds (or is missing) or a number moved
beyond the tolerance; 3 on a bad argument or an unreadable lock.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path
from textwrap import shorten

import yaml
from tabulate import tabulate

SHOWS_RUN_IDS_OR_TIMES = ("tracking/", "metrics/timing/", "reports/")
CLAIMS = "reports/claims.json"
# The default tolerance: what the README's reproducibility promise allows between processors (see
# docs/reproducibility.md for the measured differences it covers).
RTOL, ATOL = 0.05, 0.02
VERSION_ORDER = ("python", "torch", "torchvision", "numpy", "scipy", "pillow", "matplotlib", "cuda", "cudnn", "lock_sha256")


class DriftError(Exception):
    pass


class Run:
    """One run's files: a checkout's, or a git revision's as committed."""

    def __init__(self, spec: str):
        path = Path(spec)
        if path.is_file() and path.name == "dvc.lock":
            path = path.parent
        if path.is_dir():
            if not (path / "dvc.lock").is_file():
                raise DriftError(f"{spec}: holds no dvc.lock (`dvc repro` writes it)")
            self.root, self.revision, self.name = path, None, str(path)
        elif path.exists():
            raise DriftError(f"{spec}: neither a checkout nor a dvc.lock")
        else:
            commit = _git("rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}")
            if commit is None:
                raise DriftError(f"{spec}: neither a folder, a dvc.lock nor a git revision of this repository")
            self.root, self.revision, self.name = None, commit, f"{spec} ({commit[:8]})"
        text = self.read("dvc.lock")
        if text is None:
            raise DriftError(f"{self.name}: holds no dvc.lock (`dvc repro` writes it)")
        try:
            self.lock = yaml.safe_load(text)
            self.stages = self.lock["stages"]
        except (yaml.YAMLError, KeyError, TypeError) as exc:
            raise DriftError(f"{self.name}: its dvc.lock is not a DVC lock file ({exc}); `dvc repro` rewrites it") from None

    def read(self, name: str) -> str | None:
        if self.root is not None:
            file = self.root / name
            return file.read_text() if file.is_file() else None
        return _git("show", f"{self.revision}:{name}", strip=False)

    def json(self, name: str):
        text = self.read(name)
        if text is None:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise DriftError(f"{self.name}: {name} is not valid JSON ({exc})") from None

    def outputs(self) -> dict[str, tuple[str, str]]:
        """Every output's path: (its md5, the stage that writes it)."""
        return {out["path"]: (out.get("md5", ""), stage) for stage, entry in self.stages.items()
                for out in entry.get("outs", []) if not out["path"].startswith(SHOWS_RUN_IDS_OR_TIMES)}

    def inputs(self, stage: str) -> dict[str, str]:
        entry = self.stages.get(stage, {})
        deps = {dep["path"]: dep.get("md5") or dep.get("hash", "") for dep in entry.get("deps", [])}
        params = {f"{file}:{key}": json.dumps(value, sort_keys=True)
                  for file, values in (entry.get("params") or {}).items() for key, value in values.items()}
        return {**deps, **params, "cmd": json.dumps(entry.get("cmd"))}

    def environments(self) -> Counter:
        """How many stages ran in each environment (`tracking/<stage>.json`)."""
        counts = Counter()
        for stage in self.stages:
            record = self.json(f"tracking/{stage}.json") or {}
            env = record.get("environment") or {}
            keys = [key for key in VERSION_ORDER if key in env] + sorted(set(env) - set(VERSION_ORDER) - {"gpu"})
            described = ", ".join(f"{key} {str(env[key])[:12] if key == 'lock_sha256' else env[key]}"
                                  for key in keys if env[key])
            if record:
                counts[f"{described or 'versions not recorded'}; {record.get('cpu') or 'processor not recorded'}"] += 1
        return counts


def _git(*args: str, strip: bool = True) -> str | None:
    result = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return None
    return result.stdout.strip() if strip else result.stdout


def numbers(value, prefix: str = "") -> dict[str, float]:
    """The numbers of a JSON document, by their dotted path (booleans are verdicts, not numbers)."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in numbers(item, f"{prefix}{key}.").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in numbers(item, f"{prefix}{i}.").items()}
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {prefix.rstrip("."): float(value)}
    return {}


def beyond(ref: float, new: float, rtol: float, atol: float) -> bool:
    if math.isnan(ref) or math.isnan(new):
        return math.isnan(ref) != math.isnan(new)
    return abs(new - ref) > atol + rtol * abs(ref)


def compare(first: Run, second: Run, rtol: float = RTOL, atol: float = ATOL, out=sys.stdout) -> int:
    """Print the comparison, section by section; 0 when every output is byte-identical, 2 when a claim
    no longer holds or a number moved beyond the tolerance, else 1."""
    def say(*lines: str) -> None:
        print(*lines, sep="\n", file=out)

    a, b = first.outputs(), second.outputs()
    both = sorted(set(a) & set(b))
    differ = [path for path in both if a[path][0] != b[path][0]]
    only = sorted(set(a) ^ set(b))
    say(f"first:  {first.name}", f"second: {second.name}", "")
    _outputs_section(say, a, b, both, differ, only)
    _moved_by_section(say, first, second, sorted({a[path][1] for path in differ}))
    moved_beyond = _numbers_section(say, first, second, differ, rtol, atol)
    claims_a, claims_b = first.json(CLAIMS) or {}, second.json(CLAIMS) or {}
    lost = _claims_section(say, claims_a, claims_b)
    say("## Environments (stages per versions and uv.lock sha256, from tracking/; processor)", "")
    for run in (first, second):
        counts = run.environments()
        say(f"{run.name}:", *([f"  {n} stage{'s' if n > 1 else ''}: {env}" for env, n in counts.most_common()]
                              or ["  no run records (tracking/<stage>.json)"]))
    if not (differ or only):
        return 0
    return 2 if lost or moved_beyond or (claims_a and not claims_b) else 1


def _outputs_section(say, a: dict, b: dict, both: list[str], differ: list[str], only: list[str]) -> None:
    say("## Outputs", "")
    if differ or only:
        say(tabulate([(path, a[path][1], a[path][0][:12], b[path][0][:12]) for path in differ]
                     + [(path, (a.get(path) or b[path])[1], "" if path not in a else "present",
                         "" if path not in b else "present") for path in only],
                     headers=["output that differs", "stage", "first md5", "second md5"]), "")
    say(f"{len(both) - len(differ)} of {len(both)} outputs byte-identical"
        + (f"; {len(only)} only in one run" if only else "") + " (tracking/, metrics/timing/ and reports/ left out:"
        " run ids and wall times)", "")


def _moved_by_section(say, first: Run, second: Run, stages: list[str]) -> None:
    """For each stage whose outputs differ: the inputs that changed, or the environment alone."""
    if not stages:
        return
    say("## What moved them", "")
    rows = []
    for stage in stages:
        ins_a, ins_b = first.inputs(stage), second.inputs(stage)
        changed = sorted(key for key in set(ins_a) | set(ins_b) if ins_a.get(key) != ins_b.get(key))
        rows.append((stage, "the environment (same code, data and params)" if not changed
                     else "its inputs: " + ", ".join(changed[:6]) + (" ..." if len(changed) > 6 else "")))
    say(tabulate(rows, headers=["stage", "outputs moved with"]), "")


def _numbers_section(say, first: Run, second: Run, differ: list[str], rtol: float, atol: float) -> list[str]:
    """Every number of a differing JSON output that moved, against the tolerance: those beyond it."""
    moved_beyond, metric_rows = [], []
    for path in differ:
        if not path.endswith(".json"):
            continue
        ref, new = numbers(first.json(path)), numbers(second.json(path))
        for key in sorted(set(ref) | set(new)):
            x, y = ref.get(key), new.get(key)
            if x == y or (x is not None and y is not None and math.isnan(x) and math.isnan(y)):
                continue
            far = x is None or y is None or beyond(x, y, rtol, atol)
            if far:
                moved_beyond.append(f"{path}:{key}")
            delta = "" if x is None or y is None else f"{y - x:+.4g}"
            relative = "" if x in (None, 0) or y is None else f"{(y - x) / abs(x):+.2%}"
            metric_rows.append((f"{path}:{key}", _num(x), _num(y), delta, relative, "BEYOND" if far else "within"))
    if metric_rows:
        say(f"## Numbers that moved (tolerance: |second - first| <= {atol:g} + {rtol:g} x |first|)", "",
            tabulate(metric_rows, headers=["metric", "first", "second", "change", "relative", "tolerance"],
                     disable_numparse=True), "",
            f"{len(metric_rows)} numbers moved, {len(moved_beyond)} beyond the tolerance", "")
    return moved_beyond


def _claims_section(say, claims_a: dict, claims_b: dict) -> list[str]:
    """Each claim's verdict in both runs: the claims that held in the first and no longer hold."""
    if not (claims_a or claims_b):
        say(f"## Claims\n\nneither run has {CLAIMS} (the report stage writes it)\n")
        return []
    say("## Claims", "")
    lost, rows = [], []
    for claim in list(claims_a) + [c for c in claims_b if c not in claims_a]:
        x, y = claims_a.get(claim), claims_b.get(claim)
        if x and x.get("holds") and not (y and y.get("holds")):
            lost.append(claim)
        measured = [str((c or {}).get("measured", "")) for c in (x, y)]
        rows.append((claim, _verdict(x), _verdict(y), "same" if measured[0] == measured[1] else
                     f"{shorten(measured[0], 70)} → {shorten(measured[1], 70)}"))
    say(tabulate(rows, headers=["claim", "first", "second", "measured (reports/claims.json)"]), "")
    held = sum(bool(c.get("holds")) for c in claims_b.values())
    say(f"{held} of {len(claims_b)} claims hold in the second run"
        + (f"; no longer holding: {', '.join(lost)}" if lost else "; every claim that held still holds"), "")
    return lost


def _num(value: float | None) -> str:
    return "absent" if value is None else f"{value:.6g}"


def _verdict(claim: dict | None) -> str:
    return "absent" if claim is None else ("holds" if claim.get("holds") else "FAILS")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("first", nargs="?", default="HEAD", help="the reference run (default: HEAD, the committed results)")
    parser.add_argument("second", nargs="?", default=".", help="the rebuild (default: the working tree)")
    parser.add_argument("--rtol", type=float, default=RTOL, help=f"relative tolerance of a number (default {RTOL})")
    parser.add_argument("--atol", type=float, default=ATOL, help=f"absolute tolerance of a number (default {ATOL})")
    args = parser.parse_args(argv)
    try:
        return compare(Run(args.first), Run(args.second), args.rtol, args.atol)
    except DriftError as exc:
        print(f"compare_locks: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
