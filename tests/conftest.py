"""Suite-wide rules: a bug anywhere in the proxy fails the test that met it.

* ``PROXY_STRICT=1`` (set here, before any proxy module runs, and inherited by the proxies the end-to-end tests
  start): the cores' containment boundaries re-raise instead of answering the client an ``Error``, so a handler
  that raises is a failing test, the hypothesis state machines included, never a legal-looking ``Error`` frame.
* Any ``proxy.*`` log record with exception info (a ``log.exception`` at a containment boundary) fails the test
  during which it was recorded. A test that provokes one on purpose carries ``@pytest.mark.provokes_internal_error``
  and asserts on the records it receives through the ``internal_errors`` fixture.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest

os.environ["PROXY_STRICT"] = "1"

pytest_plugins = ["pytester"]


class _ExceptionRecords(logging.Handler):
    """Collects the records of ``proxy.*`` loggers that carry exception info."""

    def __init__(self) -> None:
        super().__init__(level=logging.NOTSET)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.exc_text:
            self.records.append(record)


@pytest.fixture(autouse=True)
def simulated_tones(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process simulators speak with tones: synthesis in a worker thread would let a mock clock run ahead
    (tests/sim/test_speech.py switches speech back on)."""
    try:
        from proxy.sim import speech
    except ImportError:  # an inner pytest run (pytester) may import an installed proxy older than this checkout
        return
    monkeypatch.setattr(speech, "enabled", False)


@pytest.fixture(autouse=True)
def internal_errors(request: pytest.FixtureRequest) -> Iterator[list[logging.LogRecord]]:
    """The ``proxy.*`` records with exception info logged during the test (the test fails if there is one,
    unless it is marked ``provokes_internal_error``)."""
    handler = _ExceptionRecords()
    logger = logging.getLogger("proxy")
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
    if request.node.get_closest_marker("provokes_internal_error") is None and handler.records:
        first = handler.records[0]
        pytest.fail(
            f"{len(handler.records)} internal error(s) logged by the proxy; first: {first.name}: "
            f"{first.getMessage()} ({first.exc_info[1]!r})"
            if first.exc_info
            else f"internal error logged by the proxy: {first.name}: {first.getMessage()}",
            pytrace=False,
        )
