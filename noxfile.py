"""The suite on every supported Python: ``nox`` (all sessions) or ``nox -s tests-3.13 -- tests/ops`` (one, with
pytest arguments). Each session installs the project into its own virtualenv with the locked versions of
requirements/ci.txt as constraints. The interpreters must be on PATH as python3.11, python3.12 and python3.13."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True

PYTHONS = ["3.11", "3.12", "3.13"]
LOCK = "requirements/ci.txt"


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    session.install("-c", LOCK, "-e", ".[test]")
    session.run("python", "-m", "pytest", "-q", *session.posargs)


@nox.session(python=PYTHONS[0])
def lint(session: nox.Session) -> None:
    session.install("-c", LOCK, "-e", ".[test]")
    session.run("python", "-m", "ruff", "check", ".")
    session.run("python", "-m", "ruff", "format", "--check", ".")
    session.run("python", "-m", "mypy")
