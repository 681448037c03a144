"""``python -m refpages``: write every generated page, as JSON ``{path: markdown}`` on stdout.

The mkdocs hook runs this in a fresh interpreter at each build, so that
``mkdocs serve`` shows the code as it is now, not as it was when the server
started (a module imported once stays imported).
"""

from __future__ import annotations

import json
import sys

from refpages import PAGES


def main() -> None:
    """Print the pages."""
    json.dump({path: write() for path, write in PAGES.items()}, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
