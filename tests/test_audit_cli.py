"""`classifier-audit` as a command: its exit path in a real subprocess (the audit itself, its ranking on
planted label errors and its other refusals are tested in nbs/43_audit.ipynb)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from classifier_training.data.sample import write_sample_subset

ROOT = Path(__file__).resolve().parents[1]


def test_audit_refuses_a_class_with_one_image_in_one_line(tmp_path):
    data = write_sample_subset(tmp_path / "data", per_class=6, splits=("train", "val"),
                               classes=("Bag", "Sneaker"))
    for f in sorted((data / "train" / "Bag").glob("*.png"))[1:]: f.unlink()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, "-m", "classifier_training.audit", f"data.root={data}",
                           f"data.cache_dir={tmp_path / 'cache'}", "data.verbose=false",
                           "--out", str(tmp_path / "audit")],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "classifier-audit: error:" in proc.stderr and "'Bag' (1 image)" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "audit").exists()
    assert sorted(p.name for p in (data / "train").iterdir()) == ["Bag", "Sneaker"]
