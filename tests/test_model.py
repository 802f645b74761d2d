"""ImageClassifier: losses, metrics, top-k clipping, class weights, parameter groups, schedule, freezing, outputs
for callbacks, checkpoint round trip. Real sample images and real (tiny) timm backbones throughout."""
import math
import random
import warnings
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint

from classifier_training.callbacks.ema import EMACallback
from classifier_training.core import ConfigError
from classifier_training.model import (RNG_STATES_KEY, ImageClassifier, build_backbone, capture_rng_states, focal_loss,
                                       restore_rng_states, warmup_cosine_factor, weight_decay_param_groups)
from classifier_training.test_utils import (TINY_CLASSES, ForwardCounter, tiny_datamodule, tiny_dataset, tiny_module,
                                            tiny_trainer)

EVAL_KEYS = ["loss", "acc_top1", "acc_top5", "f1_macro"] + [f"recall/{c}" for c in TINY_CLASSES]


@pytest.fixture(scope="module")
def data(tiny_data) -> Path:
    "The session's tiny dataset (tests/conftest.py): TINY_CLASSES, 8 images per class and split."
    return tiny_data


@pytest.fixture()
def dm(data):
    dm = tiny_datamodule(data)
    dm.setup("fit")
    return dm


def module_for(dm, **kwargs) -> ImageClassifier:
    return tiny_module(dm.num_classes, class_names=dm.class_names, preprocessing=dm.preprocessing.to_dict(), **kwargs)


class RecordLR(pl.Callback):
    def __init__(self): self.lrs = []
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


class GrabOutputs(pl.Callback):
    def __init__(self): self.val, self.test = [], []
    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.val.append((outputs, batch))
    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.test.append((outputs, batch))


# --- losses --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_focal_with_gamma_zero_is_cross_entropy(soft, weighted, smoothing):
    torch.manual_seed(0)
    logits = torch.randn(8, 5)
    targets = torch.softmax(torch.randn(8, 5), -1) if soft else torch.randint(0, 5, (8,))
    weight = torch.tensor([1.0, 2.0, 0.5, 1.5, 3.0]) if weighted else None
    got = focal_loss(logits, targets, gamma=0, weight=weight, label_smoothing=smoothing)
    want = F.cross_entropy(logits, targets, weight=weight, label_smoothing=smoothing)
    torch.testing.assert_close(got, want)


def test_focal_matches_its_formula_and_focuses_on_hard_samples():
    logits, target = torch.tensor([[2.0, 0.0, -1.0], [0.2, 0.0, 0.1]]), torch.tensor([0, 0])
    p = torch.softmax(logits, -1)[:, 0]
    torch.testing.assert_close(focal_loss(logits, target, gamma=2.0), (-(1 - p) ** 2 * p.log()).mean())
    per_sample = [focal_loss(logits[i:i + 1], target[i:i + 1], 2.0) / F.cross_entropy(logits[i:i + 1], target[i:i + 1])
                  for i in range(2)]
    assert per_sample[0] < per_sample[1] < 1  # the easy sample (p=0.84) is scaled down far more


def test_module_criterion_selects_loss_and_class_weights(dm):
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 3), torch.tensor([0, 1, 2, 2, 1, 0])
    ce = module_for(dm)
    assert ce.class_weights is None
    torch.testing.assert_close(ce.criterion(logits, labels), F.cross_entropy(logits, labels, label_smoothing=0.1))
    w = [0.5, 1.0, 2.0]
    weighted = module_for(dm, class_weights=w)
    torch.testing.assert_close(weighted.class_weights, torch.tensor(w))
    torch.testing.assert_close(weighted.criterion(logits, labels),
                               F.cross_entropy(logits, labels, weight=torch.tensor(w), label_smoothing=0.1))
    assert not torch.allclose(weighted.criterion(logits, labels), ce.criterion(logits, labels))
    focal = module_for(dm, loss="focal", focal_gamma=1.5, class_weights=w, label_smoothing=0.0)
    torch.testing.assert_close(focal.criterion(logits, labels), focal_loss(logits, labels, 1.5, torch.tensor(w)))
    assert "class_weights" not in weighted.state_dict()  # rebuilt from the hyperparameters, not stored twice


def test_class_weights_reach_the_loss_from_the_datamodule(data):
    dm = tiny_datamodule(data, class_weights="auto")
    dm.setup("fit")
    weights = dm.class_weights()
    model = module_for(dm, class_weights=[float(w) for w in weights])
    torch.testing.assert_close(model.class_weights, weights.float())
    off = tiny_datamodule(data)
    off.setup("fit")
    assert off.class_weights() is None


@pytest.mark.parametrize("mixup, cutmix", [(0.4, 0.0), (0.0, 1.0), (0.4, 1.0)])
def test_mixup_cutmix_train_on_soft_targets(dm, tmp_path, mixup, cutmix):
    model = module_for(dm, mixup_alpha=mixup, cutmix_alpha=cutmix)
    seen = []
    original = model.criterion
    model.criterion = lambda logits, targets: seen.append(targets) or original(logits, targets)
    tiny_trainer(tmp_path, limit_val_batches=0).fit(model, datamodule=dm)
    assert len(seen) == 2 and all(t.ndim == 2 for t in seen)  # every training batch was mixed
    torch.testing.assert_close(seen[0].sum(-1), torch.ones(len(seen[0])))
    assert math.isfinite(model.trainer.callback_metrics["train/loss"].item())
    assert 0 <= model.trainer.callback_metrics["train/acc_top1"].item() <= 1


def test_no_mixing_by_default(dm):
    assert module_for(dm).mixing is None


# --- metrics -------------------------------------------------------------------------------------------------
def test_top_k_is_clipped_to_the_class_count():
    assert tiny_module(3).val_metrics["acc_top5"].top_k == 3
    assert tiny_module(10).val_metrics["acc_top5"].top_k == 5
    assert tiny_module(2).test_metrics["acc_top5"].top_k == 2


def test_metric_keys_are_epoch_level_paths(dm, tmp_path):
    model = module_for(dm)
    trainer = tiny_trainer(tmp_path, max_epochs=2)
    trainer.fit(model, datamodule=dm)
    fit_keys = set(trainer.callback_metrics)
    assert trainer.progress_bar_metrics.keys() >= {"train/loss"}
    trainer.test(model, datamodule=dm, verbose=False)
    test_keys = set(trainer.callback_metrics)
    assert fit_keys == {"train/loss", "train/acc_top1"} | {f"val/{k}" for k in EVAL_KEYS}  # no *_step / *_epoch twins
    assert test_keys == {f"test/{k}" for k in EVAL_KEYS}
    assert trainer.callback_metrics["test/acc_top5"].item() == 1.0  # top-3 of 3 classes


def test_eval_metrics_are_exact_epoch_values_not_batch_averages(data, tmp_path):
    "Metrics over unequal batches (5 + 5 + 5 + 5 + 4) equal the values computed over all outputs at once."
    dm = tiny_datamodule(data, batch_size=5)
    dm.setup("fit")
    model = module_for(dm)
    grab = GrabOutputs()
    trainer = tiny_trainer(tmp_path, callbacks=[grab], limit_test_batches=None)
    trainer.test(model, dataloaders=dm.val_dataloader(), verbose=False)
    preds = torch.cat([o["preds"] for o, _ in grab.test])
    targets = torch.cat([o["targets"] for o, _ in grab.test])
    assert len(targets) == len(dm.val_dataset) == 24
    m = trainer.callback_metrics
    assert m["test/acc_top1"].item() == pytest.approx((preds == targets).float().mean().item())
    for i, name in enumerate(dm.class_names):
        assert m[f"test/recall/{name}"].item() == pytest.approx((preds[targets == i] == i).float().mean().item())


# --- outputs for callbacks -----------------------------------------------------------------------------------
def test_eval_steps_return_detached_outputs_and_callbacks_add_no_forward_pass(dm, tmp_path):
    model = module_for(dm)
    grab = GrabOutputs()
    trainer = tiny_trainer(tmp_path, callbacks=[grab])
    with ForwardCounter(model.backbone) as counter:
        trainer.fit(model, datamodule=dm)
        trainer.test(model, datamodule=dm, verbose=False)
    assert counter.calls == 2 + 2 + 2  # train, val, test batches: nothing else ran the network
    for outputs, batch in grab.val + grab.test:
        assert set(outputs) == {"loss", "logits", "preds", "probs", "targets", "indices"}
        assert not any(v.requires_grad for v in outputs.values())
        assert torch.equal(outputs["targets"], batch["labels"]) and torch.equal(outputs["indices"], batch["indices"])
        assert torch.equal(outputs["preds"], outputs["logits"].argmax(-1))
        torch.testing.assert_close(outputs["probs"].sum(-1), torch.ones(len(batch["labels"])))


def test_predict_returns_probabilities(dm, tmp_path):
    model = module_for(dm)
    out = tiny_trainer(tmp_path).predict(model, dataloaders=dm.val_dataloader())
    assert len(out) == 2 and out[0].shape == (4, 3)
    torch.testing.assert_close(out[0].sum(-1), torch.ones(4))
    images = next(iter(dm.val_dataloader()))["images"]
    torch.testing.assert_close(model.predict_step(images), model.predict_step((images, None)))


# --- optimisation ---------------------------------------------------------------------------------------------
def test_no_weight_decay_on_norms_and_biases(dm, tmp_path):
    model = module_for(dm, weight_decay=0.05)
    trainer = tiny_trainer(tmp_path)
    trainer.fit(model, datamodule=dm)
    opt = trainer.optimizers[0]
    assert isinstance(opt, torch.optim.AdamW)
    names = {id(p): n for n, p in model.named_parameters()}
    by_decay = {g["weight_decay"]: {names[id(p)] for p in g["params"]} for g in opt.param_groups}
    assert set(by_decay) == {0.05, 0.0}
    assert all(model.get_parameter(n).ndim > 1 for n in by_decay[0.05])
    assert all(model.get_parameter(n).ndim == 1 for n in by_decay[0.0])
    assert {"backbone.fc.bias", "backbone.bn1.weight", "backbone.bn1.bias"} <= by_decay[0.0]
    assert {"backbone.fc.weight", "backbone.conv1.0.weight"} <= by_decay[0.05]
    assert len(by_decay[0.0]) + len(by_decay[0.05]) == len(list(model.parameters()))


def test_param_groups_keep_frozen_parameters_and_honour_patterns():
    net = build_backbone("test_vit", 3)
    for p in net.parameters(): p.requires_grad_(False)
    groups = weight_decay_param_groups(net, 0.1, no_decay=["pos_embed", "cls_token"])
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))
    assert not any(p is net.pos_embed or p is net.cls_token for p in groups[0]["params"])


def test_sgd_is_nesterov(dm, tmp_path):
    model = module_for(dm, optimizer="sgd", momentum=0.8)
    trainer = tiny_trainer(tmp_path)
    trainer.fit(model, datamodule=dm)
    opt = trainer.optimizers[0]
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.8


def test_schedule_factor_shape():
    f = [warmup_cosine_factor(s, 5, 50, 0.1) for s in range(51)]
    assert f[0] == pytest.approx(0.2) and f[4] == 1.0 == f[5]
    assert all(a < b for a, b in zip(f[:5], f[1:5]))
    assert all(a > b for a, b in zip(f[5:50], f[6:51]))
    assert f[50] == pytest.approx(0.1) and min(f) == pytest.approx(0.1)
    assert warmup_cosine_factor(500, 5, 50, 0.1) == pytest.approx(0.1)  # stays at the floor past the end


def test_schedule_is_stepped_per_optimizer_step_from_trainer_lengths(dm, tmp_path):
    "24 train images / batch 4 = 6 batches, accumulate 2 -> 3 steps per epoch; warm-up 1 epoch = 3 steps; 3 epochs = 9."
    model = module_for(dm, lr=0.1, warmup_epochs=1, min_lr_ratio=0.0)
    rec = RecordLR()
    trainer = tiny_trainer(tmp_path, max_epochs=3, limit_train_batches=None, limit_val_batches=0,
                           accumulate_grad_batches=2, callbacks=[rec])
    trainer.fit(model, datamodule=dm)
    per_step = rec.lrs[::2]  # the LR in force at each optimiser step
    expected = [0.1 * warmup_cosine_factor(s, 3, 9, 0.0) for s in range(9)]
    assert per_step == pytest.approx(expected)
    assert per_step[:3] == pytest.approx([0.1 / 3, 0.2 / 3, 0.1]) and per_step[3] == pytest.approx(0.1)
    assert trainer.lr_scheduler_configs[0].interval == "step"


def test_infinite_run_has_no_schedule(dm, tmp_path):
    with pytest.raises(ConfigError, match="max_epochs"):
        tiny_trainer(tmp_path, max_epochs=-1).fit(module_for(dm), datamodule=dm)


# --- freezing ------------------------------------------------------------------------------------------------
def test_freeze_backbone_trains_only_the_head_first(dm, tmp_path):
    model = module_for(dm, freeze_backbone_epochs=1)
    snapshot = lambda: {k: v.clone() for k, v in model.backbone.state_dict().items()}
    start = snapshot()

    class Check(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == 0: self.after_first = snapshot()

    check = Check()
    tiny_trainer(tmp_path, max_epochs=2, callbacks=[check], limit_val_batches=0).fit(model, datamodule=dm)
    first, end = check.after_first, snapshot()
    changed = lambda a, b: {k for k in a if not torch.equal(a[k], b[k])}
    assert changed(start, first) == {"fc.weight", "fc.bias"}  # body weights and BN statistics untouched
    assert {"conv1.0.weight", "bn1.running_mean"} <= changed(first, end)  # then everything trains
    assert all(p.requires_grad for p in model.parameters())


# --- build_backbone ------------------------------------------------------------------------------------------
def test_unknown_backbone_suggests_close_names():
    with pytest.raises(ConfigError, match="efficientnet_b0"):
        ImageClassifier(3, backbone="efficientnet-b0")


def test_pretrained_from_a_local_file_keeps_the_body_and_resizes_the_head(tmp_path):
    source = build_backbone("test_resnet", 10)
    torch.save(source.state_dict(), tmp_path / "w.pth")
    model = tiny_module(3, pretrained=str(tmp_path / "w.pth"))
    assert torch.equal(model.backbone.conv1[0].weight, source.conv1[0].weight)
    assert model.backbone.get_classifier().out_features == 3


def test_head_is_sized_from_the_data(tmp_path):
    data = tiny_dataset(tmp_path / "five", per_class=2, classes=("Bag", "Coat", "Dress", "Sandal", "Shirt"))
    dm = tiny_datamodule(data)
    dm.setup("fit")
    model = module_for(dm)
    assert model.backbone.get_classifier().out_features == 5 and model.class_names == dm.class_names


def test_channels_last_gives_the_same_logits(dm):
    torch.manual_seed(0)
    a = module_for(dm).eval()
    b = module_for(dm, channels_last=True).eval()
    b.load_state_dict(a.state_dict())
    x = next(iter(dm.val_dataloader()))["images"]
    torch.testing.assert_close(b(x), a(x), rtol=1e-4, atol=1e-5)
    assert b.backbone.conv1[0].weight.is_contiguous(memory_format=torch.channels_last)


# --- checkpoints -----------------------------------------------------------------------------------------------
def _plain(obj) -> bool:
    if isinstance(obj, dict): return all(isinstance(k, str) and _plain(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple)): return all(_plain(v) for v in obj)
    return obj is None or isinstance(obj, (str, int, float, bool))


def test_checkpoint_round_trip_with_weights_only(dm, tmp_path):
    model = module_for(dm, class_weights=[1.0, 2.0, 0.5], loss="focal")
    trainer = tiny_trainer(tmp_path, max_epochs=2)
    trainer.fit(model, datamodule=dm)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    raw = torch.load(path, weights_only=True, map_location="cpu")
    assert _plain(raw["hyper_parameters"]), raw["hyper_parameters"]
    restored = ImageClassifier.load_from_checkpoint(path, weights_only=True, map_location="cpu").eval()
    model.eval()
    x = next(iter(dm.val_dataloader()))["images"]
    torch.testing.assert_close(restored(x), model(x))
    assert restored.class_names == dm.class_names and restored.preprocessing == dm.preprocessing
    torch.testing.assert_close(restored.class_weights, torch.tensor([1.0, 2.0, 0.5]))
    assert restored.hparams.loss == "focal" and restored.hparams.backbone == "test_resnet"


def test_resume_continues_the_schedule(dm, tmp_path):
    "Stop after epoch 1 of 2, resume from the checkpoint: epoch 2 sees the learning rates of an uninterrupted run."
    class StopAfterFirstEpoch(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module): trainer.should_stop = True

    trainer = tiny_trainer(tmp_path, max_epochs=2, callbacks=[StopAfterFirstEpoch()], limit_val_batches=0)
    trainer.fit(module_for(dm, lr=0.1, warmup_epochs=1), datamodule=dm)
    assert trainer.current_epoch == 1
    trainer.save_checkpoint(tmp_path / "e1.ckpt")
    rec = RecordLR()
    resumed = tiny_trainer(tmp_path, max_epochs=2, callbacks=[rec], limit_val_batches=0)
    resumed.fit(module_for(dm, lr=0.1, warmup_epochs=1), datamodule=dm, ckpt_path=tmp_path / "e1.ckpt")
    assert rec.lrs == pytest.approx([0.1 * warmup_cosine_factor(s, 2, 4, 0.01) for s in (2, 3)])


# --- exact resume: the random state travels with the checkpoint ----------------------------------------------
def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    torch.save({RNG_STATES_KEY: capture_rng_states()}, tmp_path / "rng.ckpt")
    expected = (random.random(), np.random.rand(3).tolist(), torch.rand(3))
    random.seed(0); np.random.seed(0); torch.manual_seed(0)
    restore_rng_states(torch.load(tmp_path / "rng.ckpt", weights_only=True)[RNG_STATES_KEY])
    assert (random.random(), np.random.rand(3).tolist()) == expected[:2]
    assert torch.equal(torch.rand(3), expected[2])


def _fit_with_checkpoints(data, run: Path, num_workers: int, ckpt_path=None, batch_augment=False) -> dict:
    """Two epochs with the datamodule's default random augmentation (random resized crop, flip), per image in
    the loader or whole batches in the training process (`batch_augment`), a shuffled loader and EMA; a
    checkpoint after each epoch. Returns the last one. `ckpt_path`: resume from it."""
    pl.seed_everything(5, workers=True, verbose=False)
    dm = tiny_datamodule(data, num_workers=num_workers, batch_augment=batch_augment)
    dm.setup("fit")
    model = module_for(dm, warmup_epochs=0.5)
    trainer = tiny_trainer(run, max_epochs=2, limit_train_batches=None, limit_val_batches=None, deterministic=True,
                           enable_checkpointing=True, callbacks=[EMACallback(decay=0.9, warmup_steps=3),
                           ModelCheckpoint(dirpath=run, filename="{epoch}", save_top_k=-1)])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*dirpath has changed.*")
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
    return torch.load(run / "epoch=1.ckpt", map_location="cpu", weights_only=True)


def _same_weights(a: dict, b: dict) -> bool:
    "EMA weights (state_dict), raw weights, EMA update count and optimizer state all bit-identical."
    same = all(torch.equal(a[k][n], b[k][n]) for k in ("state_dict", "current_model_state") for n in a[k])
    moments = [(x[m], y[m]) for x, y in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values())
               for m in ("exp_avg", "exp_avg_sq")]
    return (same and all(torch.equal(x, y) for x, y in moments)
            and int(a["averaging_state"]["n_averaged"]) == int(b["averaging_state"]["n_averaged"]))


@pytest.mark.parametrize("num_workers, batch_augment", [(0, False), (1, False), (1, True)])
def test_resume_with_random_augmentation_is_bit_exact(data, tmp_path, num_workers, batch_augment):
    "1 epoch, then resume to 2 == 2 epochs straight: same EMA and raw weights, optimizer state and EMA count."
    straight = _fit_with_checkpoints(data, tmp_path / "straight", num_workers, batch_augment=batch_augment)
    assert RNG_STATES_KEY in straight
    resumed = _fit_with_checkpoints(data, tmp_path / "resumed", num_workers, ckpt_path=tmp_path / "straight" / "epoch=0.ckpt",
                                    batch_augment=batch_augment)
    assert resumed["global_step"] == straight["global_step"] == 12
    assert _same_weights(resumed, straight)


def test_checkpoint_without_random_state_resumes_with_a_warning(data, tmp_path):
    "An old checkpoint (no random state) still resumes; it warns, and the run is not bit-identical (the test can fail)."
    straight = _fit_with_checkpoints(data, tmp_path / "straight", 0)
    old = torch.load(tmp_path / "straight" / "epoch=0.ckpt", map_location="cpu", weights_only=True)
    del old[RNG_STATES_KEY]
    torch.save(old, tmp_path / "old.ckpt")
    with pytest.warns(UserWarning, match="holds no random state.*not bit-identical"):
        resumed = _fit_with_checkpoints(data, tmp_path / "old", 0, ckpt_path=tmp_path / "old.ckpt")
    assert resumed["global_step"] == straight["global_step"]
    assert not _same_weights(resumed, straight)


def test_loading_a_checkpoint_outside_fit_leaves_the_random_state_alone(dm, tmp_path):
    trainer = tiny_trainer(tmp_path)
    trainer.fit(module_for(dm), datamodule=dm)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    random.seed(123)
    before = random.getstate()  # model init draws from torch only, so Python's state shows any restore
    model = ImageClassifier.load_from_checkpoint(tmp_path / "m.ckpt", weights_only=True)
    tiny_trainer(tmp_path).validate(model, datamodule=dm, ckpt_path=tmp_path / "m.ckpt", weights_only=True, verbose=False)
    assert random.getstate() == before


@pytest.mark.slow
def test_compile_gives_the_same_logits(dm, tmp_path):
    model = module_for(dm, compile=True)
    trainer = tiny_trainer(tmp_path)
    trainer.fit(model, datamodule=dm)  # trains through the compiled backbone
    eager = module_for(dm).eval()
    eager.load_state_dict(model.state_dict())
    x = next(iter(dm.val_dataloader()))["images"]
    model.eval().setup("predict")
    assert "_compiled_backbone" in model.__dict__
    torch.testing.assert_close(model(x), eager(x), rtol=1e-4, atol=1e-4)
    model.teardown("predict")
    assert "_compiled_backbone" not in model.__dict__
