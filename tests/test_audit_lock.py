"""The audit's verdict on pip-audit's report (scripts/audit_lock.py), without the network."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("audit_lock", ROOT / "scripts" / "audit_lock.py")
audit_lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(audit_lock)


def report(*vulns, skipped=()):
    return {"dependencies": [{"name": "pkg", "version": "1.0", "vulns": list(vulns)},
                             {"name": "clean", "version": "2.0", "vulns": []},
                             *({"name": name, "skip_reason": "Dependency not found on PyPI"} for name in skipped)], "fixes": []}


FIXABLE = {"id": "PYSEC-1", "aliases": ["CVE-1"], "fix_versions": ["1.1"], "description": ""}
UNFIXED = {"id": "GHSA-2", "aliases": [], "fix_versions": [], "description": ""}


def test_a_fixable_vulnerability_fails_and_an_unfixed_one_is_only_reported():
    lines, status = audit_lock.verdict(report(FIXABLE, UNFIXED), {})
    assert status == 1
    assert "  pkg 1.0: PYSEC-1 (fixed in: 1.1)" in lines and "  pkg 1.0: GHSA-2 (fixed in: none released)" in lines
    assert lines[-1] == "2 of 2 locked packages audited; 2 known vulnerabilities (1 fixable and not accepted)"
    lines, status = audit_lock.verdict(report(UNFIXED), {})
    assert status == 0 and "no fix released (reported, does not fail):" in lines


def test_an_accepted_vulnerability_passes_by_id_or_alias_and_a_stale_entry_is_named():
    lines, status = audit_lock.verdict(report(FIXABLE), {"CVE-1": "pinned for the results' bytes", "PYSEC-9": "old"})
    assert status == 0
    assert "  pkg 1.0: PYSEC-1 (fixed in: 1.1); accepted: pinned for the results' bytes" in lines
    assert "ignore list: PYSEC-9 was not found any more; remove it" in lines


def test_packages_the_service_could_not_answer_for_are_counted_and_named():
    lines, status = audit_lock.verdict(report(skipped=["torch", "numpy"]), {})
    assert status == 0
    assert lines[-2:] == ["2 of 4 locked packages audited; 0 known vulnerabilities (0 fixable and not accepted)",
                          "not audited (2), the service did not answer for: torch, numpy"]


def test_the_ignore_list_needs_a_reason_on_every_line(tmp_path):
    ignore = tmp_path / "ignore.txt"
    ignore.write_text("# a comment\n\nPYSEC-1  # torch pinned for the bytes; look again at 2.15\n")
    assert audit_lock.read_ignores(ignore) == {"PYSEC-1": "torch pinned for the bytes; look again at 2.15"}
    ignore.write_text("PYSEC-1  # fine\nGHSA-2\n")
    with pytest.raises(audit_lock.AuditError, match=r"ignore.txt:2: write one vulnerability id, then `# why"):
        audit_lock.read_ignores(ignore)
    with pytest.raises(audit_lock.AuditError, match="no such ignore list"):
        audit_lock.read_ignores(tmp_path / "missing.txt")


def test_the_committed_ignore_list_reads():
    assert all(reason for reason in audit_lock.read_ignores(audit_lock.IGNORE_FILE).values())
