"""mkdocs hook: the reference pages generated from the code, and docstring roles as links.

Named in ``mkdocs.yml`` (``hooks:``). At each build (and each rebuild of
``mkdocs serve``) it writes the pages of :data:`refpages.PAGES` from the code as
it is then, in a fresh interpreter (``python -m refpages``: the code may have
changed since ``mkdocs serve`` started), and adds them as virtual files, so the
navigation and the links of the hand-written pages name them like any other
page. On a page whose front matter has ``roles_scope`` (the client reference),
the Sphinx roles of the rendered docstrings become links
(:func:`refpages.roles.link_roles`). mkdocs puts this file's directory on
``sys.path`` while loading it, which is how ``refpages`` is found.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

from refpages.roles import link_roles

_HERE = Path(__file__).resolve().parent


def generated_pages() -> dict[str, str]:
    """Every generated page by its path in the site, written by ``python -m refpages``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_HERE), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "refpages"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise PluginError(f"the reference pages could not be generated:\n{done.stderr}")
    pages: dict[str, str] = json.loads(done.stdout)
    return pages


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add each generated page to the site's files (mkdocs calls this once per build)."""
    for path, content in generated_pages().items():
        files.append(File.generated(config, path, content=content))
    return files


def on_page_content(html: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Make the docstring roles of a page with a ``roles_scope`` cross-references."""
    scope = page.meta.get("roles_scope")
    if not isinstance(scope, str):
        return html
    return link_roles(html, scope)
