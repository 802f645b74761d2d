"""The notebooks read well on the rendered site and on GitHub: code fits the page, demos use the public API."""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for p in (ROOT / "nbs").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
MAX_CODE_LINE = 100  # characters the rendered page shows without scrolling sideways


def _code_cells(path: Path):
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def _hidden(cell) -> bool:
    return bool(re.search(r"^#\|\s*hide\b", "".join(cell["source"]), re.M))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.relative_to(ROOT / "nbs").as_posix())
def test_code_lines_fit_the_page(path):
    long = [(i, line) for i, cell in enumerate(_code_cells(path))
            for line in "".join(cell["source"]).splitlines() if len(line) > MAX_CODE_LINE]
    assert not long, f"{path.name}: {len(long)} code line(s) over {MAX_CODE_LINE} characters, e.g. " + \
        "; ".join(f"cell {i}: {line[:60]}..." for i, line in long[:3])


TUTORIALS = sorted((ROOT / "nbs" / "tutorials").glob("*.ipynb"))
FIXTURES = re.compile(r"\btest_utils\b|\btiny_(dataset|datamodule|module|trainer|trained_export)\b"
                      r"|import\s+_\w|import\s+\(?[^)\n]*\b_[a-z]\w*")


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.name)
def test_visible_tutorial_cells_use_the_public_api(path):
    bad = [(i, m.group(0)) for i, cell in enumerate(_code_cells(path)) if not _hidden(cell)
           for m in [FIXTURES.search("".join(cell["source"]))] if m]
    assert not bad, f"{path.name}: visible cells use test fixtures or private names: {bad[:3]}"


def test_the_checks_can_fail(tmp_path):
    nb = {"cells": [{"cell_type": "code", "source": ["x = 1  # " + "y" * 120 + "\n"]},
                    {"cell_type": "code", "source": ["from classifier_training.test_utils import tiny_module\n"]},
                    {"cell_type": "code", "source": ["#| hide\n", "from classifier_training.test_utils import x\n"]}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "bad.ipynb"
    path.write_text(json.dumps(nb))
    with pytest.raises(AssertionError, match="over 100"): test_code_lines_fit_the_page(path)
    with pytest.raises(AssertionError, match="test fixtures"): test_visible_tutorial_cells_use_the_public_api(path)
