"""The offline docs site, opened page by page in a real headless Chromium.

Builds the site the way `make docs` does (tools/build_docs.py, notebooks executed), then for every page
checks: the title renders; every public symbol of the page's module (its `__all__`) appears on it; every
image loads (the home page's pictures and the figures of the executed demos); no raw Quarto/nbdev markup
leaks into the text; every link to another page of the site resolves. The home page's sidebar links
every page. Skipped, with the reason, only where Chromium is not installed (.ci/run installs it with
apt-get). `DOCS_SITE_BUILT=1` checks the _docs/ already built instead of building it again.
"""
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
RAW_MARKUP = ("#|", ":::", "{.callout")


def _notebook_pages():
    pages = []
    for nb in sorted((ROOT / "nbs").rglob("*.ipynb")):
        if any(part.startswith((".", "_")) for part in nb.relative_to(ROOT / "nbs").parts):
            continue
        cells = json.loads(nb.read_text())["cells"]
        module = None
        for cell in cells:
            m = re.search(r"^#\|\s*default_exp\s+(\S+)", "".join(cell["source"]), re.M)
            if m:
                module = m.group(1)
                break
        title = re.match(r"#\s+(.+)", "".join(cells[0]["source"])).group(1).strip()
        pages.append((nb.relative_to(ROOT / "nbs").with_suffix(".html"), title, module))
    return pages


PAGES = _notebook_pages()


def _local_path(url: str) -> Path:
    "The file a file:// URL points to (fragment and query dropped, %-escapes decoded)."
    return Path(unquote(urlparse(url).path))


@pytest.fixture(scope="module")
def site():
    if os.environ.get("DOCS_SITE_BUILT") != "1":
        # --no-execute: the pages without demo outputs (`make docs` adds them); fast enough for every test run
        subprocess.run([sys.executable, str(ROOT / "tools" / "build_docs.py"), "--no-execute"], cwd=ROOT, check=True)
    assert (ROOT / "_docs" / "index.html").is_file(), "no _docs/index.html: run `make docs`"
    return ROOT / "_docs"


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-quic",
                              "--no-first-run", "--disable-background-networking", "--disable-component-update",
                              "--disable-sync"])
        yield b
        b.close()


def test_every_notebook_has_a_page(site):
    missing = [str(rel) for rel, _, _ in PAGES if not (site / rel).is_file()]
    assert not missing, f"pages not built: {missing}"


def test_sidebar_links_every_page(site, browser):
    page = browser.new_page()
    page.goto((site / "index.html").as_uri(), wait_until="load")
    hrefs = page.evaluate("Array.from(document.querySelectorAll('#quarto-sidebar a[href]')).map(a => a.href)")
    sidebar = page.locator("#quarto-sidebar").inner_text()
    page.close()
    linked = {_local_path(h).resolve() for h in hrefs if h.startswith("file://")}
    unlinked = [str(rel) for rel, _, _ in PAGES if (site / rel).resolve() not in linked]
    assert not unlinked, f"pages missing from the sidebar: {unlinked}"
    assert "tutorials" in sidebar.lower(), "the tutorials have no sidebar section"


@pytest.mark.parametrize("rel,title,module", PAGES, ids=[str(p[0]) for p in PAGES])
def test_page_renders_in_a_browser(site, browser, rel, title, module):
    page = browser.new_page()
    page.goto((site / rel).as_uri(), wait_until="load")
    page.wait_for_load_state("networkidle")
    heading = page.locator("h1").first.inner_text()
    assert title.split(":")[0].strip() in heading, f"{rel}: title {title!r} not rendered (h1 is {heading!r})"
    text = page.locator("main").first.inner_text() if page.locator("main").count() else page.inner_text("body")
    leaks = [m for m in RAW_MARKUP if m in text]
    assert not leaks, f"{rel}: raw markup {leaks} shows on the page"
    broken = page.evaluate("Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
    assert not broken, f"{rel}: images that do not load: {broken}"
    hrefs = page.evaluate("Array.from(document.querySelectorAll('main a[href]')).map(a => a.href)")
    dead = sorted({h for h in hrefs if h.startswith("file://") and not _local_path(h).exists()})
    assert not dead, f"{rel}: links to pages or files that do not exist: {dead}"
    if module:
        mod = importlib.import_module(f"classifier_training.{module}")
        # functions and classes: nbdev's show_doc documents each one; module constants are not checked yet
        symbols = [s for s in getattr(mod, "__all__", []) if callable(getattr(mod, s, None))]
        absent = [s for s in symbols if s not in text]
        assert not absent, f"{rel}: public symbols of classifier_training.{module} not documented on the page: {absent}"
    page.close()
