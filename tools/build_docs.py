"""Build the docs site offline into _docs/ (what `make docs` runs).

The hosted site is nbdev + Quarto (`nbdev_docs`, see .github/workflows/deploy.yaml). Quarto cannot be
installed here, so this script takes the same route up to Quarto's step and lets smalldocs render:
nbdev_export -> nbs/nbdev.yml + nbs/sidebar.yml -> processed notebooks in _proc/ (nbdev's own
`proc_nbs`, show_doc included) -> README.md -> `smalldocs render _proc` -> _proc/_docs moved to _docs/.
Both builds read the same _quarto.yml (nbs/_quarto.yml is a symlink to the top-level file).
"""
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    from nbdev.config import get_config
    from nbdev.doclinks import nbdev_export, _build_modidx
    from nbdev.quarto import nbdev_sidebar, refresh_quarto_yml
    from nbdev.serve import proc_nbs

    cfg = get_config()
    nbdev_export.__wrapped__()
    refresh_quarto_yml()
    _build_modidx()
    nbdev_sidebar.__wrapped__(path=cfg.nbs_path)
    cache = proc_nbs(n_workers=1, force=True)
    subprocess.run([sys.executable, str(ROOT / "tools" / "make_readme.py")], check=True)
    smalldocs = Path(sys.executable).parent / "smalldocs"
    subprocess.run([str(smalldocs), "render", "--quiet", str(cache)], check=True)
    built = cache / cfg.doc_path.name
    if not built.is_dir():
        print(f"smalldocs did not write {built}", file=sys.stderr)
        return 1
    shutil.rmtree(cfg.doc_path, ignore_errors=True)
    shutil.move(str(built), str(cfg.doc_path))
    pages = sorted(p.relative_to(cfg.doc_path) for p in cfg.doc_path.rglob("*.html"))
    print(f"docs site: {cfg.doc_path} ({len(pages)} pages); open {cfg.doc_path / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
