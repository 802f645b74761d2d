"""Write README.md from nbs/index.ipynb offline (the route nbdev_readme takes needs Quarto).

Markdown cells are copied as they are; code cells become ```python blocks (cells marked `#| hide`
are left out, nbdev directives are dropped); text outputs become plain blocks. Relative image links
are rewritten to point into nbs/ so they work from the repository root.
"""
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADER = "<!-- Generated from nbs/index.ipynb by tools/make_readme.py: edit the notebook, not this file. -->\n\n"


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _fix_links(markdown: str) -> str:
    def fix(m):
        alt, target = m.group(1), m.group(2)
        if re.match(r"^(https?:|/|#|nbs/)", target) or target.endswith(".ipynb") or target.endswith(".html"):
            return m.group(0)
        return f"![{alt}](nbs/{target})"
    markdown = re.sub(r"!\[([^\]]*)\]\(([^)\s]+)\)", fix, markdown)
    # chapter links: relative notebook links point into nbs/ from the repository root
    return re.sub(r"(?<!!)\[([^\]]*)\]\((?!https?:|/|#|nbs/)([^)\s]+\.ipynb)\)", r"[\1](nbs/\2)", markdown)


def render(nb_path: Path) -> str:
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    parts = []
    for cell in nb["cells"]:
        src = _source(cell)
        if cell["cell_type"] == "markdown":
            parts.append(_fix_links(src.strip()))
            continue
        if cell["cell_type"] != "code":
            continue
        lines = src.splitlines()
        directives = [l for l in lines if l.startswith("#|")]
        if any(re.match(r"#\|\s*(hide|exporti?|default_exp)", d) for d in directives):
            continue
        code = "\n".join(l for l in lines if not l.startswith("#|")).strip()
        if code:
            parts.append(f"```python\n{code}\n```")
        for out in cell.get("outputs", []):
            text = out.get("text") or out.get("data", {}).get("text/plain")
            if text:
                text = "".join(text) if isinstance(text, list) else text
                parts.append(f"```\n{text.rstrip()}\n```")
    return HEADER + "\n\n".join(p for p in parts if p) + "\n"


def main():
    target = ROOT / "README.md"
    text = render(ROOT / "nbs" / "index.ipynb")
    if not target.exists() or target.read_text(encoding="utf-8") != text:
        target.write_text(text, encoding="utf-8")
        print("README.md written from nbs/index.ipynb")
    return 0


if __name__ == "__main__":
    sys.exit(main())
