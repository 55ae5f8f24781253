"""The README's claims table, regenerated from reports/claims.json (which the `report` stage writes).

    python scripts/claims_table.py           # rewrite the table in README.md
    python scripts/claims_table.py --check   # exit 1 if README.md's table differs from claims.json

The table lies between the two marker lines below in README.md; tests/test_readme.py checks it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dlcourse.report.document import claims_table

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- claims table: generated from reports/claims.json by python scripts/claims_table.py -->"
END = "<!-- end of claims table -->"


def table(claims_json: Path) -> str:
    """The block between the markers: the verdict count, then one line per claim linking to its
    section of reports/report.md."""
    if not claims_json.is_file():
        raise SystemExit(f"{claims_json}: missing; the report stage writes it (dvc repro report)")
    claims = json.loads(claims_json.read_text(encoding="utf-8"))
    held = sum(c["holds"] for c in claims.values())
    return (f"{held} of {len(claims)} of the course's claims hold on the committed run "
            f"([the report](reports/report.md)):\n\n" + claims_table(claims, link="reports/report.md"))


def readme_block(readme: str, path: Path) -> tuple[int, int]:
    """Where the generated block starts and ends in the README's text."""
    if readme.count(BEGIN) != 1 or readme.count(END) != 1 or readme.index(BEGIN) > readme.index(END):
        raise SystemExit(f"{path}: needs exactly one '{BEGIN}' line, then one '{END}' line")
    return readme.index(BEGIN) + len(BEGIN) + 1, readme.index(END)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check README.md's table, exit 1 if it differs")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--claims", type=Path, default=ROOT / "reports" / "claims.json")
    args = parser.parse_args()
    readme = args.readme.read_text(encoding="utf-8")
    start, end = readme_block(readme, args.readme)
    expected = table(args.claims) + "\n"
    if readme[start:end] == expected:
        return
    if args.check:
        sys.exit(f"{args.readme}: its claims table differs from {args.claims}; run python scripts/claims_table.py")
    args.readme.write_text(readme[:start] + expected + readme[end:], encoding="utf-8")
    print(f"{args.readme}: claims table rewritten from {args.claims}")


if __name__ == "__main__":
    main()
