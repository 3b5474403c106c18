"""``python -m proxy``: see :mod:`proxy.cli`."""

import sys

from .cli import main

sys.exit(main())
