"""Static checks run with the suite: ruff (lint + format) and mypy --strict, and the sans-IO layering rule."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SANS_IO = [
    "proxy/protocol",
    "proxy/openai",
    "proxy/deepgram",
    "proxy/audio.py",
    "proxy/core.py",
    "proxy/http.py",
    "proxy/admission.py",
    "proxy/auth.py",
    "proxy/redact.py",
    "proxy/ratelimit.py",
    "proxy/logs.py",
    "proxy/config.py",
    "proxy/config_report.py",
]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_lint_is_clean() -> None:
    result = run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean() -> None:
    result = run("ruff", "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean() -> None:
    result = run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_protocol_cores_never_import_trio() -> None:
    offenders = []
    for entry in SANS_IO:
        path = ROOT / entry
        for file in [path] if path.is_file() else sorted(path.rglob("*.py")):
            for node in ast.walk(ast.parse(file.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                if any(n == "trio" or n.startswith(("trio.", "trio_websocket")) for n in names):
                    offenders.append(str(file.relative_to(ROOT)))
    assert offenders == []
