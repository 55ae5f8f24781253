"""Audit every package of uv.lock for known vulnerabilities (pip-audit, against PyPI's advisories).

    python scripts/audit_lock.py                      # what CI runs (.ci/run)
    python scripts/audit_lock.py --ignore-file FILE   # another list of accepted vulnerabilities

Prints every vulnerability found, with the releases that fix it, and decides:

- a vulnerability with a fixed release fails the audit (exit status 1): move the package in the
  lock (`uv lock --upgrade-package NAME`, then check the drift: docs/reproducibility.md), or, when
  the project cannot take the fix (torch is pinned for the committed results' bytes), accept it
  in the ignore list with the reason;
- a vulnerability no release fixes yet is reported, and does not fail: nothing in the lock could
  remove it, and main would stay red until upstream acts;
- a package the service could not answer for (offline, or a version the index does not describe)
  is counted and named: the audit says how much of the lock it could not see.

The ignore list (default .ci/audit-ignore.txt) holds one vulnerability id a line (PYSEC-..., GHSA-...,
CVE-...), each with its reason after a `#`; a line without a reason is refused.
Exit status: 0 passed, 1 a fixable vulnerability not accepted, 2 a bad ignore list or no uv/pip-audit.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IGNORE_FILE = ROOT / ".ci" / "audit-ignore.txt"


class AuditError(Exception):
    pass


def read_ignores(path: Path) -> dict[str, str]:
    """The accepted vulnerabilities: id -> reason."""
    ignores = {}
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise AuditError(f"{path}: no such ignore list (an empty file accepts nothing)") from None
    for number, line in enumerate(lines, 1):
        entry, _, reason = line.partition("#")
        if not entry.strip():
            continue
        if len(entry.split()) != 1 or not reason.strip():
            raise AuditError(f"{path}:{number}: write one vulnerability id, then `# why it is accepted`: {line.strip()!r}")
        ignores[entry.strip()] = reason.strip()
    return ignores


def audit_report(root: Path = ROOT) -> dict:
    """pip-audit's JSON report on every package uv.lock pins (the project itself left out)."""
    beside = Path(sys.executable).parent / "uv"  # .venv/bin/uv, where `make setup` puts it
    uv = str(beside) if beside.is_file() else shutil.which("uv")
    if uv is None:
        raise AuditError("uv is not on PATH: `make setup` installs it in .venv")
    with tempfile.TemporaryDirectory() as folder:
        requirements = Path(folder) / "requirements.txt"
        subprocess.run([uv, "export", "--frozen", "--all-extras", "--no-emit-project", "--quiet",
                        "--format", "requirements-txt", "-o", str(requirements)], cwd=root, check=True)
        result = subprocess.run([sys.executable, "-m", "pip_audit", "--requirement", str(requirements), "--no-deps",
                                 "--disable-pip", "--progress-spinner", "off", "--format", "json"],
                                capture_output=True, text=True, check=False)  # 1: vulnerabilities found
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError:
        raise AuditError(f"pip-audit gave no report (exit status {result.returncode}):\n{result.stderr.strip()}") from None


def verdict(report: dict, ignores: dict[str, str]) -> tuple[list[str], int]:
    """What to print, and the exit status (see the module's doc)."""
    lines, failing, unfixed, accepted, seen = [], [], [], [], set()
    dependencies = report.get("dependencies", [])
    skipped = [dep for dep in dependencies if dep.get("skip_reason")]
    for dep in dependencies:
        for vuln in dep.get("vulns", []):
            ids = {vuln["id"], *vuln.get("aliases", [])}
            seen |= ids
            fixes = ", ".join(vuln.get("fix_versions") or []) or "none released"
            entry = f"{dep['name']} {dep['version']}: {vuln['id']} (fixed in: {fixes})"
            if ids & set(ignores):
                accepted.append(f"{entry}; accepted: {ignores[min(ids & set(ignores))]}")
            elif vuln.get("fix_versions"):
                failing.append(entry)
            else:
                unfixed.append(entry)
    for title, entries in [("FIXABLE, not accepted (fails the audit)", failing),
                           ("no fix released (reported, does not fail)", unfixed),
                           ("accepted in the ignore list", accepted)]:
        if entries:
            lines += [f"{title}:", *(f"  {entry}" for entry in entries)]
    for stale in sorted(set(ignores) - seen):
        lines.append(f"ignore list: {stale} was not found any more; remove it")
    audited = len(dependencies) - len(skipped)
    lines.append(f"{audited} of {len(dependencies)} locked packages audited; {len(failing) + len(unfixed) + len(accepted)} "
                 f"known vulnerabilities ({len(failing)} fixable and not accepted)")
    if skipped:
        lines.append(f"not audited ({len(skipped)}), the service did not answer for: "
                     + ", ".join(dep["name"] for dep in skipped))
    return lines, 1 if failing else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ignore-file", type=Path, default=IGNORE_FILE)
    args = parser.parse_args(argv)
    try:
        ignores = read_ignores(args.ignore_file)
        lines, status = verdict(audit_report(), ignores)
    except AuditError as exc:
        print(f"audit_lock: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return status


if __name__ == "__main__":
    sys.exit(main())
