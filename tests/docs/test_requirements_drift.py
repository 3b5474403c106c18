"""No drift between docs/requirements.md and the suite: every test it names exists, every rule row names a test."""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NODE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)(?:\[[^\]`]*\])?`")


@functools.cache
def defined_tests(path: Path) -> set[str]:
    """Names a module defines as tests: functions (module level and in classes) and assigned names (a hypothesis
    state machine's ``TestCase`` is bound to a name)."""
    tree = ast.parse(path.read_text())
    names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def rule_rows(text: str) -> list[str]:
    """Table rows of rule tables (those whose header has a Tests column)."""
    rows, in_rule_table = [], False
    for line in text.splitlines():
        if line.startswith("| ID |"):
            in_rule_table = "Tests" in line
        elif not line.startswith("|"):
            in_rule_table = False
        elif in_rule_table and not line.startswith("|---"):
            rows.append(line)
    return rows


@pytest.mark.parametrize("document", ["docs/requirements.md"])
def test_every_test_named_in_the_document_exists(document: str) -> None:
    text = (ROOT / document).read_text()
    missing = []
    for module, name in NODE.findall(text):
        path = ROOT / module
        if not path.is_file() or name not in defined_tests(path):
            missing.append(f"{module}::{name}")
    assert not missing, f"{document} names tests that do not exist: {missing}"


def test_every_rule_row_of_the_requirement_table_names_a_test() -> None:
    rows = rule_rows((ROOT / "docs/requirements.md").read_text())
    assert rows
    untested = [row.split("|")[1].strip() for row in rows if not NODE.search(row)]
    assert not untested, f"rule rows with no test (move them under Gaps): {untested}"
