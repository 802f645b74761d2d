"""Check that notebooks are clean and that the library and README are in sync with them.

Runs `nbdev_clean`, `nbdev_export` and the offline README build, and fails, naming the files,
if any of them changed a tracked file. Works on a dirty tree too: it compares file contents before
and after instead of asking git.
"""
import hashlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def snapshot() -> dict:
    files = [*ROOT.glob("nbs/**/*.ipynb"), *ROOT.glob("classifier_training/**/*.py"), ROOT / "README.md",
             ROOT / "pyproject.toml", *ROOT.glob("nbs/sidebar.yml")]
    return {p.relative_to(ROOT): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in files if p.is_file() and ".ipynb_checkpoints" not in p.parts}


def main() -> int:
    before = snapshot()
    steps = [[str(BIN / "nbdev_clean")], [str(BIN / "nbdev_export")], [sys.executable, "tools/make_readme.py"]]
    for step in steps:
        subprocess.run(step, cwd=ROOT, check=True)
    after = snapshot()
    changed = sorted(str(p) for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    if changed:
        print("Out of sync: these files changed when cleaning/exporting the notebooks:")
        for p in changed:
            print("  ", p)
        print("Fix: run `make check-sync` (or nbdev_clean && nbdev_export && python tools/make_readme.py) and commit.")
        return 1
    print(f"in sync: {len(after)} notebooks, modules and README checked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
