"""The README's first screen is the user's route, and its predict and evaluate commands work as written: every
`classifier-predict` / `classifier-evaluate` line and every predicting Python block of README.md runs here, in a
folder laid out as the README assumes (runs/photos/model.onnx from a real tiny trained model, photos in ~), through
bash. Training is tested elsewhere (tests/test_cli.py)."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from classifier_training.test_utils import tiny_dataset

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("classifier-predict", "classifier-evaluate")


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def _commands() -> list[str]:
    lines = [l.split("  #")[0].strip() for b in _blocks("sh") for l in b.splitlines()]
    return [l for l in lines if any(l.startswith(c) or f"| {c}" in l for c in COMMANDS)]


def test_first_screen_is_the_users_route():
    text = (ROOT / "README.md").read_text()
    quick = text[text.index("## Quick start"):text.index("## Install")]
    assert text.index("## Quick start") < 1200  # the first thing after the two-paragraph introduction
    sh = re.findall(r"```sh\n(.*?)```", quick, flags=re.S)[0].splitlines()
    assert [l.split()[0] for l in sh] == ["pip", "classifier-train", "classifier-predict", "classifier-evaluate"]
    assert "data.root=~/photos name=photos" in sh[1] and "runs/photos/model.onnx" in sh[2]
    python = re.findall(r"```python\n(.*?)```", quick, flags=re.S)[0].strip().splitlines()
    assert len(python) == 3 and python[0] == "from classifier_training import OnnxClassifier"


@pytest.fixture
def world(tiny_export, tmp_path):
    "A working folder and a home as the README assumes them, with a real tiny trained model."
    cwd, home, bin_ = tmp_path / "work", tmp_path / "home", tmp_path / "bin"
    for d in (cwd / "runs" / "photos", home, bin_): d.mkdir(parents=True)
    shutil.copy(tiny_export.model_path, cwd / "runs" / "photos" / "model.onnx")
    shutil.copy(tiny_export.model_path, cwd / "model.onnx")  # "The predictor without torch" names it so
    images = sorted((tiny_export.data_root / "val").rglob("*.png"))
    jpeg = lambda src, dst: (dst.parent.mkdir(parents=True, exist_ok=True), Image.open(src).convert("RGB").save(dst))
    for i, name in enumerate(["photo.jpg", "a.jpg", "b.jpg", "more_photos/x.jpg", "shots/day1/y.jpg", "new/z.jpg",
                              "new_photos/w.jpg"]):
        jpeg(images[i * 7], cwd / name)
    tiny_dataset(home / "new_photos", per_class=2, classes=None, splits=("test",))
    tiny_dataset(home / "photos_2025", per_class=2, classes=None, splits=("test",))
    for command, module in (("classifier-predict", "predict"), ("classifier-evaluate", "evaluate")):
        shim = bin_ / command  # the console scripts, from this checkout (installed ones may be older)
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m classifier_training.{module} "$@"\n')
        shim.chmod(0o755)
    env = {**os.environ, "HOME": str(home), "PATH": f"{bin_}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return cwd, home, env, tiny_export.class_names


def test_readme_predict_and_evaluate_commands_run_as_written(world):
    cwd, home, env, class_names = world
    commands = _commands()
    assert len(commands) >= 4 and any(c.startswith("classifier-evaluate") for c in commands)
    for command in commands:
        r = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, (command, r.stderr)
        assert "Traceback" not in r.stderr, (command, r.stderr)
        if command.startswith("classifier-predict runs/photos/model.onnx photo.jpg"):
            first = r.stdout.splitlines()[0].split("\t")
            assert first[0] == "photo.jpg" and first[1].split()[0] in class_names, r.stdout
    assert (cwd / "evaluation" / "photos" / "metrics.json").exists()  # the quick start's default --out
    assert (cwd / "evaluation" / "photos_2025" / "confusion_matrix.png").exists()
    assert len((cwd / "predictions.jsonl").read_text().splitlines()) == 1  # find new -name '*.jpg'


def test_readme_python_blocks_that_predict_run_as_written(world):
    cwd, home, env, class_names = world
    blocks = [b for b in _blocks("python") if "OnnxClassifier" in b and "compose_config" not in b]
    assert len(blocks) >= 2
    for block in blocks:
        r = subprocess.run([sys.executable, "-c", block], cwd=cwd, env=env, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, (block, r.stderr)
        assert r.stdout.split()[0] in class_names, r.stdout


@pytest.mark.slow
def test_quick_start_as_written_trains_predicts_and_evaluates(tmp_path):
    """The README's Quick start end to end, every line as written (bar the pip line): train on ~/photos (real
    sample images, not the embedded sample), predict one image, evaluate on ~/new_photos, then the Python lines."""
    text = (ROOT / "README.md").read_text()
    quick = text[text.index("## Quick start"):text.index("## Install")]
    sh_lines = [l.split("  #")[0].strip() for l in re.findall(r"```sh\n(.*?)```", quick, flags=re.S)[0].splitlines()]
    python = re.findall(r"```python\n(.*?)```", quick, flags=re.S)[0]
    cwd, home, bin_ = tmp_path / "work", tmp_path / "home", tmp_path / "bin"
    for d in (cwd, home, bin_): d.mkdir()
    tiny_dataset(home / "photos", per_class=6, classes=None)  # train/val/test, 10 classes
    tiny_dataset(home / "new_photos", per_class=2, classes=None, splits=("test",))
    photo = sorted((home / "new_photos").rglob("*.png"))[0]
    Image.open(photo).convert("RGB").save(cwd / "photo.jpg")
    for command, module in (("classifier-train", "training"), ("classifier-predict", "predict"),
                            ("classifier-evaluate", "evaluate")):
        shim = bin_ / command
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m classifier_training.{module} "$@"\n')
        shim.chmod(0o755)
    env = {**os.environ, "HOME": str(home), "PATH": f"{bin_}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "CLASSIFIER_TRAINING_CACHE": str(tmp_path / "cache")}
    outputs = {}
    for line in sh_lines[1:]:
        r = subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=1500)
        assert r.returncode == 0 and "Traceback" not in r.stderr, (line, r.stderr[-3000:])
        outputs[line.split()[0]] = r.stdout
    run = cwd / "runs" / "photos"
    assert (run / "model.onnx").is_file() and (run / "checkpoints" / "best.ckpt").is_file()
    names = __import__("json").loads((run / "labels_mapping.json").read_text())
    first = outputs["classifier-predict"].splitlines()[0].split("\t")
    label = first[1].split()[0]
    if label == "unknown":  # below the reject threshold: the line still names the class it would have given
        label = re.search(r"predicted (\S+) ", first[2]).group(1)
    assert first[0] == "photo.jpg" and label in names["class_names"], outputs["classifier-predict"]
    assert (cwd / "evaluation" / "photos" / "metrics.json").is_file()
    r = subprocess.run([sys.executable, "-c", python], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    said = r.stdout.split()[0]
    if said == "unknown":  # rejected: top_k still lists the classes, most likely first
        said = re.search(r"\[\('([^']+)'", r.stdout).group(1)
    assert said in names["class_names"], r.stdout
