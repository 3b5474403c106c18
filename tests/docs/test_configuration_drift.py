"""docs/configuration.md and the code name the same flags and variables, both ways."""

from __future__ import annotations

import re
from pathlib import Path

from proxy.cli import _parser

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "configuration.md").read_text()
SOURCE = "\n".join(path.read_text() for path in sorted((ROOT / "proxy").rglob("*.py")))

#: A variable as the documentation writes it: upper case with an underscore, in backticks, maybe with `=value`.
DOCUMENTED_VARIABLE = re.compile(r"`([A-Z][A-Z0-9]*_[A-Z0-9_]+)(?:=[^`]*)?`")
#: A variable as the code reads it: env.get("X"), env["X"], os.environ.get("X"), getenv("X") (not an assignment).
READ_VARIABLE = re.compile(r"""(?:env(?:iron)?(?:\.get\(|\[)|getenv\()\s*["']([A-Z][A-Z0-9_]+)["'](?!\]\s*=[^=])""")
#: Upper-case names in backticks that are not variables: a table of the code and a socket option.
NOT_VARIABLES = {"LIMIT_SETTINGS", "SO_REUSEPORT"}


def test_every_documented_flag_exists_in_the_command_line() -> None:
    documented = set(re.findall(r"`(?:[a-z]+ )?(--[a-z0-9][a-z0-9-]+)", DOC)) - {"--help"}
    missing = sorted(flag for flag in documented if f'"{flag}"' not in SOURCE)
    assert not missing, f"documented but no command takes them: {missing}"


def test_every_documented_variable_is_read_by_the_code() -> None:
    documented = set(DOCUMENTED_VARIABLE.findall(DOC)) - NOT_VARIABLES
    missing = sorted(name for name in documented if f'"{name}"' not in SOURCE)
    assert not missing, f"documented but never read: {missing}"


def test_every_variable_the_code_reads_is_documented() -> None:
    read = set(READ_VARIABLE.findall(SOURCE))
    assert read, "the pattern finds the variables the code reads"
    missing = sorted(name for name in read if f"`{name}" not in DOC)
    assert not missing, f"read by the code but not in docs/configuration.md: {missing}"


def test_every_flag_of_the_proxy_is_documented() -> None:
    flags = {option for action in _parser()._actions for option in action.option_strings} - {"-h", "--help"}
    missing = sorted(flag for flag in flags if f"`{flag}" not in DOC)
    assert not missing, missing
