"""EMACallback across an interruption: a fit that crashes after some epochs and is resumed from last.ckpt ends with
the same EMA weights, raw weights and update count as the same fit run without a crash (deterministic, CPU). The fits are marked slow (about a minute on 2 cores): `pytest -m slow tests/test_callbacks_ema.py`.

Real pieces: ImageClassifier (a tiny timm ResNet with BatchNorm, AdamW, warm-up + cosine schedule) on sample images
through ImageClassificationDataModule. Determinism across the restart: the weighted sampler is seeded per epoch
(`sampler_seed`), and the train transform has no randomness left (full-image crop, no flip, no jitter)."""
from __future__ import annotations

import warnings

import pytest
import torch
import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint

from classifier_training.callbacks.ema import EMACallback
from classifier_training.checkpoints import ema_update_count, load_ema_weights, load_raw_weights
from classifier_training.core import ClassifierTrainingError
from classifier_training.data.datamodule import ImageClassificationDataModule
from classifier_training.data.sample import write_sample_subset
from classifier_training.model import ImageClassifier

EPOCHS, CRASH_AT_EPOCH = 4, 2
STEPS_PER_EPOCH = 3  # 3 classes x 4 train images, 12 draws per epoch, batches of 4


class Crash(pl.Callback):
    "Test double: the process dies when this epoch starts (after the previous epoch's last.ckpt was written)."
    def __init__(self, epoch: int): self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch: raise RuntimeError("simulated crash")


def _datamodule(data, cache) -> ImageClassificationDataModule:
    return ImageClassificationDataModule(data, image_size=32, batch_size=4, backbone="test_resnet", sampler="auto",
                                         num_workers=0,  # with workers a resumed epoch's weighted draws
                                         # come before Lightning sets the sampler's epoch: not bit-exact yet
                                         sampler_seed=0, cache_dir=cache, verbose=False,
                                         train_transform={"hflip": False, "color_jitter": 0.0, "scale": (1.0, 1.0),
                                                          "ratio": (1.0, 1.0)})


def _fit(root, data, crash_at: int | None = None, ckpt_path=None):
    "One fit of EPOCHS epochs in `root`; returns (trainer, model)."
    pl.seed_everything(0, verbose=False)
    dm = _datamodule(data, root / "cache")
    dm.setup()
    model = ImageClassifier(dm.num_classes, dm.class_names, backbone="test_resnet",
                            preprocessing=dm.preprocessing.to_dict(), lr=5e-3, warmup_epochs=1)
    checkpoints = [ModelCheckpoint(dirpath=root / "checkpoints", monitor="val/acc_top1", mode="max",
                                   filename="best-{epoch:03d}", save_on_train_epoch_end=True),
                   ModelCheckpoint(dirpath=root / "checkpoints", filename="last", enable_version_counter=False,
                                   save_on_train_epoch_end=True)]
    extra = [Crash(crash_at)] if crash_at is not None else []
    trainer = pl.Trainer(max_epochs=EPOCHS, default_root_dir=root, deterministic=True, accelerator="cpu", devices=1,
                         callbacks=[EMACallback(decay=0.9, warmup_steps=5, update_every_n_steps=1), *extra, *checkpoints],
                         logger=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return trainer, model


def _assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a: assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    data = write_sample_subset(tmp_path_factory.mktemp("data") / "d", per_class=4, classes=("Bag", "Coat", "Sandal"))
    whole, parts = tmp_path_factory.mktemp("whole"), tmp_path_factory.mktemp("parts")
    trainer, model = _fit(whole, data)
    with pytest.raises(RuntimeError, match="simulated crash"): _fit(parts, data, crash_at=CRASH_AT_EPOCH)
    last = parts / "checkpoints" / "last.ckpt"
    stopped = {"ema": load_ema_weights(last), "count": ema_update_count(last),
               "epoch": torch.load(last, weights_only=True)["epoch"]}
    _fit(parts, data, ckpt_path=last)
    return {"whole": whole, "parts": parts, "trainer": trainer, "model": model, "stopped": stopped, "data": data}


@pytest.mark.slow
def test_resumed_fit_ends_with_the_same_ema_raw_weights_and_count(runs):
    whole, parts = runs["whole"] / "checkpoints" / "last.ckpt", runs["parts"] / "checkpoints" / "last.ckpt"
    # the crash really happened in the middle: last.ckpt was from the epoch before it, and the EMA moved on after
    assert runs["stopped"]["epoch"] == CRASH_AT_EPOCH - 1
    assert runs["stopped"]["count"] == CRASH_AT_EPOCH * STEPS_PER_EPOCH
    assert any(not torch.equal(v, load_ema_weights(parts)[k]) for k, v in runs["stopped"]["ema"].items())
    assert ema_update_count(whole) == ema_update_count(parts) == EPOCHS * STEPS_PER_EPOCH
    _assert_same(load_ema_weights(whole), load_ema_weights(parts))
    _assert_same(load_raw_weights(whole), load_raw_weights(parts))


@pytest.mark.slow
def test_ema_differs_from_raw_and_is_in_the_module_after_fit(runs):
    ckpt = runs["whole"] / "checkpoints" / "last.ckpt"
    ema, raw = load_ema_weights(ckpt), load_raw_weights(ckpt)
    assert any(not torch.equal(ema[k], raw[k]) for k in ema if ema[k].is_floating_point())
    _assert_same(runs["model"].state_dict(), ema)  # fit ended with the EMA weights in the module


@pytest.mark.slow
def test_test_with_best_checkpoint_uses_its_ema_weights_without_warnings(runs):
    trainer, model = runs["trainer"], runs["model"]
    best = trainer.checkpoint_callback.best_model_path
    dm = _datamodule(runs["data"], runs["whole"] / "cache")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.test(model, datamodule=dm, ckpt_path=best, verbose=False)
    assert [str(w.message) for w in caught if "WeightAveraging" in str(w.message)] == []
    _assert_same(model.state_dict(), load_ema_weights(best))


def test_helpers_refuse_a_checkpoint_without_ema(tmp_path):
    torch.save({"state_dict": torch.nn.Linear(2, 2).state_dict()}, tmp_path / "plain.ckpt")
    for load in (load_ema_weights, load_raw_weights, ema_update_count):
        with pytest.raises(ClassifierTrainingError, match="holds no EMA weights"): load(tmp_path / "plain.ckpt")
    with pytest.raises(ClassifierTrainingError, match="not found"): load_ema_weights(tmp_path / "missing.ckpt")
