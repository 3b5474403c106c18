"""No drift between the audit, the conformance catalogue and the suite: every test they name exists, every audit
line has a status and (unless not applicable) a test, every reference catalogue case is mapped, each route has a
verdict."""

from __future__ import annotations

import re

import pytest

from tests.docs.test_requirements_drift import NODE, ROOT, defined_tests

STATUSES = ("same", "deliberate difference", "reference bug fixed", "not applicable")
CONFORMANCE = ROOT / "tests/conformance"
CATALOGUE = CONFORMANCE / "CATALOGUE.md"
# In the catalogue, tests are named relative to tests/conformance/ (`module.py::name`) or, in tables whose header
# names the module, by their bare name.
CATALOGUE_NODE = re.compile(r"`(test_\w+\.py)::(\w+)(?:\[[^\]`]*\])?`")
BARE_TEST = re.compile(r"`(test_\w+)`")
CASE_ROW = re.compile(r"^\| (\d+) \| ([MBR]) \|")


def missing_tests(text: str) -> list[str]:
    missing = []
    for module, name in NODE.findall(text):
        path = ROOT / module
        if not path.is_file() or name not in defined_tests(path):
            missing.append(f"{module}::{name}")
    return missing


def audit_rows(text: str) -> list[list[str]]:
    """Cells of the rows of the audit's behaviour tables (those with a Status column)."""
    rows, header = [], None
    for line in text.splitlines():
        if line.startswith("| #") and "Status" in line:
            header = [c.strip() for c in line.strip().strip("|").split("|")]
        elif not line.startswith("|"):
            header = None
        elif header and not line.startswith("|---"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def test_every_test_the_audit_names_exists() -> None:
    missing = missing_tests((ROOT / "docs/audit.md").read_text())
    assert not missing, f"docs/audit.md names tests that do not exist: {missing}"


def test_every_audit_line_has_a_status_and_a_test_unless_not_applicable() -> None:
    rows = audit_rows((ROOT / "docs/audit.md").read_text())
    assert len(rows) > 50
    no_status = [row[0] for row in rows if row[2] not in STATUSES]
    assert not no_status, f"audit lines without one of the statuses {STATUSES}: {no_status}"
    untested = [row[0] for row in rows if row[2] != "not applicable" and not NODE.search(row[4])]
    assert not untested, f"audit lines with no test: {untested}"


def test_the_audit_gives_a_verdict_per_route() -> None:
    text = (ROOT / "docs/audit.md").read_text()
    verdict = text.split("## Verdict", 1)[1]
    for route in ("/openai", "/deepgram-proxy"):
        assert re.search(rf"^\| `{route}` \| \*\*", verdict, re.MULTILINE), f"no verdict for {route}"


def test_every_test_the_catalogue_names_exists() -> None:
    text = CATALOGUE.read_text()
    missing = [
        f"{module}::{name}"
        for module, name in CATALOGUE_NODE.findall(text)
        if not (CONFORMANCE / module).is_file() or name not in defined_tests(CONFORMANCE / module)
    ]
    known = set().union(*(defined_tests(p) for p in CONFORMANCE.glob("test_*.py")))
    bare = set(BARE_TEST.findall(CATALOGUE_NODE.sub("", text)))
    missing += sorted(bare - known)
    assert not missing, f"tests/conformance/CATALOGUE.md names tests that do not exist: {missing}"


def test_every_reference_catalogue_case_is_mapped_once_to_a_test_or_a_reason() -> None:
    cases: dict[int, str] = {}
    for line in CATALOGUE.read_text().splitlines():
        match = CASE_ROW.match(line)
        if match:
            number = int(match.group(1))
            assert number not in cases, f"case {number} is listed twice"
            cases[number] = line
    assert sorted(cases) == list(range(1, 91))
    for number, line in cases.items():
        kind = CASE_ROW.match(line).group(2)  # type: ignore[union-attr]
        if kind == "R":
            assert "not run here" in line, f"real-API case {number} must say it is not run here"
        else:
            assert CATALOGUE_NODE.search(line) or "not ported" in line, f"case {number} names no test and no reason"


@pytest.mark.parametrize("document", ["docs/audit.md", "docs/scope.md"])
def test_the_readme_links_the_document(document: str) -> None:
    assert f"]({document})" in (ROOT / "README.md").read_text()
