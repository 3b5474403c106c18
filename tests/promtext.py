"""Reading /metrics in tests with prometheus-client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition: (name, labels) -> value."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def has_sample(text: str, line: str) -> bool:
    """True if ``line`` (``name{labels} value``, as a person writes it) is a sample of ``text``."""
    ((key, value),) = samples(line + "\n").items()
    return samples(text).get(key) == value


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, frozenset(labels.items())))
