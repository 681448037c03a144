"""The generated reference pages of the documentation site, one module each.

Each module turns one part of the code into a Markdown page when the site is
built: :mod:`refpages.api` (the OpenAPI document), :mod:`refpages.configuration`
(``NodeConfig``'s fields) and :mod:`refpages.cli` (the ``raftdb`` parser). The
mkdocs hook ``docs/hooks/reference.py`` adds them to the site as pages; nothing
generated is kept in git. ``tests/docs/test_reference_pages.py`` runs them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from refpages import api, cli, configuration

__all__ = ["PAGES"]

#: Each generated page's path in the site, and the function that writes it.
PAGES: Mapping[str, Callable[[], str]] = {
    api.PATH: api.page,
    configuration.PATH: configuration.page,
    cli.PATH: cli.page,
}
