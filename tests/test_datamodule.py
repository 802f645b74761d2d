"""Transforms, the tracking sampler, sampler policies, class weights and the datamodule, on real sample images."""
import json
import os
from collections import Counter
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from PIL import Image

import classifier_training.data.datamodule as datamodule_module
from classifier_training.core import ConfigError, PreprocessingConfig
from classifier_training.data.datamodule import (ImageClassificationDataModule, TrackingWeightedRandomSampler,
                                                 collate_classification)
from classifier_training.data.sample import write_sample_subset
from classifier_training.data.transforms import (build_eval_transform, build_train_transform, denormalize,
                                                 preprocessing_for_backbone)

CLASSES = ("Trouser", "Bag", "Sneaker")  # natural order: Bag, Sneaker, Trouser


@pytest.fixture(scope="module")
def imbalanced(tmp_path_factory) -> Path:
    "Real sample images, 8 per class and split; train Bag cut to 2 images (Bag 2, Sneaker 8, Trouser 8)."
    root = write_sample_subset(tmp_path_factory.mktemp("data") / "clothes", per_class=8, classes=CLASSES)
    for f in sorted((root / "train" / "Bag").glob("*.png"))[2:]: f.unlink()
    return root


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def make_dm(root, cache_dir, **kwargs) -> ImageClassificationDataModule:
    dm = ImageClassificationDataModule(root, image_size=32, batch_size=6, cache_dir=cache_dir, verbose=False, **kwargs)
    dm.setup()
    return dm


def reference_eval(img: Image.Image, pre: PreprocessingConfig) -> np.ndarray:
    "Pillow + numpy by hand: resize the shorter side (truncating the longer), centre crop, scale, normalise."
    img = img.convert("RGB")
    w, h = img.size
    r, s = pre.resize_size, pre.image_size
    new = (r, int(r * h / w)) if w <= h else (int(r * w / h), r)
    if new != (w, h): img = img.resize(new, resample={"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}[pre.interpolation])
    top, left = int(round((new[1] - s) / 2)), int(round((new[0] - s) / 2))
    x = np.asarray(img.crop((left, top, left + s, top + s)), np.float32) * np.float32(1 / 255)
    return ((x - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)).transpose(2, 0, 1)


# --- transforms ---

@pytest.mark.parametrize("size,crop_pct,interpolation", [(32, 0.95, "bicubic"), (224, 0.875, "bilinear"), (57, 1.0, "nearest")])
def test_eval_transform_equals_hand_written_pillow(size, crop_pct, interpolation):
    from sklearn.datasets import load_sample_images
    pre = preprocessing_for_backbone("resnet18", size, crop_pct=crop_pct, interpolation=interpolation)
    photo = Image.fromarray(load_sample_images().images[0])  # 640x427 real photo
    for img in (photo, photo.transpose(Image.Transpose.TRANSPOSE), photo.crop((0, 0, 301, 299))):
        ours = build_eval_transform(pre)(img)
        assert ours.shape == (3, size, size)
        np.testing.assert_allclose(ours.numpy(), reference_eval(img, pre), atol=1e-6, rtol=0)


def test_eval_transform_on_sample_png(imbalanced):
    pre = preprocessing_for_backbone("resnet18", 32)
    img = Image.open(next((imbalanced / "val" / "Bag").glob("*.png")))
    np.testing.assert_allclose(build_eval_transform(pre)(img).numpy(), reference_eval(img, pre), atol=1e-6, rtol=0)


@pytest.mark.parametrize("auto_augment", [None, "randaugment", "trivialaugment"])
def test_grayscale_input_gives_three_channels(imbalanced, auto_augment):
    pre = preprocessing_for_backbone("resnet18", 32)
    gray = Image.open(next((imbalanced / "train" / "Sneaker").glob("*.png")))
    assert gray.mode == "L"
    x = build_train_transform(pre, auto_augment=auto_augment, random_erasing=0.5)(gray)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    x = build_eval_transform(pre)(gray)
    assert x.shape == (3, 32, 32)
    pixels = denormalize(x, pre)  # back to 0..1: a grey image has three equal channels
    torch.testing.assert_close(pixels[0], pixels[1], atol=1e-6, rtol=0)
    torch.testing.assert_close(pixels[1], pixels[2], atol=1e-6, rtol=0)


def test_preprocessing_comes_from_timm_and_unknown_backbone_is_named():
    pre = preprocessing_for_backbone("vit_tiny_patch16_224")
    assert (pre.image_size, pre.mean, pre.interpolation) == (224, (0.5, 0.5, 0.5), "bicubic")
    with pytest.raises(ConfigError, match="resnet18"):
        preprocessing_for_backbone("resnett18")


# --- collate and sampler ---

def test_collate_gives_classification_batch(imbalanced, cache_dir):
    dm = make_dm(imbalanced, cache_dir)
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"images", "labels", "indices"}
    assert batch["images"].shape == (6, 3, 32, 32) and batch["images"].dtype == torch.float32
    assert batch["labels"].dtype == torch.long and batch["indices"].dtype == torch.long
    assert [dm.class_names[l] for l in batch["labels"]] == [dm.train_dataset.paths[i].parent.name for i in batch["indices"]]
    single = collate_classification([{"image": torch.zeros(3, 2, 2), "label": 1, "index": 5}])
    assert single["indices"].tolist() == [5] and single["labels"].tolist() == [1]


def test_tracking_sampler_records_each_epoch_and_is_reproducible():
    s = TrackingWeightedRandomSampler(torch.tensor([1.0, 0.0, 3.0]), 20, seed=5)
    s.set_epoch(0); e0 = list(s)
    assert s.drawn_indices == e0 and 1 not in e0
    s.set_epoch(1); e1 = list(s)
    assert s.drawn_indices == e1 and e1 != e0
    s.set_epoch(0); assert list(s) == e0


def test_tracking_sampler_under_distributed_wrapper():
    "Each rank's sampler records the whole draw; rank r consumes its share of shuffled positions; together: the whole draw."
    weights = torch.linspace(0.1, 1.0, 40)
    world = 3
    wrappers = [DistributedSamplerWrapper(TrackingWeightedRandomSampler(weights, 12, seed=7), num_replicas=world, rank=r,
                                          shuffle=True, seed=5) for r in range(world)]  # as Lightning builds it for training
    for epoch in (0, 1):
        for w in wrappers: w.set_epoch(epoch)
        consumed = [list(w) for w in wrappers]
        drawn = [w.dataset._sampler.drawn_indices for w in wrappers]
        assert drawn[0] == drawn[1] == drawn[2] and len(drawn[0]) == 12
        assert Counter(i for c in consumed for i in c) == Counter(drawn[0])
        positions = torch.randperm(12, generator=torch.Generator().manual_seed(5 + epoch)).tolist()
        for r in range(world): assert consumed[r] == [drawn[0][p] for p in positions[r::world]]


# --- sampler policies and class weights ---

def test_sampler_none_shuffles_and_targets_natural_shares(imbalanced, cache_dir):
    dm = make_dm(imbalanced, cache_dir)
    assert dm.sampler is None
    assert dm.sampler_target_distribution() == pytest.approx({"Bag": 2 / 18, "Sneaker": 8 / 18, "Trouser": 8 / 18})
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, torch.utils.data.RandomSampler)


def test_sampler_auto_balances_classes(imbalanced, cache_dir):
    dm = make_dm(imbalanced, cache_dir, sampler="auto", sampler_seed=0)
    assert isinstance(dm.sampler, TrackingWeightedRandomSampler)
    assert dm.train_dataloader().sampler is dm.sampler
    assert dm.sampler_target_distribution() == pytest.approx({c: 1 / 3 for c in ("Bag", "Sneaker", "Trouser")})
    bag = dm.class_to_idx["Bag"]
    expected = [1 / 2 if t == bag else 1 / 8 for t in dm.train_dataset.targets]
    assert dm.sampler.weights.tolist() == pytest.approx(expected)
    # many epochs of draws converge to the target (a real check of the weights, not of torch's RNG)
    counts = Counter()
    for epoch in range(200):
        dm.sampler.set_epoch(epoch)
        counts.update(dm.train_dataset.targets[i] for i in dm.sampler)
    assert counts[bag] / sum(counts.values()) == pytest.approx(1 / 3, abs=0.03)


def test_sampler_manual_weights_per_class_name(imbalanced, cache_dir):
    dm = make_dm(imbalanced, cache_dir, sampler="manual", sampler_weights={"Bag": 4.0, "Trouser": 0.5})
    # mass: Bag 2 x 4 = 8, Sneaker 8 x 1 = 8, Trouser 8 x 0.5 = 4
    assert dm.sampler_target_distribution() == pytest.approx({"Bag": 0.4, "Sneaker": 0.4, "Trouser": 0.2})
    assert dm.class_weights() is None


def test_sampler_manual_unknown_class_is_a_config_error(imbalanced, cache_dir):
    dm = ImageClassificationDataModule(imbalanced, image_size=32, sampler="manual", sampler_weights={"Bags": 2.0},
                                       cache_dir=cache_dir, verbose=False)
    with pytest.raises(ConfigError, match=r"unknown class\(es\) \['Bags'\]; valid class names: \['Bag', 'Sneaker', 'Trouser'\]"):
        dm.setup()
    with pytest.raises(ConfigError, match="sampler_weights"):
        make_dm(imbalanced, cache_dir, sampler="manual")
    with pytest.raises(ConfigError, match="data.sampler=manual"):
        ImageClassificationDataModule(imbalanced, sampler="auto", sampler_weights={"Bag": 2.0})


def test_class_weights_on_and_off(imbalanced, cache_dir):
    assert make_dm(imbalanced, cache_dir).class_weights() is None
    dm = make_dm(imbalanced, cache_dir, class_weights="auto")
    w = dm.class_weights()
    assert w.dtype == torch.float32 and w.shape == (3,)
    assert float(w.mean()) == pytest.approx(1.0)
    assert w.tolist() == pytest.approx([2.0, 0.5, 0.5])  # 1/2, 1/8, 1/8 scaled to mean 1
    assert dm.sampler is None  # separate switches
    with pytest.warns(UserWarning, match="over-correct"):
        ImageClassificationDataModule(imbalanced, sampler="auto", class_weights="auto", image_size=32)


# --- datamodule behaviour ---

def test_setup_is_idempotent_and_loaders_follow_the_rules(imbalanced, cache_dir, tmp_path):
    dm = make_dm(imbalanced, cache_dir, num_workers=2, batch_augment=False)
    train = dm.train_dataset
    dm.setup("fit"); dm.setup("validate")
    assert dm.train_dataset is train
    loader = dm.train_dataloader()
    # workers start afresh each epoch by default (their seeds then come from the checkpointed random state)
    assert loader.persistent_workers is False and loader.num_workers == 2
    assert loader.pin_memory == torch.cuda.is_available()
    assert make_dm(imbalanced, cache_dir).val_dataloader().persistent_workers is False
    assert make_dm(imbalanced, cache_dir, num_workers=2, persistent_workers=True,
                   batch_augment=False).train_dataloader().persistent_workers is True
    # cached images of one size: whole-batch augmentation in the training process, no worker to persist
    batched = make_dm(imbalanced, cache_dir, num_workers=2, persistent_workers=True).train_dataloader()
    assert (batched.num_workers, batched.persistent_workers) == (0, False)
    assert type(batched.dataset).__name__ == "BatchAugmentedDataset"
    mapping = json.loads(dm.write_labels_mapping(tmp_path / "labels_mapping.json").read_text())
    assert mapping["class_names"] == ["Bag", "Sneaker", "Trouser"] and mapping["preprocessing"]["image_size"] == 32
    assert dm.class_distribution()["train"] == {"Bag": 2, "Sneaker": 8, "Trouser": 8}


def test_check_runs_once_and_is_reused_by_other_processes(imbalanced, tmp_path, monkeypatch):
    first = ImageClassificationDataModule(imbalanced, image_size=32, cache_dir=tmp_path, verbose=False)
    first.prepare_data()  # what Lightning runs on one process per node
    monkeypatch.setattr(datamodule_module, "check_files", lambda *a, **k: pytest.fail("the check ran twice"))
    other = ImageClassificationDataModule(imbalanced, image_size=32, cache_dir=tmp_path, verbose=False)
    other.setup()  # another process: finds the stored result
    assert other.train_dataset.paths == make_dm(imbalanced, tmp_path).train_dataset.paths
    # the stored per-file results do not depend on the policies: another policy reuses them
    assert make_dm(imbalanced, tmp_path, check_policy="warn").report.policy == "warn"
    with pytest.raises(pytest.fail.Exception):
        make_dm(imbalanced, tmp_path, max_pixels=10**6)  # another pixel limit: another key


def test_cache_images_and_print_distribution(imbalanced, cache_dir, capsys):
    dm = make_dm(imbalanced, cache_dir, cache_images=True, sampler="auto")
    assert dm.train_dataset.cache_images and dm.val_dataset.cache_images
    dm.print_class_distribution()
    out = capsys.readouterr().out
    assert "sampler (auto)" in out and "33.3%" in out and "2 (11%)" in out


class _TinyModel(pl.LightningModule):
    "Records the dataset indices this process trained on and, at epoch end, writes them with its sampler's draws."
    def __init__(self, out_dir: str, num_classes: int):
        super().__init__()
        self.out_dir, self.fc, self.seen = Path(out_dir), torch.nn.Linear(3 * 32 * 32, num_classes), []

    def training_step(self, batch, i):
        self.seen += batch["indices"].tolist()
        return torch.nn.functional.cross_entropy(self.fc(batch["images"].flatten(1)), batch["labels"])

    def on_train_epoch_end(self):
        dm = self.trainer.datamodule
        self.out_dir.joinpath(f"rank{self.global_rank}.json").write_text(json.dumps(
            {"seen": self.seen, "drawn": dm.sampler.drawn_indices, "paths": [str(p) for p in dm.train_dataset.paths]}))

    def configure_optimizers(self): return torch.optim.SGD(self.parameters(), lr=0.01)


@pytest.mark.slow
def test_ddp_two_processes_share_one_draw(imbalanced, tmp_path):
    "Real DDP on CPU (2 processes, gloo): identical datasets, each rank's share of the weighted draw, no overlap."
    dm = ImageClassificationDataModule(imbalanced, image_size=32, batch_size=3, sampler="auto", sampler_seed=11,
                                       cache_dir=tmp_path / "cache", verbose=False)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=1, limit_val_batches=0,
                         num_sanity_val_steps=0, enable_progress_bar=False, enable_model_summary=False, logger=False,
                         enable_checkpointing=False, default_root_dir=tmp_path)
    trainer.fit(_TinyModel(str(tmp_path), 3), datamodule=dm)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    assert r0["paths"] == r1["paths"] and r0["drawn"] == r1["drawn"] and len(r0["drawn"]) == 18
    assert len(r0["seen"]) == len(r1["seen"]) == 9  # 18 draws: 9 each, 3 batches of 3
    assert Counter(r0["seen"] + r1["seen"]) == Counter(r0["drawn"])  # together: exactly the draw, nothing twice
    assert len(list((tmp_path / "cache" / "dataset_checks").glob("*.json"))) == 1


def test_a_planted_pickle_in_the_check_cache_is_never_loaded(imbalanced, tmp_path):
    "The check cache is JSON data: a pickle at the old .pkl path, or written over the JSON file, never runs."
    import pickle

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self): return (os.mkdir, (str(marker),))

    make_dm(imbalanced, tmp_path)
    [stored] = (tmp_path / "dataset_checks").glob("*.json")
    assert json.loads(stored.read_text())["format"] == datamodule_module.CHECK_CACHE_FORMAT
    stored.with_suffix(".pkl").write_bytes(pickle.dumps(Payload()))
    stored.write_bytes(pickle.dumps(Payload()))
    dm = make_dm(imbalanced, tmp_path)
    assert not marker.exists() and dm.report.bad_files == []
    assert json.loads(stored.read_text())["format"] == datamodule_module.CHECK_CACHE_FORMAT  # replaced
