"""``python -m benchmarks.cluster``: see :mod:`benchmarks.cluster.runner`."""

from __future__ import annotations

import sys

from benchmarks.cluster.runner import main

if __name__ == "__main__":
    sys.exit(main())
