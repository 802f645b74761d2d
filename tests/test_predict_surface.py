"""The user's predict surface (issue §4): one input gives one result, numpy and Pillow inputs, calibration
(temperature) and rejection from the model's metadata, the CLI's inputs (globs, @list, --from-file, stdin),
JSON lines out with unreadable files as rows, --providers, the lazy top-level names, and a fast --help."""
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from classifier_training.predict import ModelFileError, OnnxClassifier, Prediction, SkippedImage, main

NO_TORCH = "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))"


def _run(code: str, *args, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          input=stdin, timeout=300)


def _with_metadata(source: Path, dest: Path, **keys) -> Path:
    "A copy of an exported model with metadata keys added or replaced (as the exporter would write them)."
    m = onnx.load(str(source))
    old = {e.key: e.value for e in m.metadata_props}
    del m.metadata_props[:]
    onnx.helper.set_model_props(m, {**old, **{k: str(v) for k, v in keys.items()}})
    onnx.save(m, str(dest))
    return dest


@pytest.fixture(scope="module")
def images(tiny_export):
    return sorted((tiny_export.data_root / "val").rglob("*.png"))[::3]


@pytest.fixture(scope="module")
def calibrated(tiny_export, images, tmp_path_factory):
    "The tiny model with temperature 0.5 and a reject threshold between its least and most confident images."
    work = tmp_path_factory.mktemp("calibrated")
    sharp = OnnxClassifier(_with_metadata(tiny_export.model_path, work / "t.onnx", temperature=0.5))
    threshold = round(float(np.median([p.confidence for p in sharp.predict(images)])), 4)
    path = _with_metadata(tiny_export.model_path, work / "cal.onnx", temperature=0.5, reject_threshold=threshold)
    return path, threshold


def test_one_path_string_is_one_image_and_gives_one_result(tiny_export, images):
    clf = OnnxClassifier(tiny_export.model_path)
    p = clf.predict(str(images[0]), top_k=3)  # it used to be iterated letter by letter
    assert isinstance(p, Prediction) and p.path == str(images[0])
    assert p.label in clf.class_names and p.index == clf.class_names.index(p.label)
    assert len(p.top_k) == 3 and p.top_k[0] == (p.label, p.confidence) and p.rejected is False
    image = Image.open(images[0]).convert("RGB")
    for x in (images[0], image, np.asarray(image)):
        q = clf.predict(x, top_k=3)
        assert q.indices == p.indices and abs(q.confidence - p.confidence) < 1e-9
    many = clf.predict([str(images[0]), image, np.asarray(image)])
    assert isinstance(many, list) and len(many) == 3 and {r.index for r in many} == {p.index}


def test_temperature_divides_logits_and_reject_threshold_rejects(tiny_export, images, calibrated, tmp_path):
    plain = OnnxClassifier(tiny_export.model_path)
    model, threshold = calibrated
    clf = OnnxClassifier(model)
    batch = np.stack([clf.preprocess(f) for f in images])
    z = plain.predict_logits(batch).astype(np.float64) / 0.5
    expected = np.exp(z - z.max(1, keepdims=True)); expected /= expected.sum(1, keepdims=True)
    assert np.abs(clf.predict_batch(batch) - expected).max() < 1e-9
    assert np.abs(plain.predict_batch(batch) - expected).max() > 1e-3  # the temperature changes something
    results = clf.predict(images)
    low = [r.confidence < threshold for r in results]
    assert any(low) and not all(low), [round(r.confidence, 3) for r in results]  # the test data has both
    assert [r.rejected for r in results] == low
    assert all(r.label == "unknown" and r.predicted_label in clf.class_names and "below" in r.reason
               for r in results if r.rejected)
    assert not any(r.rejected for r in clf.predict(images, reject="none"))
    assert not any(r.rejected for r in plain.predict(images))  # no key, auto: nothing rejected
    for bad, key in ((dict(temperature=0), "temperature"), (dict(reject_threshold=1.5), "reject_threshold"),
                     (dict(reject_threshold="high"), "reject_threshold")):
        with pytest.raises(ModelFileError, match=f"metadata {key}"):
            OnnxClassifier(_with_metadata(tiny_export.model_path, tmp_path / "bad.onnx", **bad))


def test_probabilities_graph_has_its_temperature_inside_and_is_not_divided_again(tiny_export, images, tmp_path):
    from classifier_training.export import export_onnx
    u8 = export_onnx(tiny_export.model, tmp_path / "u8", with_preprocessing=True, verify_images=images[:4], batch_sizes=(1,), latency_repeats=0)
    clf = OnnxClassifier(_with_metadata(u8.model_path, tmp_path / "u8_t.onnx", temperature=4.0))
    assert clf.output_kind == "probabilities" and clf.temperature == 4.0
    batch = np.stack([clf.preprocess(f) for f in images[:6]])
    assert np.abs(clf.predict_batch(batch) - clf.predict_logits(batch).astype(np.float64)).max() < 1e-12


def test_cli_reject_auto_none_threshold_and_notes(tiny_export, images, calibrated, tmp_path, capsys):
    model, threshold = calibrated
    rc = main([str(model), *map(str, images), "--out", str(tmp_path / "p.csv")])
    err = capsys.readouterr().err
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert rc == 0 and "rejected as unknown" in err and "no reject_threshold" not in err
    rejected = [r for r in rows if r["rejected"] == "true"]
    assert rejected and all(r["label"] == "unknown" and r["predicted_label"] and f"below the reject threshold {threshold:g}"
                            in r["reason"] for r in rejected)
    assert main([str(model), *map(str, images), "--reject", "none", "--out", str(tmp_path / "n.csv")]) == 0
    assert all(r["rejected"] == "false" for r in csv.DictReader((tmp_path / "n.csv").open()))
    capsys.readouterr()
    assert main([str(tiny_export.model_path), str(images[0])]) == 0
    assert "has no reject_threshold" in capsys.readouterr().err  # the one-line note of --reject auto
    for bad in ("0", "1.2", "often"):
        assert main([str(model), str(images[0]), "--reject", bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("classifier-predict: error: reject") and len(err.strip().splitlines()) == 1


def test_cli_inputs_globs_lists_stdin_and_jsonl_rows_for_unreadable_files(tiny_export, images, tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "list.txt").write_text(f"# a list\n{images[0]}\n\n{tmp_path / 'broken.jpg'}\n")
    (tmp_path / "more.txt").write_text(f"{images[1]}\n")
    folder = tiny_export.data_root / "val" / "Bag"
    glob = str(folder / "*.png")  # quoted: the command expands it
    code = ("import sys; from classifier_training.predict import main; rc = main(sys.argv[1:]); "
            f"{NO_TORCH}; sys.exit(rc)")
    r = _run(code, tiny_export.model_path, glob, f"@{tmp_path / 'list.txt'}", tmp_path / "gone.png", "-",
             "--from-file", tmp_path / "more.txt", "--out", tmp_path / "p.jsonl", stdin=f"{images[2]}\n")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(l) for l in (tmp_path / "p.jsonl").read_text().splitlines()]
    n = len(list(folder.glob("*.png")))
    assert [row["path"] for row in rows[:n]] == sorted(map(str, folder.glob("*.png")))
    tail = [(Path(row["path"]).name, row.get("error")) for row in rows[n:]]
    assert tail == [(images[0].name, None), ("broken.jpg", "not_an_image"), ("gone.png", "missing"),
                    (images[2].name, None), (images[1].name, None)]
    ok = rows[0]
    assert set(ok) >= {"label", "index", "confidence", "top_k", "rejected", "predicted_label"}
    r = _run(code, tiny_export.model_path, images[0], images[1], "--format", "jsonl", "--reject", "none")
    assert r.returncode == 0 and [json.loads(l)["path"] for l in r.stdout.splitlines()] == [str(images[0]), str(images[1])]


def test_cli_providers(tiny_export, images, capsys):
    assert main([str(tiny_export.model_path), str(images[0]), "--providers", "CPUExecutionProvider"]) == 0
    capsys.readouterr()
    assert main([str(tiny_export.model_path), str(images[0]), "--providers", "CUDAExecutionProvider,Nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown onnxruntime provider(s)" in err and "CPUExecutionProvider" in err and "Nope" in err
    assert len(err.strip().splitlines()) == 1


def test_top_level_names_are_lazy_and_the_predictor_stays_torch_free(tiny_export, images):
    code = ("import sys, classifier_training as ct; " + NO_TORCH + "; "
            "from classifier_training import OnnxClassifier; "
            "p = OnnxClassifier(sys.argv[1]).predict(sys.argv[2]); print(p.label); " + NO_TORCH)
    r = _run(code, tiny_export.model_path, images[0])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() in tiny_export.class_names
    import classifier_training
    from classifier_training import ImageClassifier, OnnxClassifier as O, train
    from classifier_training.model import ImageClassifier as IC
    from classifier_training.training import train as tr
    from classifier_training import evaluate_model
    from classifier_training.evaluate import evaluate_model as ev
    assert (train, O, ImageClassifier, evaluate_model) == (tr, OnnxClassifier, IC, ev)
    assert {"train", "OnnxClassifier", "ImageClassifier"} <= set(dir(classifier_training))
    with pytest.raises(AttributeError, match="no attribute 'nope'"): classifier_training.nope


def test_help_does_not_import_onnxruntime_and_starts_fast():
    code = ("import sys, time; t = time.perf_counter(); from classifier_training.predict import main\n"
            "try: main(['--help'])\nexcept SystemExit: pass\n"
            "assert 'onnxruntime' not in sys.modules and 'torch' not in sys.modules\n"
            "print(time.perf_counter() - t, file=sys.stderr)")
    r = _run(code)
    assert r.returncode == 0, r.stderr
    assert "--reject" in r.stdout and "--providers" in r.stdout and "--from-file" in r.stdout
    assert float(r.stderr.strip().splitlines()[-1]) < 2.0  # measured 0.1-0.2 s here; a loose bound for busy CI
