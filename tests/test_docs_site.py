"""The offline docs site, opened page by page in a real headless Chromium.

Builds the site the way `make docs` does (tools/build_docs.py), then checks every page: the title renders;
every name in its module's `__all__` (functions, classes and module constants) is documented on it, i.e.
appears as a word in the page's text outside code blocks and cell outputs (a show_doc heading, or prose that
names it); every image loads (the home page's pictures and the figures of the executed demos); no raw
Quarto/nbdev markup leaks into the text and no Markdown link shows verbatim inside a code block; every link to
another page of the site resolves and none points at the hosted site instead. The home page's sidebar links
every page. Without Chromium the browser tests FAIL and name the command that installs it (`make test` runs it
when root with apt-get); `CLASSIFIER_TRAINING_SKIP_BROWSER=1` skips them instead, on purpose.
`DOCS_SITE_BUILT=1` checks the _docs/ already built (e.g. by `make docs`, with outputs) instead of building it
again. One browser and one tab visit every page (a fresh tab per page cost about a second each).
"""
import configparser
import importlib
import json
import os
import re
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SKIP_BROWSER = "CLASSIFIER_TRAINING_SKIP_BROWSER"  # =1: skip the browser tests on purpose
CHROMIUM_FIX = "apt-get install -y chromium"
RAW_MARKUP = ("#|", ":::", "{.callout")
# A Markdown link inside a code block: nbdev turns a backticked name in a docment (`x: int, # see `foo``)
# into `[`foo`](https://...)`, which a show_doc signature then shows verbatim.
CODE_LINK = re.compile(r"\[[^\]\n]+\]\((?:https?://|[^)\s]*\.html)")
# The page's text without code cells, show_doc signatures and cell outputs (all rendered as <pre>): a name
# that only shows up in a demo's code is used there, not documented.
PROSE_JS = """() => {
  const main = (document.querySelector('main') || document.body).cloneNode(true);
  main.querySelectorAll('pre, div.sourceCode, .cell-output-stdout, .cell-output-stderr').forEach(e => e.remove());
  return main.textContent;
}"""


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
_cfg = configparser.ConfigParser()
_cfg.read(ROOT / "settings.ini")
# nbdev links symbols to this URL; tools/build_docs.py points those links at the offline site's own pages
HOSTED_SITE = _cfg["DEFAULT"]["doc_host"].rstrip("/") + "/" + _cfg["DEFAULT"]["doc_baseurl"].strip("/") + "/"


def _local_path(url: str) -> Path:
    "The file a file:// URL points to (fragment and query dropped, %-escapes decoded)."
    return Path(unquote(urlparse(url).path))


@pytest.fixture(scope="module")
def site(docs_site):
    "The site in _docs/ (`docs_site` in tests/conftest.py: tools/build_docs.py --no-execute)."
    return docs_site


def chromium_missing_action(chromium: str | None, env) -> tuple[str, str] | None:
    "None when Chromium is there; else ('skip' or 'fail', why): no browser fails unless opted out."
    if chromium is not None: return None
    if env.get(SKIP_BROWSER) == "1":
        return "skip", f"Chromium is not installed and {SKIP_BROWSER}=1: the browser tests are skipped"
    return "fail", (f"Chromium is not installed, so the docs site cannot be checked in a browser. "
                    f"Fix: `{CHROMIUM_FIX}` (as root; `make test` runs it when it can). "
                    f"To skip these tests on purpose: {SKIP_BROWSER}=1")


def test_a_missing_chromium_fails_unless_opted_out():
    assert chromium_missing_action("/usr/bin/chromium", {}) is None
    kind, message = chromium_missing_action(None, {})
    assert kind == "fail" and CHROMIUM_FIX in message and SKIP_BROWSER in message
    assert chromium_missing_action(None, {SKIP_BROWSER: "1"})[0] == "skip"
    assert chromium_missing_action(None, {SKIP_BROWSER: "0"})[0] == "fail"


@pytest.fixture(scope="module")
def browser():
    action = chromium_missing_action(CHROMIUM, os.environ)
    if action is not None:
        kind, message = action
        pytest.skip(message) if kind == "skip" else pytest.fail(message, pytrace=False)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-quic",
                              "--no-first-run", "--disable-background-networking", "--disable-component-update",
                              "--disable-sync"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def tab(browser):
    "The one tab that visits every page."
    page = browser.new_page()
    yield page
    page.close()


def test_every_notebook_has_a_page(site):
    missing = [str(rel) for rel, _, _ in PAGES if not (site / rel).is_file()]
    assert not missing, f"pages not built: {missing}"


def test_sidebar_links_every_page(tab, site):  # the browser first: no Chromium fails before a build
    tab.goto((site / "index.html").as_uri(), wait_until="load")
    hrefs = tab.evaluate("Array.from(document.querySelectorAll('#quarto-sidebar a[href]'))"
                         ".map(a => a.href)")
    sidebar = tab.locator("#quarto-sidebar").inner_text()
    linked = {_local_path(h).resolve() for h in hrefs if h.startswith("file://")}
    unlinked = [str(rel) for rel, _, _ in PAGES if (site / rel).resolve() not in linked]
    assert not unlinked, f"pages missing from the sidebar: {unlinked}"
    assert "tutorials" in sidebar.lower(), "the tutorials have no sidebar section"


@pytest.mark.parametrize("rel,title,module", PAGES, ids=[str(p[0]) for p in PAGES])
def test_page_renders_in_a_browser(tab, site, rel, title, module):
    page = tab
    # "load": the images are in and smalldocs.js (deferred) has run; a page fetches nothing after
    # it unless someone searches (search.json): waiting for network idle waited out a web font
    page.goto((site / rel).as_uri(), wait_until="load")
    problems = []  # every check runs, so one failure names everything wrong with the page
    heading = page.locator("h1").first.inner_text()
    if title.split(":")[0].strip() not in heading: problems.append(f"title {title!r} not rendered (h1 is {heading!r})")
    text = page.locator("main").first.inner_text() if page.locator("main").count() else page.inner_text("body")
    leaks = [m for m in RAW_MARKUP if m in text]
    if leaks: problems.append(f"raw markup {leaks} shows on the page")
    code = page.evaluate("Array.from(document.querySelectorAll('main pre')).map(e => e.textContent)")
    links = sorted({m.group(0) for block in code for m in CODE_LINK.finditer(block)})
    if links: problems.append(f"Markdown links shown verbatim in code blocks: {links}; drop the backticks around "
                              "names in parameter comments (docments)")
    broken = page.evaluate("Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
    if broken: problems.append(f"images that do not load: {broken}")
    hrefs = page.evaluate("Array.from(document.querySelectorAll('main a[href]')).map(a => a.href)")
    dead = sorted({h for h in hrefs if h.startswith("file://") and not _local_path(h).exists()})
    if dead: problems.append(f"links to pages or files that do not exist: {dead}")
    hosted = sorted({h for h in hrefs if h.startswith(HOSTED_SITE)})
    if hosted: problems.append(f"links to the hosted docs instead of this site's pages: {hosted[:5]}")
    if module:
        names = importlib.import_module(f"classifier_training.{module}").__all__
        prose = page.evaluate(PROSE_JS)
        absent = [n for n in names if not re.search(rf"(?<!\w){re.escape(n)}(?!\w)", prose)]
        if absent: problems.append(f"names in classifier_training.{module}.__all__ not documented on the page "
                                   f"(outside code): {absent}. Functions and classes get a show_doc entry from their "
                                   "`#| export` cell; give each constant a markdown cell after its definition that "
                                   "names it in backticks and says what it holds")
    assert not problems, f"{rel}:\n" + "\n".join(f"- {p}" for p in problems)
