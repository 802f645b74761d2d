"""ONNX export: one self-contained, checked file; metadata round trip; dynamic batch; verification
that catches a corrupted export; EMA/raw weights from checkpoints; the classifier-export CLI. The
model is the session's `tiny_export` (tests/conftest.py). That exporting the same weights twice
gives the same bytes is tested in nbs/30_export.ipynb."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from classifier_training.core import ExportError, PreprocessingConfig, sha256_file
from classifier_training.data.datasets import load_image_rgb
from classifier_training.data.transforms import build_eval_transform
from classifier_training.checkpoints import load_checkpoint_model
from classifier_training.export import METADATA_KEYS, export_onnx, verify_onnx


@pytest.fixture(scope="module")
def demo(tiny_export):
    "The session's tiny trained, exported model (`tiny_export` in tests/conftest.py)."
    return tiny_export


def _cli(*args):
    script = Path(sys.executable).parent / "classifier-export"
    cmd = [str(script)] if script.exists() else [sys.executable, "-c", "import sys; from classifier_training.export import main; sys.exit(main())"]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=600)


def _eval_batch(paths, pre):
    return torch.stack([build_eval_transform(pre)(load_image_rgb(p)) for p in paths])


def test_one_checked_file_with_dynamic_batch(demo):
    out = demo.model_path.parent
    assert sorted(p.name for p in out.iterdir()) == ["export_report.json", "export_report.md", "labels_mapping.json", "model.onnx"]
    proto = onnx.load(str(demo.model_path), load_external_data=False)
    onnx.checker.check_model(proto, full_check=True)
    assert all(i.data_location == onnx.TensorProto.DEFAULT for i in proto.graph.initializer)  # no .onnx.data
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    session = ort.InferenceSession(str(demo.model_path), providers=["CPUExecutionProvider"])
    paths = demo.datamodule.val_dataset.paths
    for bs in (1, 7, 32):
        x = _eval_batch([paths[i % len(paths)] for i in range(bs)], demo.preprocessing)
        with torch.no_grad(): ref = demo.model.eval()(x).numpy()
        out = session.run(None, {"images": x.numpy()})[0]
        assert out.shape == (bs, 10)
        assert np.abs(out - ref).max() < 1e-4
        assert (out.argmax(1) == ref.argmax(1)).all()
    v = demo.result.report["verification"]
    assert [b["batch_size"] for b in v["per_batch"]] == [1, 7, 32] and v["passed"] and v["top1_agreement"] == 1.0


def test_metadata_round_trip(demo):
    meta = {p.key: p.value for p in onnx.load(str(demo.model_path)).metadata_props}
    assert tuple(meta) == METADATA_KEYS
    assert json.loads(meta["class_names"]) == demo.model.class_names
    assert PreprocessingConfig.from_dict(json.loads(meta["preprocessing"])) == demo.model.preprocessing
    assert meta["labels_mapping_sha256"] == sha256_file(demo.result.labels_mapping_path)
    assert (meta["input_layout"], meta["input_dtype"], meta["output_kind"]) == ("NCHW", "float32", "logits")
    mapping = json.loads(demo.result.labels_mapping_path.read_text())
    assert mapping["class_names"] == demo.model.class_names
    assert mapping["preprocessing"] == demo.model.preprocessing.to_dict()
    report = json.loads(demo.result.report_path.read_text())
    assert report["sha256"] == sha256_file(demo.model_path) and report["file_size_bytes"] == demo.model_path.stat().st_size
    assert [l["batch_size"] for l in report["latency"]] == [1, 32] and all(l["speedup"] > 0 for l in report["latency"])
    md = demo.result.report_md_path.read_text()
    assert "| 7 |" in md and "speed-up" in md


def test_corrupted_export_is_caught(demo):
    paths = demo.datamodule.val_dataset.paths
    # 1. a weight changed in the ONNX file after export
    bad = onnx.load(str(demo.model_path))
    w = next(i for i in bad.graph.initializer if list(i.dims) == [10, demo.model.backbone.num_features])  # the head
    values = onnx.numpy_helper.to_array(w).copy()
    values[3, 7] += 0.2
    w.CopyFrom(onnx.numpy_helper.from_array(values, w.name))
    with pytest.raises(ExportError, match="verification failed"):
        verify_onnx(bad.SerializeToString(), demo.model, paths)
    # 2. the PyTorch weights changed after export
    head = demo.model.backbone.get_classifier()
    saved = head.bias.detach().clone()
    try:
        with torch.no_grad(): head.bias.add_(torch.linspace(-0.01, 0.01, len(saved)))
        report = verify_onnx(demo.model_path, demo.model, paths, raise_on_failure=False)
        assert not report["passed"] and report["max_abs_diff"] > 1e-3
    finally:
        with torch.no_grad(): head.bias.copy_(saved)
    assert verify_onnx(demo.model_path, demo.model, paths)["passed"]


def test_failed_verification_writes_report_but_no_model(demo, tmp_path):
    with pytest.raises(ExportError, match="not written"):
        export_onnx(demo.model, tmp_path, verify_images=demo.datamodule.val_dataset.paths[:2], atol=0.0, latency_repeats=0)
    assert not (tmp_path / "model.onnx").exists()
    assert json.loads((tmp_path / "export_report.json").read_text())["verification"]["passed"] is False


def test_checkpoint_ema_and_raw_weights(demo):
    ckpt = torch.load(demo.checkpoint, map_location="cpu", weights_only=True)
    assert "current_model_state" in ckpt  # the tiny fit ran with EMA
    ema, used = load_checkpoint_model(demo.checkpoint)
    raw, raw_used = load_checkpoint_model(demo.checkpoint, weights="raw")
    assert (used, raw_used) == ("ema", "raw")
    for name, value in ema.state_dict().items():
        if name in ckpt["state_dict"]: assert torch.equal(value, ckpt["state_dict"][name]), name
    for name, value in raw.state_dict().items():
        if name in ckpt["current_model_state"]: assert torch.equal(value, ckpt["current_model_state"][name]), name
    assert ema.class_names == demo.model.class_names and ema.preprocessing == demo.model.preprocessing


def test_cli_errors_are_one_line(tmp_path, capsys):
    from classifier_training.export import main
    (tmp_path / "notes.ckpt").write_text("not a checkpoint")
    for args, expected in [((tmp_path / "notes.ckpt",), "not a checkpoint"), ((tmp_path,), "it is a folder"),
                           ((tmp_path / "notes.ckpt", "--images", tmp_path / "nowhere"), "no such file or folder")]:
        assert main([str(a) for a in args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("classifier-export: error: ") and expected in err and len(err.strip().splitlines()) == 1, err
    r = _cli(tmp_path / "absent.ckpt")  # the installed command: exit status 2, one line, no traceback
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "no such checkpoint file" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.slow
def test_cli_exports_checkpoint_with_raw_weights(demo, tmp_path):
    r = _cli(demo.checkpoint, "--out", tmp_path / "cli", "--raw-weights", "--images", demo.data_root / "val")
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "cli" / "export_report.json").read_text())
    assert report["weights"] == "raw" and report["verification"]["passed"]
    assert report["verification"]["num_images"] == len(list((demo.data_root / "val").rglob("*.png")))
    assert report["sha256"] != demo.result.sha256  # raw weights differ from the EMA weights


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_uint8_graph_with_preprocessing(demo, tmp_path, layout):
    r = export_onnx(demo.model, tmp_path, with_preprocessing=True, layout=layout,
                    verify_images=demo.datamodule.val_dataset.paths, latency_repeats=0)
    meta = {p.key: p.value for p in onnx.load(str(r.model_path)).metadata_props}
    assert (meta["input_dtype"], meta["input_layout"], meta["output_kind"]) == ("uint8", layout, "probabilities")
    assert r.report["verification"]["compared"] == "probabilities" and r.report["verification"]["passed"]
    session = ort.InferenceSession(str(r.model_path), providers=["CPUExecutionProvider"])
    shape = (7, 32, 32, 3) if layout == "NHWC" else (7, 3, 32, 32)
    probs = session.run(None, {"images": np.full(shape, 128, np.uint8)})[0]
    assert probs.shape == (7, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)


def _fit_with(tmp_path, *callbacks, **trainer_kwargs):
    from classifier_training.callbacks.ema import EMACallback
    from classifier_training.test_utils import tiny_datamodule, tiny_dataset, tiny_module, tiny_trainer
    dm = tiny_datamodule(tiny_dataset(tmp_path / "data"), check_workers=0)
    dm.setup()
    model = tiny_module(dm.num_classes, class_names=dm.class_names, preprocessing=dm.preprocessing.to_dict())
    trainer = tiny_trainer(tmp_path / "run", callbacks=[EMACallback(decay=0.9, warmup_steps=1), *callbacks], **trainer_kwargs)
    trainer.fit(model, dm)
    return trainer, dm


def test_callback_without_checkpoint_cannot_export_raw_weights(tmp_path):
    from classifier_training.callbacks.onnx_export import ONNXExportCallback
    cb = ONNXExportCallback(weights="raw")
    with pytest.warns(UserWarning, match="no checkpoint file"):
        _fit_with(tmp_path, cb)  # tiny_trainer: no ModelCheckpoint
    assert cb.result is None and not (tmp_path / "run" / "model.onnx").exists()


@pytest.mark.slow
def test_callback_exports_last_checkpoint_raw_weights(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint
    from classifier_training.callbacks.onnx_export import ONNXExportCallback
    cb = ONNXExportCallback(weights="raw", checkpoint="last", num_verify_images=8, latency_repeats=0, output_dir=tmp_path / "out")
    trainer, dm = _fit_with(tmp_path, ModelCheckpoint(tmp_path / "ckpt", "best", monitor="val/acc_top1", mode="max"),
                            ModelCheckpoint(tmp_path / "ckpt", "last", monitor=None), cb, enable_checkpointing=True)
    report = json.loads((tmp_path / "out" / "export_report.json").read_text())
    assert report["source"] == str(tmp_path / "ckpt" / "last.ckpt") and report["weights"] == "raw"
    assert report["verification"]["passed"] and report["verification"]["num_images"] == min(8, len(dm.val_dataset))
    assert (tmp_path / "out" / "model.onnx").is_file() and not (tmp_path / "run" / "model.onnx").exists()
