"""classifier-evaluate (issue §3): a model.onnx scored without torch, a checkpoint scored with the safe loader, on
any labelled layout (folders, JSONL, CSV; a root, a split folder or one annotation file), with the reports the
training run writes, class names checked, and the same numbers as the predictor and the confusion-matrix callback."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from classifier_training.evaluate import (EvaluationResult, classification_rows, confusion_counts, evaluate_model,
                                          main, rows_to_csv, rows_to_markdown)
from classifier_training.test_utils import tiny_dataset

REPORTS = {"metrics.json", "classification_report.csv", "classification_report.md", "confusion_matrix.json",
           "confusion_matrix.png", "predictions.csv", "top_losses.png"}


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    "The same eight test images per class in each layout the data chapters read."
    work = tmp_path_factory.mktemp("layouts")
    return {fmt: tiny_dataset(work / fmt, per_class=3, format=fmt, classes=None, splits=("test",))
            for fmt in ("folders", "jsonl", "csv")}


def test_onnx_route_writes_the_reports_and_never_imports_torch(tiny_export, tmp_path):
    code = ("import sys; from classifier_training.evaluate import main; rc = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'classifier-evaluate imported torch'; sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, str(tiny_export.model_path), str(tiny_export.data_root),
                        "--out", str(tmp_path / "ev")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert {p.name for p in (tmp_path / "ev").iterdir()} == REPORTS
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert saved["metrics"]["eval/num_images"] == 1000 and "split test" in saved["data"]
    assert set(saved["metrics"]) >= {"eval/acc_top1", "eval/acc_top5", "eval/f1_macro", "eval/loss"}
    assert "top-1" in r.stdout and "wrote" in r.stdout
    # the same top-1 as classifier-predict's labels against the folder names
    from classifier_training.predict import OnnxClassifier
    rows = list(csv.DictReader((tmp_path / "ev" / "predictions.csv").open()))
    paths = [row["path"] for row in rows]
    preds = OnnxClassifier(tiny_export.model_path).predict(paths, reject="none")
    assert [p.label for p in preds] == [row["predicted"] for row in rows]
    top1 = np.mean([p.label == Path(p.path).parent.name for p in preds])
    assert abs(top1 - saved["metrics"]["eval/acc_top1"]) < 1e-12


def test_checkpoint_route_agrees_with_the_export(tiny_export, tmp_path):
    a = evaluate_model(tiny_export.model_path, tiny_export.data_root / "val")
    b = evaluate_model(tiny_export.checkpoint, tiny_export.data_root / "val", tmp_path / "ck")
    assert isinstance(b, EvaluationResult) and "ema weights" in b.model
    assert np.abs(a.probabilities - b.probabilities).max() < 1e-5
    assert a.targets.tolist() == b.targets.tolist() and a.logits.shape == (len(a.paths), 10)
    assert (a.predictions == b.predictions).all()
    assert {p.name for p in (tmp_path / "ck").iterdir()} == REPORTS


def test_every_layout_gives_the_same_numbers(tiny_export, layouts):
    results = {fmt: evaluate_model(tiny_export.model_path, root) for fmt, root in layouts.items()}
    results["split folder"] = evaluate_model(tiny_export.model_path, layouts["folders"] / "test")
    results["csv file"] = evaluate_model(tiny_export.model_path, layouts["csv"] / "test.csv")
    jsonl = sorted((layouts["jsonl"] / "test").rglob("*.jsonl"))
    results["jsonl file"] = evaluate_model(tiny_export.model_path, jsonl[0]) if len(jsonl) == 1 else None
    reference = results["folders"].metrics
    assert reference["eval/num_images"] == 30
    for name, r in results.items():
        if r is not None: assert r.metrics == pytest.approx(reference), name


def test_class_names_must_match_the_model(tiny_export, tmp_path, capsys):
    data = tmp_path / "data"
    image = next((tiny_export.data_root / "val" / "Bag").glob("*.png"))
    for folder in ("Bag", "Handbag"):
        (data / folder).mkdir(parents=True)
        (data / folder / "a.png").write_bytes(image.read_bytes())
    assert main([str(tiny_export.model_path), str(data), "--out", str(tmp_path / "ev")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("classifier-evaluate: error: the class names of the data") and len(err.splitlines()) == 1
    assert "'Handbag'" in err and "'Ankle_boot'" in err  # both lists named
    assert not (tmp_path / "ev").exists()


def test_unreadable_images_are_skipped_and_listed(tiny_export, tmp_path):
    data = tmp_path / "data"
    for folder in ("Bag", "Coat"):
        (data / folder).mkdir(parents=True)
        for f in sorted((tiny_export.data_root / "val" / folder).glob("*.png"))[:3]:
            (data / folder / f.name).write_bytes(f.read_bytes())
    (data / "Coat" / "broken.png").write_bytes(b"not a png")
    r = evaluate_model(tiny_export.model_path, data, tmp_path / "ev")
    assert r.metrics["eval/num_images"] == 6 and [s["reason"] for s in r.skipped] == ["not_an_image"]
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["skipped"][0]["path"].endswith("broken.png")
    assert "broken.png,,,,not_an_image" in (tmp_path / "ev" / "predictions.csv").read_text()


def test_reports_match_the_confusion_matrix_callbacks_writers():
    "The torch-free report functions must stay in step with the callback's (one test instead of one source)."
    from classifier_training.callbacks.confusion_matrix import (classification_report, report_to_csv,
                                                                 report_to_markdown)
    rng = np.random.default_rng(0)
    targets, preds = rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    preds[:3] = 4; targets[:3] = 4
    names = ["a", "b|c", "d", "e", "f"]
    counts = confusion_counts(targets, preds, 5)
    assert counts.sum() == 200 and counts[4, 4] >= 3
    rows = classification_rows(counts, names)
    assert rows == classification_report(counts, names)
    assert rows_to_csv(rows) == report_to_csv(rows)
    assert rows_to_markdown(rows, 0.5) == report_to_markdown(rows, 0.5)
    from sklearn.metrics import f1_score
    assert rows[-2]["f1"] == pytest.approx(f1_score(targets, preds, average="macro"))


def test_cli_as_a_module_and_default_out_folder(tiny_export, tmp_path):
    r = subprocess.run([sys.executable, "-m", "classifier_training.evaluate", str(tiny_export.model_path),
                        str(tiny_export.data_root / "val")], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert {p.name for p in (tmp_path / "evaluation" / "export").iterdir()} == REPORTS  # evaluation/<model folder>
    r = subprocess.run([sys.executable, "-m", "classifier_training.evaluate", "--help"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "--split" in r.stdout and "--weights" in r.stdout
