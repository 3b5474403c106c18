"""Hypothesis settings for the hostile-input property tests: short in the default suite, long on request.

``PROXY_FUZZ=1 python -m pytest -m fuzz`` runs every fuzz target with :data:`LONG_EXAMPLES` generated inputs each
(the long profile: well over 100,000 inputs in all, minutes per target). The default suite runs the same targets
with a few hundred inputs each, so they stay green and fast.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

#: Inputs per target in the long profile.
LONG_EXAMPLES = 25_000
LONG = os.environ.get("PROXY_FUZZ", "").strip() in {"1", "true", "yes", "on"}


def fuzz_settings(default_examples: int = 200) -> settings:
    """Settings for one fuzz target: ``default_examples`` normally, :data:`LONG_EXAMPLES` under ``PROXY_FUZZ=1``."""
    return settings(
        max_examples=LONG_EXAMPLES if LONG else default_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
