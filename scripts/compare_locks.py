"""Are two runs of the pipeline byte-identical? Compares the md5 of every output that two
`dvc.lock` files record (run records, timings and the report, which hold run ids and wall times,
left out) and prints the ones that differ or that only one run has.

Run: python scripts/compare_locks.py path/to/first/dvc.lock path/to/second/dvc.lock
Exit status 0 when every output both runs have is identical.
"""

import sys

import yaml

SHOWS_RUN_IDS_OR_TIMES = ("tracking/", "metrics/timing/", "reports/")


def outputs(lock_path: str) -> dict[str, str]:
    lock = yaml.safe_load(open(lock_path))
    return {out["path"]: out["md5"] for stage in lock["stages"].values()
            for out in stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", [])
            if not out["path"].startswith(SHOWS_RUN_IDS_OR_TIMES)}


def main(first: str, second: str) -> int:
    a, b = outputs(first), outputs(second)
    both = sorted(set(a) & set(b))
    differ = [path for path in both if a[path] != b[path]]
    for path in both:
        print(f"{'same  ' if a[path] == b[path] else 'DIFFER'} {a[path]} {b[path]} {path}")
    for path in sorted(set(a) ^ set(b)):
        print(f"only in {'the first' if path in a else 'the second'}: {path}")
    print(f"{len(both) - len(differ)} of {len(both)} outputs byte-identical")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
