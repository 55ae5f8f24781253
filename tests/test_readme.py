"""The README and docs/ as a user reads them: the README's claims table says what reports/claims.json
says, and every relative link of README.md and docs/*.md leads to a file (and heading) that exists."""

import json
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from dlcourse.report.document import heading_anchors, link_targets

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SCRIPT = ROOT / "scripts" / "claims_table.py"


def readme_claim_rows(readme: str) -> dict[str, tuple[str, str]]:
    """{claim id: (its summary, its verdict)} from the README's claims table."""
    rows = {}
    for line in readme.splitlines():
        match = re.fullmatch(r"\| \[([\w-]+)\]\(reports/report\.md#\1\) \| (.*) \| (holds|\*\*FAILS\*\*) \|", line)
        if match:
            rows[match[1]] = (match[2].replace("\\|", "|"), match[3])
    return rows


def test_the_readme_claims_table_is_claims_json():
    claims = json.loads((ROOT / "reports" / "claims.json").read_text(encoding="utf-8"))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = readme_claim_rows(readme)
    assert list(rows) == list(claims)  # the same ids, in the course's order
    for claim_id, claim in claims.items():
        assert rows[claim_id] == (claim["summary"], "holds" if claim["holds"] else "**FAILS**"), claim_id
    held = sum(claim["holds"] for claim in claims.values())
    assert f"{held} of {len(claims)} of the course's claims hold" in readme
    # the first screen: the pitch, the table and the two commands
    first = "\n".join(readme.splitlines()[:40])
    assert all(f"[{claim_id}]" in first for claim_id in claims) and "make repro" in first and "make test" in first
    assert len(readme.splitlines()) <= 250


def run_script(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=cwd, check=False)


def test_the_script_checks_and_rewrites_the_table(tmp_path):
    assert run_script("--check").returncode == 0
    claims = json.loads((ROOT / "reports" / "claims.json").read_text(encoding="utf-8"))
    claims["mnist-size"]["holds"] = False
    claims["mnist-size"]["summary"] = "599 / 10,000 images | a pipe (bar: 60,000 / 10,000)"
    (tmp_path / "claims.json").write_text(json.dumps(claims), encoding="utf-8")
    readme = tmp_path / "README.md"
    readme.write_text((ROOT / "README.md").read_text(encoding="utf-8"), encoding="utf-8")
    args = ("--readme", str(readme), "--claims", str(tmp_path / "claims.json"))
    checked = run_script("--check", *args)
    assert checked.returncode == 1 and "differs" in checked.stderr and readme.read_text() == (ROOT / "README.md").read_text()
    assert run_script(*args).returncode == 0
    rows = readme_claim_rows(readme.read_text())
    assert rows["mnist-size"] == ("599 / 10,000 images | a pipe (bar: 60,000 / 10,000)", "**FAILS**")
    held = sum(claim["holds"] for claim in claims.values())  # one fewer than the committed run's
    assert f"{held} of {len(claims)} of the course's claims hold" in readme.read_text()
    assert run_script("--check", *args).returncode == 0
    # what lies outside the markers is kept as it was
    outside = re.sub(r"<!-- claims table.*?<!-- end of claims table -->", "", readme.read_text(), flags=re.DOTALL)
    assert outside == re.sub(r"<!-- claims table.*?<!-- end of claims table -->", "",
                             (ROOT / "README.md").read_text(), flags=re.DOTALL)


def test_the_script_names_a_missing_claims_file_or_markers(tmp_path):
    missing = run_script("--check", "--claims", str(tmp_path / "claims.json"))
    assert missing.returncode != 0 and "claims.json: missing; the report stage writes it" in missing.stderr
    readme = tmp_path / "README.md"
    readme.write_text("# no table here\n")
    unmarked = run_script("--check", "--readme", str(readme))
    assert unmarked.returncode != 0 and f"{readme}: needs exactly one" in unmarked.stderr


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_relative_link_leads_to_an_existing_file_and_heading(page):
    broken = []
    for target in link_targets(page.read_text(encoding="utf-8")):
        parts = urlsplit(target)
        if parts.scheme or parts.netloc:
            continue  # an address on the web: not checked offline
        path = (page.parent / unquote(parts.path)).resolve() if parts.path else page
        if not path.exists():
            broken.append(f"{target}: no file {path}")
        elif parts.fragment and path.suffix == ".md" and \
                parts.fragment not in heading_anchors(path.read_text(encoding="utf-8")):
            broken.append(f"{target}: no heading #{parts.fragment} in {path.name}")
    assert broken == []


def test_the_link_check_sees_a_broken_link_and_a_missing_heading(tmp_path):
    markdown = "[a](docs/none.md) ![b](img.png) [c](README.md#no-such-heading) [d](https://example.org)\n"
    assert link_targets(markdown) == ["docs/none.md", "README.md#no-such-heading", "https://example.org", "img.png"]
    assert heading_anchors("# Two commands\n\n## A: b, c\n\n## A: b, c\n") == ["two-commands", "a-b-c", "a-b-c-1"]
