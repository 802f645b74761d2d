"""The torch-free predictor: it agrees with the PyTorch evaluation pipeline on the whole sample test split, never
imports torch, decodes images exactly as training does, and the classifier-predict CLI reports errors clearly.

`classifier-predict` runs in a fresh interpreter that fails if torch gets imported (`_predict`)
where that is the point (the agreement, no torch, one error's exit path); the other CLI cases call
its `main()` in this process (`_predict_here`)."""
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from classifier_training.core import PreprocessingConfig, load_image_rgb
from classifier_training.data.transforms import build_eval_transform
from classifier_training.predict import ModelFileError, OnnxClassifier, preprocess_image

PREDICT = ("import sys; from classifier_training.predict import main; rc = main(sys.argv[1:]); "
           "assert 'torch' not in sys.modules, 'classifier-predict imported torch'; sys.exit(rc)")


@pytest.fixture(scope="module")
def demo(tiny_export):
    "The session's tiny trained, exported model (`tiny_export` in tests/conftest.py)."
    return tiny_export


def _predict(*args):
    "Run classifier-predict in a fresh interpreter that fails if torch gets imported."
    return subprocess.run([sys.executable, "-c", PREDICT, *map(str, args)], capture_output=True, text=True, timeout=600)


def _predict_here(capsys, *args) -> SimpleNamespace:
    "classifier-predict's `main()` in this process: exit status, stdout and stderr, as `_predict`."
    from classifier_training.predict import main
    capsys.readouterr()
    returncode = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return SimpleNamespace(returncode=returncode, stdout=out, stderr=err)


def _agreement(demo, tmp_path, step):
    "classifier-predict vs the PyTorch evaluation pipeline (datamodule test loader + model) on every `step`-th test image."
    dm, model = demo.datamodule, demo.model.eval()
    assert len(dm.test_dataset) == 1000  # the embedded sample's whole test split
    subset = torch.utils.data.Subset(dm.test_dataset, range(0, len(dm.test_dataset), step))
    loader = torch.utils.data.DataLoader(subset, batch_size=64, collate_fn=dm.test_dataloader().collate_fn)
    with torch.no_grad(): torch_probs = torch.cat([model(b["images"]).softmax(-1) for b in loader]).numpy()
    paths = [dm.test_dataset.paths[i] for i in subset.indices]
    args = [demo.data_root / "test"] if step == 1 else paths
    r = _predict(demo.model_path, *args, "--top-k", "10", "--out", tmp_path / "p.json", "--batch-size", "64")
    assert r.returncode == 0, r.stderr
    rows = {p["path"]: p["predictions"] for p in json.loads((tmp_path / "p.json").read_text())["predictions"]}
    assert len(rows) == len(paths)
    onnx_probs = np.zeros_like(torch_probs, dtype=np.float64)
    for i, path in enumerate(paths):
        for p in rows[str(path)]: onnx_probs[i, p["index"]] = p["probability"]
    agree, max_diff = float(np.mean(torch_probs.argmax(1) == onnx_probs.argmax(1))), float(np.abs(onnx_probs - torch_probs).max())
    print(f"sample test split: {len(paths)} images, top-1 agreement {agree:.2%}, max |p_onnx - p_torch| = {max_diff:.2e}")
    assert agree == 1.0 and max_diff < 1e-5


def test_agrees_with_pytorch_eval_pipeline_on_a_fifth_of_the_test_split(demo, tmp_path):
    _agreement(demo, tmp_path, step=5)


@pytest.mark.slow
def test_agrees_with_pytorch_eval_pipeline_on_the_whole_sample_test_split(demo, tmp_path):
    _agreement(demo, tmp_path, step=1)


def test_predictor_never_imports_torch(demo):
    code = "import sys, classifier_training.predict; assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    image = next((demo.data_root / "val").rglob("*.png"))
    r = _predict(demo.model_path, image)  # the guard in PREDICT checks after a real prediction
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(str(image))


def test_metadata_and_batching(demo):
    from classifier_training.export import METADATA_KEYS
    from classifier_training.predict import REQUIRED_METADATA
    assert set(REQUIRED_METADATA) <= set(METADATA_KEYS)  # the predictor's copy of the key names matches the exporter's
    clf = OnnxClassifier(demo.model_path)
    assert clf.class_names == demo.class_names and clf.preprocessing == demo.preprocessing
    files = sorted((demo.data_root / "val").rglob("*.png"))[:33]
    runs = [clf.predict(files, batch_size=bs, top_k=3) for bs in (1, 7, 32)]
    assert all(len(r) == 33 for r in runs)
    for other in runs[1:]:
        assert [p.indices for p in other] == [p.indices for p in runs[0]]
        assert np.allclose([p.probabilities for p in other], [p.probabilities for p in runs[0]], atol=1e-6)
    assert [p.path for p in runs[0]] == [str(f) for f in files]


def test_cli_outputs_and_skips_unreadable_files(demo, tmp_path, capsys):
    folder = tmp_path / "imgs" / "nested"
    folder.mkdir(parents=True)
    for f in sorted((demo.data_root / "val" / "Bag").glob("*.png"))[:3]: (folder / f.name).write_bytes(f.read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    (folder / "readme.txt").write_text("not an image, not an image extension: ignored")
    r = _predict_here(capsys, demo.model_path, tmp_path / "imgs", tmp_path / "missing.jpg",
                      "--top-k", "2", "--out", tmp_path / "p.csv")
    assert r.returncode == 0, r.stderr
    assert "skipped" in r.stderr and "broken.png" in r.stderr and "missing.jpg" in r.stderr
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert list(rows[0]) == ["path", "label", "probability", "top2_label", "top2_probability", "predicted_label", "rejected", "reason"]
    read = [r for r in rows if r["label"]]
    assert len(read) == 3 and all(float(r["probability"]) >= float(r["top2_probability"]) for r in read)
    unreadable = {Path(r["path"]).name: r["reason"].split(":")[0] for r in rows if not r["label"]}
    assert unreadable == {"broken.png": "not_an_image", "missing.jpg": "missing"}  # rows, not only stderr
    r = _predict_here(capsys, demo.model_path, folder / "broken.png")
    assert r.returncode == 1 and "0 image(s) predicted, 1 skipped" in r.stderr


@pytest.mark.parametrize("case", ["missing", "not_onnx", "no_metadata", "no_images"])
def test_cli_errors(demo, tmp_path, capsys, case):
    image = next((demo.data_root / "val").rglob("*.png"))
    model, expected = {"missing": (tmp_path / "absent.onnx", "no such file"),
                       "not_onnx": (image, "not a readable ONNX model"),
                       "no_metadata": (tmp_path / "plain.onnx", "no classifier_training metadata"),
                       "no_images": (demo.model_path, "no image files found")}[case]
    if case == "no_metadata":
        plain = onnx.load(str(demo.model_path))
        del plain.metadata_props[:]
        onnx.save(plain, str(model))
    paths = [tmp_path] if case == "no_images" else [image]
    # "missing" in a fresh interpreter (the real command's exit path), the others in this process
    r = _predict(model, *paths) if case == "missing" else _predict_here(capsys, model, *paths)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and expected in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("classifier-predict: error: "), r.stderr
    if case != "no_images":
        with pytest.raises(ModelFileError, match=expected): OnnxClassifier(model)


def test_one_image_decoder_for_training_the_check_and_the_predictor(demo, tmp_path):
    """Training, the dataset check and the predictor all decode with core.load_image_rgb (one implementation), so
    the predictor's model input equals the PyTorch evaluation pipeline's for every image mode."""
    import classifier_training.core as core
    import classifier_training.data.check as check
    import classifier_training.data.datasets as datasets
    import classifier_training.predict as predict
    assert datasets.load_image_rgb is check.load_image_rgb is predict.load_image_rgb is core.load_image_rgb
    assert not [n for n in vars(predict) if n in ("load_rgb", "_to_rgb", "_wide_to_l", "_alpha_on_white", "ImageDecodeError")]
    gray = (np.arange(40 * 30).reshape(30, 40) % 251).astype(np.uint8)
    rgb = np.dstack([gray, 255 - gray, gray // 2])
    exif = Image.Exif(); exif[0x0112] = 6
    cases = {"gray.png": Image.fromarray(gray), "rgb.jpg": Image.fromarray(rgb),
             "rgba.png": Image.fromarray(np.dstack([rgb, np.where(gray > 100, 255, 0).astype(np.uint8)]), "RGBA"),
             "la.png": Image.fromarray(np.dstack([gray, gray]), "LA"),
             "wide16.png": Image.fromarray(gray.astype(np.uint16) * 257),
             "palette.gif": Image.fromarray(rgb).convert("P"),
             "palette_transparent.png": Image.fromarray(gray).convert("P"),
             "cmyk.jpg": Image.fromarray(rgb).convert("CMYK"),
             "one_bit.bmp": Image.fromarray(gray).convert("1"),
             "wide16.tif": Image.fromarray(gray.astype(np.uint16) * 257),
             "float.tif": Image.fromarray(gray.astype(np.float32) / 255)}  # float images hold 0..1
    for name, img in cases.items():
        kwargs = {"transparency": 0} if name == "palette_transparent.png" else {}
        img.save(tmp_path / name, **kwargs)
    Image.fromarray(rgb).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    clf = OnnxClassifier(demo.model_path)
    transform = build_eval_transform(clf.preprocessing)
    for f in sorted(tmp_path.iterdir()):
        assert np.array_equal(clf.preprocess(f), transform(load_image_rgb(f)).numpy()), f.name
    assert load_image_rgb(tmp_path / "rotated.jpg").size == (30, 40)


def test_preprocessing_is_bit_exact_with_eval_transform(demo):
    image = load_image_rgb(next((demo.data_root / "test").rglob("*.png")))
    variants = [image, image.crop((0, 0, 28, 19)), image.crop((3, 0, 24, 28)), image.resize((333, 250)), image.resize((45, 61))]
    configs = [demo.preprocessing, PreprocessingConfig(image_size=224), PreprocessingConfig(image_size=17, crop_pct=0.9),
               PreprocessingConfig(image_size=24, interpolation="nearest", mean=(0.5,) * 3, std=(0.5,) * 3)]
    for img in variants:
        for pre in configs:
            assert np.array_equal(preprocess_image(img, pre), build_eval_transform(pre)(img).numpy()), (img.size, pre)


@pytest.mark.slow
def test_uint8_model_predicts_like_float_model(demo, tmp_path):
    from classifier_training.export import export_onnx
    u8 = export_onnx(demo.model, tmp_path, with_preprocessing=True, verify_images=demo.datamodule.val_dataset.paths, latency_repeats=0)
    files = demo.datamodule.test_dataset.paths[::10]
    float_preds = OnnxClassifier(demo.model_path).predict(files, top_k=10)
    u8_preds = OnnxClassifier(u8.model_path).predict(files, top_k=10)
    assert [p.indices[0] for p in float_preds] == [p.indices[0] for p in u8_preds]
    by_index = lambda p: np.array([v for _, v in sorted(zip(p.indices, p.probabilities))])
    assert max(np.abs(by_index(a) - by_index(b)).max() for a, b in zip(float_preds, u8_preds)) < 1e-5



def _edited(demo, path, **changes):
    "A copy of the demo model with some metadata values replaced (a hand edit or a mix-up)."
    model = onnx.load(str(demo.model_path))
    for entry in model.metadata_props:
        if entry.key in changes: entry.value = changes[entry.key]
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("case", ["fewer_names", "more_names", "image_size"])
def test_metadata_that_disagrees_with_the_graph_is_refused_at_load(demo, tmp_path, capsys, case):
    """Before: fewer names gave an IndexError traceback, more names predicted with a wrong class
    list (exit 0), a wrong image_size gave a raw onnxruntime error. Now the model is refused when
    loaded, in one line that says what disagrees."""
    pre = demo.preprocessing.with_image_size(48).to_dict()
    del pre["resize_size"]
    names = demo.class_names
    changes, expected = {
        "fewer_names": ({"class_names": json.dumps(names[:3])}, "class_names lists 3 classes but"),
        "more_names": ({"class_names": json.dumps(names + ["X"])}, "class_names lists 11 classes"),
        "image_size": ({"preprocessing": json.dumps(pre)}, "image_size is 48 but the graph input"),
    }[case]
    model = _edited(demo, tmp_path / f"{case}.onnx", **changes)
    image = next((demo.data_root / "val").rglob("*.png"))
    r = _predict_here(capsys, model, image, "--top-k", "10")
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == "" and "Traceback" not in r.stderr
    assert r.stderr.startswith("classifier-predict: error: "), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert str(model) in r.stderr and expected in r.stderr and "re-export" in r.stderr
    if case != "image_size": assert "the model outputs 10 scores" in r.stderr
    with pytest.raises(ModelFileError, match=expected): OnnxClassifier(model)


def _denied_folder(folder, monkeypatch):
    """Make `folder` read-only. chmod does that for a normal user; as root (CI containers, this
    machine) chmod has no effect, so creating a file in that folder is made to fail with the
    PermissionError a normal user would get."""
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):  # root: simulate
        real = tempfile.mkstemp
        def mkstemp(*args, dir=None, **kwargs):
            if dir is not None and Path(dir).absolute() == folder.absolute():
                raise PermissionError(13, "Permission denied", str(dir))
            return real(*args, dir=dir, **kwargs)
        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def test_out_in_a_read_only_folder_is_refused_before_predicting(demo, tmp_path, monkeypatch,
                                                                  capsys):
    from classifier_training.predict import main
    folder = tmp_path / "read_only"
    folder.mkdir()
    _denied_folder(folder, monkeypatch)
    args = [str(demo.model_path), str(demo.data_root / "val"), "--out", str(folder / "p.csv")]
    try: rc = main(args)
    finally: folder.chmod(0o755)
    out, err = capsys.readouterr()
    assert rc == 2 and out == "", out[:300]  # not a single prediction computed
    assert err.strip() == (f"classifier-predict: error: --out {folder / 'p.csv'}: cannot write "
                           f"into the folder '{folder}' (Permission denied); choose a folder you "
                           "can write to")
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("code", [28, 30])  # ENOSPC (disk full), EROFS (read-only file system)
def test_out_write_failure_is_one_line_and_leaves_no_file(demo, tmp_path, monkeypatch, capsys,
                                                          code):
    from classifier_training.predict import main
    def fail(fd): raise OSError(code, os.strerror(code))
    monkeypatch.setattr(os, "fsync", fail)  # the atomic writer's fsync: a full disk shows at last
    out_file = tmp_path / "out" / "p.json"
    image = next((demo.data_root / "val").rglob("*.png"))
    rc = main([str(demo.model_path), str(image), "--out", str(out_file), "--reject", "none"])
    out, err = capsys.readouterr()
    assert rc == 2 and len(out.splitlines()) == 1  # the prediction was printed; saving it failed
    err = "\n".join(l for l in err.splitlines() if not l.startswith("note: "))  # e.g. no temperature
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"classifier-predict: error: --out {out_file}: writing failed "
                          f"({os.strerror(code)}, errno {code})")
    assert "the predictions printed above were not saved" in err
    assert list(out_file.parent.iterdir()) == []  # no partial file, no temporary file
