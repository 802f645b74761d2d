"""Duplicates and leakage on real sample images: exact, re-encoded and resized copies across splits are
found, a mirrored image is not a copy, the sample's own originals form no group, and the three
policies (warn, drop_from_eval, fail) behave; thousands of copies are summarised, never listed."""
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from classifier_training.core import sha256_file
from classifier_training.data.check import (NEAR_DUPLICATE_RMS, DatasetCheckError, check_dataset,
                                            image_thumbnail)
from classifier_training.data.datamodule import ImageClassificationDataModule
from classifier_training.data.datasets import DatasetWarning, scan_dataset
from classifier_training.data.sample import write_sample_subset

CLASSES = ("Bag", "Coat", "Sandal", "Sneaker", "Trouser")


def _rms(a: Image.Image, b: Image.Image) -> float:
    ta, tb = (np.frombuffer(image_thumbnail(x.convert("RGB")), np.uint8).astype(float) for x in (a, b))
    return float(np.sqrt(((ta - tb) ** 2).mean()))


def _copies(src: Path):
    "The injected copies of one sample image: (name, split, writer); the flip is not a copy."
    return [("exact.png", "val", lambda im, d: shutil.copy(src, d)),
            ("same_pixels.bmp", "test", lambda im, d: im.save(d)),
            ("q70.jpg", "val", lambda im, d: im.convert("RGB").save(d, quality=70)),
            ("resized.png", "test",
             lambda im, d: im.resize((round(im.width * .8), round(im.height * .8)),
                                     Image.Resampling.BICUBIC).save(d))]


@pytest.fixture
def leaky(tmp_path) -> tuple[Path, dict[str, Path], list[Path]]:
    "Sample images (20 per class and split) plus copies of 3 train images per class in val/test."
    root = write_sample_subset(tmp_path / "data", per_class=20, classes=CLASSES)
    copies, flips = {}, []
    for c in CLASSES:
        picked = 0
        for src in sorted((root / "train" / c).glob("*.png")):
            im = Image.open(src); im.load()
            flipped = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            if _rms(im, flipped) < 4 * NEAR_DUPLICATE_RMS: continue  # symmetric: its flip IS it
            for name, split, write in _copies(src):
                dst = root / split / c / f"{src.stem}_{name}"
                write(im, dst); copies[f"{split}/{c}/{dst.name}"] = src
            flip = root / "val" / c / f"{src.stem}_flipped.png"
            flipped.save(flip); flips.append(flip)
            picked += 1
            if picked == 3: break
    return root, copies, flips


def _check(root, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetWarning)
        return check_dataset(scan_dataset(root, verbose=False), num_workers=0, verbose=False, **kw)


def test_every_copy_is_found_and_nothing_else(leaky):
    root, copies, flips = leaky
    report = _check(root)
    grouped = {f["path"]: g for g in report.duplicate_groups for f in g["files"]}
    for copy, src in copies.items():  # each copy sits in a cross-split group with its original
        g = grouped[copy]
        assert g["cross_split"] and f"train/{src.parent.name}/{src.name}" in [f["path"] for f in g["files"]]
    match = {f["path"]: f["match"] for g in report.duplicate_groups for f in g["files"]}
    kinds = {copy.rsplit("_", 1)[-1]: match[copy] for copy in copies}
    assert kinds == {"exact.png": "exact", "pixels.bmp": "pixels", "q70.jpg": "near", "resized.png": "near"}
    assert not any(report.index.relative(f) in grouped for f in flips)  # a mirror image is no copy
    injected = set(copies)
    assert all(injected & {f["path"] for f in g["files"]} for g in report.duplicate_groups)  # no false group
    counts = report.to_dict()["duplicates"]["counts"]
    assert counts["cross_split_groups"] == len(copies) // 4 and counts["extra_copies"] == len(copies)


def test_drop_from_eval_leaves_the_copies_out_and_touches_no_file(leaky):
    root, copies, _ = leaky
    before = {p: sha256_file(p) for p in root.rglob("*") if p.is_file()}
    report = _check(root, duplicates="drop_from_eval")
    clean = {f"{s}/{report.index.relative(r.path).split('/', 1)[1]}"
             for s in ("val", "test") for r in report.clean_index.splits[s]}
    assert not set(copies) & clean
    assert len(report.dropped_from_eval) == len(copies)
    assert report.clean_index.splits["train"] == report.index.splits["train"]
    assert {p: sha256_file(p) for p in root.rglob("*") if p.is_file()} == before


def test_fail_stops_with_the_groups_named(leaky):
    root, _, _ = leaky
    with pytest.raises(DatasetCheckError, match=r"data.duplicates=fail.*\n  near: train/Bag/"):
        _check(root, duplicates="fail")
    with pytest.raises(Exception, match="data.duplicates='nope'"):
        _check(root, duplicates="nope")


def test_thousands_of_copies_are_summarised(tmp_path, capsys):
    "1,500 copies of one train image and 600 train images copied into val and test: a summary, not a list."
    root = write_sample_subset(tmp_path / "data", per_class=60, classes=CLASSES)
    src = sorted((root / "train" / "Bag").glob("*.png"))[0]
    for i in range(1500):
        shutil.copy(src, root / "train" / "Bag" / f"copy_{i}.png")
    for f in sorted((root / "train").rglob("train_*.png")):
        for split in ("val", "test"): shutil.copy(f, root / split / f.parent.name / f"from_{f.name}")
    with pytest.warns(DatasetWarning) as caught:
        report = check_dataset(scan_dataset(root, verbose=False), verbose=True, max_listed=5)
    out = capsys.readouterr().out
    assert len(out.splitlines()) < 60 and "... and 290 more" in out
    message = next(str(w.message) for w in caught if "leakage" in str(w.message))
    assert len(message.splitlines()) < 10 and "... and 295 more" in message
    counts = report.to_dict()["duplicates"]["counts"]
    assert counts["cross_split_groups"] == 300 and counts["by_kind"]["exact"] == 300
    assert counts["extra_copies"] == 1500 + 600


def test_a_split_entirely_copied(tmp_path):
    root = write_sample_subset(tmp_path / "data", per_class=3, classes=("Bag", "Coat"))
    shutil.rmtree(root / "val")
    shutil.copytree(root / "train", root / "val")
    shutil.rmtree(root / "test")
    with pytest.warns(DatasetWarning, match="every val image has a copy in another split"):
        _check_loud(root)
    dm = ImageClassificationDataModule(root, image_size=32, duplicates="drop_from_eval",
                                       cache_dir=tmp_path / "cache", verbose=False)
    with pytest.raises(DatasetCheckError, match="nothing is left to evaluate on"):
        dm.setup()


def _check_loud(root):
    return check_dataset(scan_dataset(root, verbose=False), num_workers=0, verbose=False)


def test_a_class_with_one_image(tmp_path):
    root = write_sample_subset(tmp_path / "data", per_class=4, classes=("Bag", "Coat"))
    for f in sorted((root / "train" / "Coat").glob("*.png"))[1:]: f.unlink()
    report = _check(root, duplicates="fail")  # nothing copied: no stop
    assert report.counts()["train"] == {"Bag": 4, "Coat": 1} and report.duplicate_groups == []
    assert report.imbalance_ratio == 4.0


def test_cli_stops_on_leakage_under_fail_without_a_traceback(leaky, tmp_path, monkeypatch, capsys):
    from cli_runs import in_process, no_traceback, snapshot, tiny
    root, _, _ = leaky
    before = snapshot(root)
    run = in_process([f"data.root={root}", *tiny(data__duplicates="fail")], tmp_path / "run", monkeypatch, capsys)
    assert run.returncode == 1 and no_traceback(run), run.explain()
    assert "data.duplicates=fail" in run.output and "drop_from_eval" in run.output
    bad = in_process([f"data.root={root}", *tiny(data__duplicates="maybe")], tmp_path / "bad", monkeypatch, capsys)
    assert bad.returncode == 2 and no_traceback(bad) and "'data.duplicates' = 'maybe'" in bad.output, bad.explain()
    assert snapshot(root) == before
