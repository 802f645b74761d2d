"""classifier-evaluate (issue §3): a model.onnx scored without torch, a checkpoint scored with the safe loader, on
any labelled layout (folders, JSONL, CSV; a root, a split folder or one annotation file), with the reports the
training run writes, class names checked, and the same numbers as the predictor and the confusion-matrix callback."""
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from classifier_training.evaluate import EvaluationResult, confusion_counts, evaluate_model, main
from classifier_training.reports import classification_report
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


def test_cam_overlays_of_the_top_losses_for_a_checkpoint_only(tiny_export, tmp_path):
    "--cam: a checkpoint gets top_losses_cam.png beside top_losses.png; a model.onnx is refused."
    from PIL import Image
    code = main([str(tiny_export.checkpoint), str(tiny_export.data_root / "val"), "--cam",
                 "--out", str(tmp_path / "ck"), "--reject", "none"])
    assert code == 0
    plain, cam = (Image.open(tmp_path / "ck" / f) for f in ("top_losses.png", "top_losses_cam.png"))
    assert plain.size == cam.size  # the same grid of the same mistakes, with the maps over them
    assert np.abs(np.asarray(plain, np.int16) - np.asarray(cam, np.int16)).mean() > 1
    with pytest.raises(Exception, match="needs a checkpoint"):
        evaluate_model(tiny_export.model_path, tiny_export.data_root / "val", tmp_path / "x", cam=True)
    assert not (tmp_path / "x").exists()


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
    "The report of evaluate's counts is the reports chapter's, and agrees with scikit-learn."
    rng = np.random.default_rng(0)
    targets, preds = rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    preds[:3] = 4; targets[:3] = 4
    names = ["a", "b|c", "d", "e", "f"]
    counts = confusion_counts(targets, preds, 5)
    assert counts.sum() == 200 and counts[4, 4] >= 3
    rows = classification_report(counts, names)
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


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory):
    "Real out-of-distribution images for a clothing model: scikit-learn's 8x8 digits as 28 px PNGs."
    from PIL import Image
    from sklearn.datasets import load_digits
    folder = tmp_path_factory.mktemp("ood") / "digits"
    (folder / "nested").mkdir(parents=True)
    for i, pixels in enumerate(load_digits().images[:40]):
        Image.fromarray((pixels * 255 / 16).astype(np.uint8)).resize((28, 28)).save(
            folder / ("nested" if i % 2 else "") / f"digit_{i}.png")
    (folder / "broken.png").write_bytes(b"not a png")
    return folder


def test_reject_reports_coverage_and_accuracy_of_the_accepted(tiny_export, tmp_path, capsys):
    val = tiny_export.data_root / "val"
    r = evaluate_model(tiny_export.model_path, val, reject="none")
    threshold = float(f"{np.median(r.probabilities.max(1)):.6f}")  # the tiny model is unsure
    model = str(tiny_export.model_path)
    assert main([model, str(val), "--out", str(tmp_path / "ev"), "--reject", str(threshold)]) == 0
    out, err = capsys.readouterr()
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    accepted = r.probabilities.max(1) >= threshold
    m = saved["metrics"]
    assert 0 < accepted.mean() < 1
    assert saved["reject_threshold"] == threshold and m["eval/coverage"] == accepted.mean()
    assert m["eval/acc_accepted"] == (r.predictions[accepted] == r.targets[accepted]).mean()
    assert m["eval/num_accepted"] == accepted.sum()
    assert f"reject below {threshold:g}: coverage" in out
    # a model without calibration metadata still evaluates, with a note; no threshold: all accepted
    assert "no calibration temperature" in err and saved["temperature"] is None
    assert main([model, str(val), "--out", str(tmp_path / "auto")]) == 0
    assert "no reject_threshold" in capsys.readouterr().err
    saved = json.loads((tmp_path / "auto" / "metrics.json").read_text())
    assert "eval/coverage" not in saved["metrics"]
    for bad in ("1.5", "0", "maybe"):
        assert main([model, str(val), "--out", str(tmp_path / "bad"), "--reject", bad]) == 2
        assert "reject" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_ood_folder_separation_is_reported(tiny_export, digits_folder, tmp_path, capsys):
    from classifier_training.calibration import ood_auroc_fpr95, ood_scores
    val, model = tiny_export.data_root / "val", str(tiny_export.model_path)
    assert main([model, str(val), "--out", str(tmp_path / "ev"), "--ood", str(digits_folder)]) == 0
    out = capsys.readouterr().out
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    m = saved["metrics"]
    assert m["eval/ood_num_images"] == 40
    assert saved["ood"]["skipped"][0]["path"].endswith("broken.png")
    r = evaluate_model(tiny_export.model_path, val)
    from classifier_training.evaluate import load_scorer, score_ood_folder
    odd, _ = score_ood_folder(load_scorer(tiny_export.model_path), digits_folder)
    for kind in ("msp", "energy"):
        assert (m[f"eval/ood_{kind}_auroc"], m[f"eval/ood_{kind}_fpr95"]) == \
            ood_auroc_fpr95(ood_scores(r.logits, kind), ood_scores(odd, kind))
        assert 0 <= m[f"eval/ood_{kind}_auroc"] <= 1
    assert "OOD" in out and "msp AUROC" in out and "energy AUROC" in out
    empty = tmp_path / "empty"; empty.mkdir(); (empty / "x.jpg").write_bytes(b"nope")
    assert main([model, str(val), "--out", str(tmp_path / "e2"), "--ood", str(empty)]) == 2
    assert "no readable image" in capsys.readouterr().err


def test_benchmark_of_an_onnx_alone_imports_no_torch(tiny_export, tmp_path):
    "Only an .onnx (and model.int8.onnx beside it): two rows, no torch; Markdown and JSON."
    folder = tmp_path / "deploy"; folder.mkdir()
    shutil.copy(tiny_export.model_path, folder / "model.onnx")
    shutil.copy(tiny_export.model_path, folder / "model.int8.onnx")  # any model: the row is tested
    code = ("import sys; from classifier_training.evaluate import main; rc = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'the benchmark imported torch'; sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, str(folder / "model.onnx"),
                        str(tiny_export.data_root / "val"), "--out", str(tmp_path / "ev"),
                        "--benchmark", "--repeats", "3"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    table = json.loads((tmp_path / "ev" / "benchmark.json").read_text())
    assert [row["runtime"] for row in table["rows"]] == ["ONNX FP32", "ONNX INT8"]
    assert any("no PyTorch row" in n for n in table["notes"])
    md = (tmp_path / "ev" / "benchmark.md").read_text()
    assert md.splitlines()[0].startswith("| runtime | accuracy | p50 ms") and "| ONNX INT8 |" in md
    assert "| ONNX FP32 |" in r.stdout
    for row in table["rows"]:
        assert row["latency_p95_ms"] >= row["latency_p50_ms"] > 0 and row["throughput_ips"] > 0
        assert row["size_bytes"] == (folder / "model.onnx").stat().st_size
        assert row["num_images"] == 80


def test_benchmark_with_the_checkpoint_and_int8_on_the_fly(tiny_export, tmp_path):
    "Eager from the run's checkpoints/best.ckpt (accuracy = FP32's), FP32, INT8 made on the fly."
    run = tmp_path / "run"; (run / "checkpoints").mkdir(parents=True)
    shutil.copy(tiny_export.checkpoint, run / "checkpoints" / "best.ckpt")
    shutil.copy(tiny_export.model_path, run / "model.onnx")
    assert main([str(run / "model.onnx"), str(tiny_export.data_root / "val"), "--out",
                 str(tmp_path / "ev"), "--benchmark", "--int8", "--repeats", "3",
                 "--threads", "1"]) == 0
    table = json.loads((tmp_path / "ev" / "benchmark.json").read_text())
    rows = {row["runtime"]: row for row in table["rows"]}
    assert list(rows) == ["PyTorch eager", "ONNX FP32", "ONNX INT8"]
    assert rows["PyTorch eager"]["accuracy"] == rows["ONNX FP32"]["accuracy"]
    assert rows["PyTorch eager"]["file"].endswith("best.ckpt")
    assert (tmp_path / "ev" / "model.int8.onnx").is_file()
    assert rows["ONNX INT8"]["size_bytes"] < rows["ONNX FP32"]["size_bytes"] / 2
    assert any("quantized on the fly" in n for n in table["notes"])


def test_benchmark_options_need_benchmark(tiny_export, capsys):
    for extra in (["--int8"], ["--checkpoint", str(tiny_export.checkpoint)], ["--threads", "1"]):
        with pytest.raises(SystemExit):
            main([str(tiny_export.model_path), str(tiny_export.data_root), *extra])
        assert "add --benchmark" in capsys.readouterr().err
