"""The whole callback stack of `conf/callbacks/default.yaml` on one real fit.

One module-scoped run (real sample images, the library's datamodule with a weighted sampler, a small
real ImageClassifier, 2 epochs, sanity check on, then `trainer.test`) with every callback the config
composes (the session's `default_config`, tests/conftest.py), built by `hydra.utils.instantiate`
exactly as `classifier-train` builds them. Each test then
checks one promised artifact by content, not only by existence. A second, bare fit (no callbacks)
proves the stack adds no forward pass to the epochs.
"""
from __future__ import annotations

import copy
import csv
import json
import warnings
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger

from classifier_training.model import ImageClassifier
from classifier_training.test_utils import ForwardCounter, tiny_datamodule, tiny_dataset, tiny_module, tiny_trainer

EPOCHS = 2
SANITY_STEPS = 2


def default_callbacks(config, run_dir: Path) -> dict:
    "Every callback of the callbacks group of `config` (a composed config), writing into run_dir."
    cfg = copy.deepcopy(config)
    cfg.paths.run_dir = str(run_dir)
    return {name: instantiate(node) for name, node in cfg.callbacks.items()}


class PhaseProbe(pl.Callback):
    "Forward-call counts at the edges of the fit's phases, and the sampler's draws of every epoch."
    def __init__(self, counter: ForwardCounter):
        self.counter, self.at, self.draws = counter, {}, {}

    def _mark(self, name): self.at[name] = self.counter.calls
    def on_fit_start(self, trainer, pl_module): self._mark("fit_start")
    def on_sanity_check_start(self, trainer, pl_module): self._mark("sanity_start")
    def on_sanity_check_end(self, trainer, pl_module): self._mark("sanity_end")
    def on_train_start(self, trainer, pl_module): self._mark("train_start")
    def on_train_end(self, trainer, pl_module): self._mark("train_end")

    def on_train_epoch_end(self, trainer, pl_module):
        sampler = getattr(trainer.datamodule, "sampler", None)
        if sampler is not None: self.draws[trainer.current_epoch] = list(sampler.drawn_indices)


def fit_counted(run_dir: Path, dm, callbacks: list, **trainer_kwargs) -> SimpleNamespace:
    "Fit a fresh tiny model (fixed seed) on `dm` with `callbacks`, counting the model's forward calls by phase."
    pl.seed_everything(0, verbose=False)
    model = tiny_module(dm.num_classes, class_names=dm.class_names, preprocessing=dm.preprocessing.to_dict())
    counter = ForwardCounter(model)
    probe = PhaseProbe(counter)
    trainer = tiny_trainer(run_dir, max_epochs=EPOCHS, limit_train_batches=None, limit_val_batches=None,
                           limit_test_batches=None, num_sanity_val_steps=SANITY_STEPS, callbacks=[probe, *callbacks],
                           **trainer_kwargs)
    with counter, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, datamodule=dm)
    return SimpleNamespace(model=model, trainer=trainer, probe=probe, total=counter.calls)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, default_config):
    tmp = tmp_path_factory.mktemp("stack")
    run = tmp / "run"
    dm = tiny_datamodule(tiny_dataset(tmp / "data", per_class=4), sampler="auto", sampler_seed=0)
    dm.setup()
    callbacks = default_callbacks(default_config, run)
    fit = fit_counted(run, dm, list(callbacks.values()), enable_checkpointing=True, enable_progress_bar=True,
                      logger=CSVLogger(run, name="logs", version=""))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit.trainer.test(fit.model, datamodule=dm, verbose=False)
    return SimpleNamespace(run=run, dm=dm, callbacks=callbacks, **vars(fit))


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f: return list(csv.DictReader(f))


def test_config_composes_the_thirteen(stack):
    names = {type(cb).__name__ for cb in stack.callbacks.values()}
    assert names == {"EMACallback", "ModelInfoCallback", "DatasetStatisticsCallback", "SamplerDistributionCallback",
                     "ConfusionMatrixCallback", "TrainingHistoryCallback", "SampleVisualizationCallback",
                     "CalibrationCallback", "ONNXExportCallback", "ModelCheckpoint", "EarlyStopping",
                     "LearningRateMonitor", "RichProgressBar"}
    assert Path(stack.callbacks["model_checkpoint"].dirpath) == stack.run / "checkpoints"  # ${paths.run_dir} resolved
    assert stack.trainer.current_epoch == EPOCHS  # early stopping did not cut the run short


def test_confusion_matrix(stack):
    cm = stack.callbacks["confusion_matrix"]
    assert int(cm.confusion["val"].sum()) == len(stack.dm.val_dataset)  # last epoch; sanity batches left out
    n = cm.every_n_epochs  # the default draws every n-th epoch and the last
    drawn = [e for e in range(EPOCHS) if (e + 1) % n == 0 or e == EPOCHS - 1]
    for epoch in range(EPOCHS):
        png = stack.run / "epochs" / f"epoch_{epoch:03d}" / "confusion_matrix.png"
        assert (png.read_bytes()[:4] == b"\x89PNG") if epoch in drawn else not png.exists()
    saved = json.loads((stack.run / "confusion_matrix.json").read_text())
    assert saved["class_names"] == stack.dm.class_names
    counts = np.array(saved["counts"])
    assert counts.shape == (3, 3) and counts.sum() == len(stack.dm.test_dataset)
    assert saved["accuracy"] == pytest.approx(stack.trainer.callback_metrics["test/acc_top1"].item(), abs=1e-6)
    rows = read_csv(stack.run / "classification_report.csv")
    assert [r["class"] for r in rows] == [*stack.dm.class_names, "macro avg", "weighted avg"]
    for r, name in zip(rows, stack.dm.class_names):
        assert float(r["recall"]) == pytest.approx(stack.trainer.callback_metrics[f"test/recall/{name}"].item(), abs=1e-6)
        assert int(r["support"]) == Counter(stack.dm.test_dataset.targets)[stack.dm.class_names.index(name)]
    assert "| **macro avg** |" in (stack.run / "classification_report.md").read_text()
    assert (stack.run / "confusion_matrix.png").stat().st_size > 1000


def test_training_history(stack):
    rows = read_csv(stack.run / "training_history.csv")
    assert [int(r["epoch"]) for r in rows] == list(range(EPOCHS))  # one row per epoch
    logged = read_csv(stack.run / "logs" / "metrics.csv")
    for key in ("train/loss", "train/acc_top1", "val/loss", "val/acc_top1", "val/acc_top5", "val/f1_macro"):
        per_epoch = {int(r["epoch"]): float(r[key]) for r in logged if r.get(key)}
        assert [float(r[key]) for r in rows] == pytest.approx([per_epoch[e] for e in range(EPOCHS)], abs=1e-6), key
    assert all(float(r["lr"]) > 0 for r in rows)
    for name in ("loss", "acc_top1", "f1_macro", "lr"):
        assert (stack.run / "training_history" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_sampler_distribution(stack):
    series = json.loads((stack.run / "sampler_distribution.json").read_text())
    assert [e["epoch"] for e in series] == list(range(EPOCHS))
    targets = stack.dm.train_dataset.targets
    for entry in series:
        draws = stack.probe.draws[entry["epoch"]]
        assert sum(entry["drawn"].values()) == entry["total_draws"] == len(draws)  # counts sum to the epoch's draws
        drawn = Counter(stack.dm.class_names[targets[i]] for i in draws)
        assert entry["drawn"] == {c: drawn.get(c, 0) for c in stack.dm.class_names}
        assert sum(entry["target"].values()) == pytest.approx(1.0)


def test_sample_visualization(stack):
    n = stack.callbacks["sample_visualization"].every_n_epochs  # every n-th epoch and the last
    drawn = [e for e in range(EPOCHS) if (e + 1) % n == 0 or e == EPOCHS - 1]
    for epoch in range(EPOCHS):
        for name in ("sample_predictions.png", "top_losses.png"):
            png = stack.run / "epochs" / f"epoch_{epoch:03d}" / name
            assert (png.read_bytes()[:4] == b"\x89PNG") if epoch in drawn else not png.exists()
    for name in ("sample_predictions.png", "top_losses.png"):
        assert (stack.run / name).stat().st_size > 1000
    top = stack.callbacks["sample_visualization"].top_losses["test"]
    assert all(e["target"] != e["pred"] and 0 <= e["index"] < len(stack.dm.test_dataset) for e in top)
    assert [e["loss"] for e in top] == sorted((e["loss"] for e in top), reverse=True)


def test_model_info_dataset_report_and_labels(stack):
    info = json.loads((stack.run / "model_info.json").read_text())
    assert info["total_params"] == sum(p.numel() for p in stack.model.parameters()) > 0
    assert info["flops"] > 0 and info["input_size"] == [3, 32, 32]
    labels = json.loads((stack.run / "labels_mapping.json").read_text())
    assert labels["class_names"] == stack.dm.class_names and labels["num_classes"] == 3
    assert labels["preprocessing"]["image_size"] == 32
    report = json.loads((stack.run / "dataset_report.json").read_text())
    assert report  # content is DatasetStatisticsCallback's to define; here: written and valid JSON


def test_onnx_export(stack):
    import onnxruntime as ort
    session = ort.InferenceSession(str(stack.run / "model.onnx"), providers=["CPUExecutionProvider"])
    images = torch.stack([stack.dm.val_dataset[i]["image"] for i in range(5)]).numpy()
    (logits,) = session.run(None, {session.get_inputs()[0].name: images})
    assert logits.shape == (5, 3) and np.isfinite(logits).all()
    report = json.loads((stack.run / "export_report.json").read_text())
    assert report  # verified export: the report exists next to the model
    assert (stack.run / "export_report.md").is_file()


def test_calibration(stack):
    "The temperature fitted after fit is in model.onnx; test logged the figures and wrote the plots."
    import onnx
    fitted = json.loads((stack.run / "calibration.json").read_text())
    assert fitted["temperature"] > 0 and fitted["fitted_on"] == "val" and fitted["weights"] == "ema"
    meta = {p.key: p.value for p in onnx.load(str(stack.run / "model.onnx")).metadata_props}
    assert float(meta["temperature"]) == fitted["temperature"]
    assert (meta.get("reject_threshold") is None) == (fitted["reject_threshold"] is None)
    report = json.loads((stack.run / "export_report.json").read_text())
    assert report["calibration"]["temperature"] == fitted["temperature"]
    logged = stack.trainer.callback_metrics
    for key in ("test/ece", "test/ece_calibrated", "test/nll", "test/nll_calibrated", "test/brier",
                "test/brier_calibrated", "test/temperature"):
        assert key in logged, sorted(logged)
    for name in ("reliability_diagram.png", "risk_coverage.png", "risk_coverage.csv"):
        assert (stack.run / name).stat().st_size > 0, name


def test_checkpoints(stack):
    last = stack.run / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == EPOCHS - 1
    assert "current_model_state" in ckpt  # EMA on: state_dict is the EMA, the raw weights ride along
    history = next(v for k, v in ckpt["callbacks"].items() if k.startswith("TrainingHistoryCallback"))
    assert [r["epoch"] for r in history["rows"]] == list(range(EPOCHS))  # resume continues the history
    model = ImageClassifier.load_from_checkpoint(last, map_location="cpu", weights_only=True)
    assert model.class_names == stack.dm.class_names
    best = sorted(p.name for p in (stack.run / "checkpoints").glob("best*.ckpt"))
    assert best == ["best.ckpt"]  # one stable name, replaced on each improvement


def test_stack_adds_no_forward_pass(stack, tmp_path):
    bare = fit_counted(tmp_path / "bare", stack.dm, [])
    full, plain = stack.probe.at, bare.probe.at
    train_batches = len(stack.dm.train_dataset) // stack.dm.batch_size  # drop_last
    val_batches = -(-len(stack.dm.val_dataset) // stack.dm.batch_size)
    # the epochs (training + validation): one forward per batch, with or without the thirteen callbacks
    assert full["train_end"] - full["train_start"] == plain["train_end"] - plain["train_start"] == EPOCHS * (train_batches + val_batches)
    assert full["sanity_end"] - full["sanity_start"] == plain["sanity_end"] - plain["sanity_start"] == SANITY_STEPS
    # and none anywhere else in the fit: ModelInfoCallback counts FLOPs on a meta-device copy, the ONNX export
    # traces and verifies a model reloaded from the checkpoint
    assert stack.total == bare.total == full["train_end"] == plain["train_end"]
    assert full["fit_start"] == plain["fit_start"] == 0


@pytest.mark.slow
def test_stack_under_ddp(tmp_path, default_config):
    "Two CPU processes (ddp_spawn, gloo): the test matrix counts both ranks' samples and rank zero alone writes."
    dm = tiny_datamodule(tiny_dataset(tmp_path / "data", per_class=4))
    dm.setup()
    run = tmp_path / "run"
    callbacks = default_callbacks(default_config, run)
    model = tiny_module(dm.num_classes, class_names=dm.class_names, preprocessing=dm.preprocessing.to_dict())
    trainer = tiny_trainer(run, strategy="ddp_spawn", accelerator="cpu", devices=2, max_epochs=1, limit_train_batches=None,
                           limit_val_batches=None, limit_test_batches=None, enable_checkpointing=True,
                           enable_progress_bar=True, logger=CSVLogger(run, name="logs", version=""),
                           callbacks=list(callbacks.values()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, datamodule=dm)
        trainer.test(model, datamodule=dm, verbose=False)
    saved = json.loads((run / "confusion_matrix.json").read_text())
    assert np.array(saved["counts"]).sum() == len(dm.test_dataset)  # 2 x 6 images: one rank alone would count 6
    assert [int(r["epoch"]) for r in read_csv(run / "training_history.csv")] == [0]
    for name in ("confusion_matrix.png", "sample_predictions.png", "top_losses.png"):
        assert (run / "epochs" / "epoch_000" / name).is_file() and (run / name).is_file()
    assert not list(run.rglob("*.tmp"))  # no leftovers of concurrent writers
