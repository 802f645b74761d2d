"""Build the docs site offline into _docs/ (what `make docs` runs).

The hosted site is nbdev + Quarto (`nbdev_docs`, see .github/workflows/deploy.yaml). Quarto cannot be
installed here, so this script takes the same route up to Quarto's step and lets smalldocs render:
nbdev_export -> nbs/nbdev.yml + nbs/sidebar.yml -> processed notebooks in _proc/ (nbdev's own
`proc_nbs`, show_doc included) -> README.md -> `smalldocs render _proc` -> _proc/_docs moved to _docs/,
with nbdev's links to symbols pointed at the local pages instead of the hosted site.
Both builds read the same _quarto.yml (nbs/_quarto.yml is a symlink to the top-level file).

The notebooks are stored without outputs, so by default a copy of nbs/ is executed first: every cell
except those carrying a test flag from settings.ini (`slow`, `notest`) or `#| eval: false`, the way
`nbdev_test` runs them, one fresh interpreter per notebook. The pages then show the demos' tables and
figures; the notebooks in nbs/ are not touched. `--no-execute` skips that (code only, much faster).
`--execute-in-place` only executes the notebooks in nbs/ themselves, keeps the outputs that teach (see
`keep_small_outputs`) and stops: `make outputs` runs it so that the committed notebooks show their
demos on GitHub, and the hosted build runs it on a CI runner before `nbdev_docs`.

    python tools/build_docs.py [--no-execute] [--workers N]
    python tools/build_docs.py --execute-in-place
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _execute_notebook(fn: str, skip_flags: tuple[str, ...]) -> tuple[str, float, str | None]:
    "Run one notebook in place (cwd = its folder) and save its outputs; returns (name, seconds, error or None)."
    from execnb.nbio import read_nb, write_nb
    from execnb.shell import CaptureShell
    from nbdev.process import extract_directives

    os.environ["IN_TEST"] = "1"
    path, start = Path(fn), time.time()
    nb = read_nb(path)

    def skip(cell) -> bool:
        if cell.cell_type != "code": return True
        directives = extract_directives(cell, remove=False)
        if directives.get("eval:", [""])[0].lower() == "false": return True
        return bool(set(skip_flags) & directives.keys())

    shell = CaptureShell(path)
    old = os.getcwd()
    os.chdir(path.parent)
    try:
        shell.run_all(nb, exc_stop=True, preproc=skip)
    except BaseException:
        return path.name, time.time() - start, shell.prettytb(fname=path)
    finally:
        os.chdir(old)
    keep_small_outputs(nb)
    write_nb(nb, path)
    return path.name, time.time() - start, None


MAX_TEXT_LINES = 30  # a longer printout is a log, not a demo result
MAX_OUTPUT_BYTES = 200_000  # one output (a PNG as base64, an HTML table) larger than this is left out


def keep_small_outputs(nb) -> None:
    "Drop what does not teach: outputs of hidden cells, stderr (warnings, progress bars), long logs, huge images."
    from nbdev.process import extract_directives
    for cell in nb.cells:
        if cell.cell_type != "code": continue
        hidden = "hide" in extract_directives(cell, remove=False)
        kept = []
        for out in [] if hidden else cell.get("outputs", []):
            if out.get("output_type") == "stream":
                text = "".join(out.get("text", ""))
                if out.get("name") == "stderr" or text.count("\n") > MAX_TEXT_LINES: continue
            elif len(json.dumps(out.get("data", {}))) > MAX_OUTPUT_BYTES: continue
            kept.append(out)
        cell["outputs"] = kept


def execute_notebooks(folder: Path, skip_flags: tuple[str, ...], workers: int) -> None:
    "Execute every notebook under `folder` in place, `workers` at a time; raise naming the ones that fail."
    notebooks = sorted(str(p) for p in folder.rglob("*.ipynb")
                       if not any(part.startswith(("_", ".")) for part in p.relative_to(folder).parts))

    def run(fn: str) -> tuple[str, float, str | None]:  # one fresh interpreter per notebook, like nbdev_test
        start = time.time()
        proc = subprocess.run([sys.executable, __file__, "--execute-one", fn, "--skip-flags", *skip_flags],
                              capture_output=True, text=True)
        return Path(fn).name, time.time() - start, (proc.stderr[-6000:] or "failed") if proc.returncode else None

    failed = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for name, seconds, error in pool.map(run, notebooks):
            print(f"executed {name} in {seconds:.0f} s" + (" -- FAILED" if error else ""), flush=True)
            if error: failed.append((name, error))
    if failed:
        for name, error in failed: print(f"\n{name} failed:\n{error}", file=sys.stderr)
        raise RuntimeError(f"these notebooks fail when executed: {', '.join(n for n, _ in failed)} "
                           "(nbdev_test --path nbs/NAME.ipynb shows the same error)")


def execute_copy(nbs_path: Path, skip_flags: tuple[str, ...], workers: int) -> Path:
    "Copy nbs/ (links resolved) to a temporary folder and execute its notebooks there; returns the copy."
    copy = Path(tempfile.mkdtemp(prefix="classifier_training_docs_")) / nbs_path.name
    shutil.copytree(nbs_path, copy, symlinks=False,
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    try: execute_notebooks(copy, skip_flags, workers)
    except BaseException:
        shutil.rmtree(copy.parent, ignore_errors=True)
        raise
    return copy


def localize_doc_links(site: Path, proc: Path, hosted: str) -> int:
    """Point nbdev's links to symbols (`hosted`/core.html#x, the hosted site's page names) at this site's pages.

    nbdev links every backticked symbol to its page on the hosted Quarto site, whose page names come from
    each notebook's `output-file` (numbers dropped: `90_test_utils.ipynb` -> `test_utils.html`); smalldocs
    names pages after the notebooks. Returns the number of links rewritten."""
    pages = {}  # hosted page path -> this site's page path, both relative to the site root
    for nb in proc.rglob("*.ipynb"):
        rel = nb.relative_to(proc)
        if any(part.startswith(("_", ".")) for part in rel.parts): continue
        front = "".join("".join(c["source"]) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "raw")
        m = re.search(r"^output-file:\s*(\S+)", front, re.M)
        if m: pages[(rel.parent / m.group(1).strip("'\"")).as_posix()] = rel.with_suffix(".html").as_posix()
    link = re.compile(r'href="' + re.escape(hosted.rstrip("/")) + r'/([^"#?]+)')
    count = 0
    for html in site.rglob("*.html"):
        here = html.parent.relative_to(site)

        def local(m):
            nonlocal count
            target = pages.get(m.group(1))
            if target is None: return m.group(0)
            count += 1
            return 'href="' + Path(os.path.relpath(target, here.as_posix())).as_posix()

        text = html.read_text()
        new = link.sub(local, text)
        if new != text: html.write_text(new)
    return count


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-execute", dest="execute", action="store_false",
                    help="do not run the notebooks first: pages show code without outputs (faster)")
    ap.add_argument("--workers", type=int, default=2, help="notebooks executed in parallel (default 2)")
    ap.add_argument("--execute-in-place", action="store_true",
                    help="only execute the notebooks in nbs/ in place (for a CI runner before nbdev_docs), build nothing")
    ap.add_argument("--execute-one", help=argparse.SUPPRESS)  # internal: run this notebook in place
    ap.add_argument("--skip-flags", nargs="*", default=[], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.execute_one:
        _, _, error = _execute_notebook(args.execute_one, tuple(args.skip_flags))
        if error: print(error, file=sys.stderr)
        return 1 if error else 0

    from nbdev.config import get_config
    from nbdev.doclinks import nbdev_export, _build_modidx
    from nbdev.quarto import nbdev_sidebar, refresh_quarto_yml
    from nbdev.serve import proc_nbs

    cfg = get_config()
    skip_flags = tuple(cfg.get("tst_flags", "").split())
    if args.execute_in_place:
        try: execute_notebooks(cfg.nbs_path, skip_flags, args.workers)
        except RuntimeError as e:
            print(f"build_docs: {e}", file=sys.stderr)
            return 1
        return 0
    nbdev_export.__wrapped__()
    refresh_quarto_yml()
    _build_modidx()
    nbdev_sidebar.__wrapped__(path=cfg.nbs_path)
    source = cfg.nbs_path
    if args.execute:
        t0 = time.time()
        try: source = execute_copy(cfg.nbs_path, skip_flags, args.workers)
        except RuntimeError as e:
            print(f"make docs: {e}", file=sys.stderr)
            return 1
        print(f"notebooks executed in {time.time() - t0:.0f} s", flush=True)
    try:
        cache = proc_nbs(path=str(source), n_workers=1, force=True)
    except Exception as e:
        print(f"\nmake docs: nbdev could not process a notebook. {str(e)[:3000]}\n"
              "The usual cause: at docs time nbdev executes every cell that holds an `import` (besides the "
              "exported cells and show_doc calls) on its own, without the cells before it. Move the import(s) "
              "of that cell into the notebook's import cell at the top (a `#| hide` cell for test-only imports) "
              "and leave the rest of the cell import-free.", file=sys.stderr)
        return 1
    finally:
        if source != cfg.nbs_path: shutil.rmtree(source.parent, ignore_errors=True)
    subprocess.run([sys.executable, str(ROOT / "tools" / "make_readme.py")], check=True)
    smalldocs = Path(sys.executable).parent / "smalldocs"
    subprocess.run([str(smalldocs), "render", "--quiet", str(cache)], check=True)
    built = cache / cfg.doc_path.name
    if not built.is_dir():
        print(f"smalldocs did not write {built}", file=sys.stderr)
        return 1
    shutil.rmtree(cfg.doc_path, ignore_errors=True)
    shutil.move(str(built), str(cfg.doc_path))
    localize_doc_links(cfg.doc_path, cache, cfg.doc_host.rstrip("/") + "/" + cfg.doc_baseurl.strip("/"))
    pages = sorted(p.relative_to(cfg.doc_path) for p in cfg.doc_path.rglob("*.html"))
    print(f"docs site: {cfg.doc_path} ({len(pages)} pages); open {cfg.doc_path / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
