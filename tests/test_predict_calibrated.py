"""Predictions you can trust and ship (issue §2). A run folder calibrated like the pipeline's
(checkpoints/best.ckpt beside calibration.json; model.onnx and model.int8.onnx exported with its
temperature and reject threshold). PyTorch (the checkpoint, read with the run's calibration.json)
and the torch-free predictor make the same accept/reject decisions on the same real images; the INT8
file, which carries onnxruntime's own metadata keys (onnx.quant.pre_process, onnx.infer), works in
OnnxClassifier and classifier-predict."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from classifier_training.evaluate import checkpoint_scorer, evaluate_model, find_run_calibration
from classifier_training.predict import OnnxClassifier, main as predict_main

TEMPERATURE = 1.7


@pytest.fixture(scope="module")
def calibrated_run(tiny_export, tmp_path_factory):
    "The tiny run laid out as classifier-train leaves it, calibrated, with FP32 and INT8 exports."
    from classifier_training.export import export_onnx
    run = tmp_path_factory.mktemp("calibrated") / "run"
    (run / "checkpoints").mkdir(parents=True)
    ckpt = run / "checkpoints" / "best.ckpt"
    shutil.copy(tiny_export.checkpoint, ckpt)
    images = sorted(str(p) for p in (tiny_export.data_root / "val").rglob("*.png"))
    # a threshold in the widest gap near the median calibrated confidence: about half the images
    # rejected, none so close to it that float32 rounding in either runtime could flip a decision
    raw = OnnxClassifier(tiny_export.model_path)
    z = raw.predict_logits(np.stack([raw.preprocess(p) for p in images])) / TEMPERATURE
    e = np.exp(z.astype(np.float64) - z.max(1, keepdims=True))
    conf = np.sort(e.max(1) / e.sum(1))
    mid = len(conf) // 2
    gaps = conf[mid - 8:mid + 8][1:] - conf[mid - 8:mid + 8][:-1]
    k = mid - 8 + int(np.argmax(gaps))
    threshold = float((conf[k] + conf[k + 1]) / 2)
    assert conf[k + 1] - conf[k] > 1e-5, "no usable gap between confidences"
    (run / "calibration.json").write_text(
        json.dumps({"temperature": TEMPERATURE, "reject_threshold": threshold}))
    export_onnx(ckpt, run / "export", verify_images=images, batch_sizes=(1, 7), latency_repeats=0,
                temperature=TEMPERATURE, reject_threshold=threshold, int8=True,
                int8_max_accuracy_drop=1.0)  # the 3-step model is near chance: agreement is tested
    return run, ckpt, images, threshold


def test_pytorch_and_the_predictor_accept_and_reject_the_same_images(calibrated_run):
    run, ckpt, images, threshold = calibrated_run
    assert find_run_calibration(ckpt)["temperature"] == TEMPERATURE
    scorer = checkpoint_scorer(ckpt)
    assert (scorer.temperature, scorer.reject_threshold) == (TEMPERATURE, threshold)
    clf = OnnxClassifier(run / "export" / "model.onnx")
    assert (clf.temperature, clf.reject_threshold) == (TEMPERATURE, threshold)
    preds = clf.predict(images, reject="auto")
    onnx_rejected = [p.rejected for p in preds]
    assert 0 < sum(onnx_rejected) < len(images)  # both decisions occur
    # PyTorch: the checkpoint scored on the same files, calibrated from the run's calibration.json
    from classifier_training.core import load_image_rgb
    _, probs = scorer.run(np.stack([scorer.preprocess(load_image_rgb(p)) for p in images]))
    torch_rejected = (probs.max(1) < threshold).tolist()
    assert torch_rejected == onnx_rejected
    assert np.abs(probs.max(1) - [p.confidence for p in preds]).max() < 1e-5
    # evaluate_model on a labelled split: the same per-image decisions from either model file
    val = Path(images[0]).parent.parent
    a, b = evaluate_model(ckpt, val), evaluate_model(run / "export" / "model.onnx", val)
    assert a.reject_threshold == b.reject_threshold == threshold
    assert a.paths == b.paths and a.accepted.tolist() == b.accepted.tolist()
    by_path = {p.path: not p.rejected for p in preds}
    assert a.accepted.tolist() == [by_path[p] for p in a.paths]
    assert a.metrics["eval/coverage"] == b.metrics["eval/coverage"]


def test_the_int8_file_predicts_with_its_calibration(calibrated_run, tmp_path, capsys):
    run, _, images, threshold = calibrated_run
    int8 = run / "export" / "model.int8.onnx"
    clf8 = OnnxClassifier(int8)
    assert "onnx.quant.pre_process" in clf8.metadata  # onnxruntime's own key, ignored
    assert (clf8.temperature, clf8.reject_threshold) == (TEMPERATURE, threshold)
    fp32 = OnnxClassifier(run / "export" / "model.onnx").predict(images, reject="none")
    q = clf8.predict(images, reject="auto")
    assert np.mean([a.predicted_label == b.predicted_label for a, b in zip(fp32, q)]) >= 0.8
    assert all(p.rejected == (p.confidence < threshold) for p in q)
    assert predict_main([str(int8), *images[:6], "--out", str(tmp_path / "p.csv")]) == 0
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert len(rows) == 7 and rows[0].startswith("path,label,probability")
    assert [r.split(",")[1] for r in rows[1:]] == [p.label for p in q[:6]]
    assert predict_main([str(int8), images[0], "--reject", "1.5"]) == 2
    assert "outside (0, 1)" in capsys.readouterr().err


def test_the_int8_predictor_imports_no_torch(calibrated_run):
    run, _, images, _ = calibrated_run
    code = ("import sys; from classifier_training.predict import main; rc = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, str(run / "export" / "model.int8.onnx"),
                        *images[:3]], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_a_model_without_calibration_predicts_with_a_note(tiny_export, calibrated_run, capsys):
    image = str(next((tiny_export.data_root / "val").rglob("*.png")))
    assert predict_main([str(tiny_export.model_path), image]) == 0
    err = capsys.readouterr().err
    assert "no calibration temperature" in err and "no reject_threshold" in err
    assert predict_main([str(calibrated_run[0] / "export" / "model.int8.onnx"), image]) == 0
    err = capsys.readouterr().err
    assert "no calibration temperature" not in err and "no reject_threshold" not in err


def test_the_runs_calibration_applies_only_to_the_weights_it_was_fitted_on(calibrated_run, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    ckpt = tmp_path / "checkpoints" / "best.ckpt"
    shutil.copy(calibrated_run[1], ckpt)
    (tmp_path / "calibration.json").write_text(json.dumps({"temperature": 2.0, "weights": "ema"}))
    assert checkpoint_scorer(ckpt, "ema").temperature == 2.0
    assert checkpoint_scorer(ckpt, "raw").temperature is None
    (tmp_path / "calibration.json").write_text(json.dumps({"temperature": 0, "weights": "ema"}))
    with pytest.raises(Exception, match="temperature"):
        checkpoint_scorer(ckpt)
