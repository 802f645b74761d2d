"""Dataset formats: every layout scan_dataset detects, on real sample images, through scan, check and Dataset."""
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from classifier_training.core import ConfigError, DatasetError, sha256_file
from classifier_training.data.check import check_dataset, write_dataset_report
from classifier_training.data.datasets import (SPLITS, DatasetFormat, DatasetIndex, DatasetWarning,
                                               ImageClassificationDataset, SampleRecord, scan_dataset)
from classifier_training.data.sample import SAMPLE_FORMATS, write_sample_subset

CLASSES = ("Bag", "Coat", "Sandal")


def contents(index: DatasetIndex, split: str) -> set[tuple[str, str]]:
    "(sha256 of the file, label) of every image in a split: comparable across layouts."
    return {(sha256_file(r.path), r.label) for r in index.splits[split]}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("formats")
    return {fmt: write_sample_subset(base / fmt, per_class=4, format=fmt, classes=CLASSES) for fmt in SAMPLE_FORMATS}


@pytest.mark.parametrize("fmt", ["folders", "jsonl", "csv"])
def test_split_layouts_give_the_same_dataset(datasets, fmt, capsys):
    index = scan_dataset(datasets[fmt])
    printed = capsys.readouterr().out
    assert f"data.root '{datasets[fmt]}'" in printed and "3 classes" in printed and "train 12, val 12, test 12" in printed
    assert index.format == DatasetFormat(fmt) and str(index.format) == fmt
    assert index.class_names == list(CLASSES)
    assert index.split_seed is None and index.derived_splits == ()
    reference = scan_dataset(datasets["folders"], verbose=False)
    for split in SPLITS:
        assert contents(index, split) == contents(reference, split)
    report = check_dataset(index, num_workers=0, verbose=False)
    assert report.bad_files == [] and report.imbalance_ratio == 1.0


def test_flat_folder_is_split_seeded_and_stratified(datasets):
    index = scan_dataset(datasets["flat"], val_fraction=0.25, test_fraction=0.25, seed=3, verbose=False)
    assert index.format == DatasetFormat.flat
    assert index.counts() == {"train": {c: 6 for c in CLASSES}, "val": {c: 3 for c in CLASSES}, "test": {c: 3 for c in CLASSES}}
    assert (index.split_seed, index.val_fraction, index.test_fraction, index.derived_splits) == (3, 0.25, 0.25, ("val", "test"))
    again = scan_dataset(datasets["flat"], val_fraction=0.25, test_fraction=0.25, seed=3, verbose=False)
    assert again.splits == index.splits
    other = scan_dataset(datasets["flat"], val_fraction=0.25, test_fraction=0.25, seed=4, verbose=False)
    assert other.splits != index.splits and set(other.paths()) == set(index.paths())
    all_paths = index.paths()
    assert len(all_paths) == len(set(all_paths)) == 36  # each image in exactly one split


def test_flat_split_is_recorded_and_reproduced_from_the_run(datasets, tmp_path):
    index = scan_dataset(datasets["flat"], verbose=False)
    report = check_dataset(index, num_workers=0, verbose=False)
    path = write_dataset_report(report, tmp_path / "run" / "dataset_report.json")
    saved = json.loads(path.read_text())
    assert saved["split"]["split_seed"] == 42 and saved["split"]["derived_splits"] == ["val", "test"]
    rebuilt = DatasetIndex.from_dict({**index.to_dict(include_files=False), "files": saved["split"]["files"]})
    assert rebuilt.splits == index.splits
    # a moved dataset: the recorded relative paths are resolved against the new root
    moved = tmp_path / "moved"
    shutil.copytree(datasets["flat"], moved)
    again = DatasetIndex.from_dict(index.to_dict(), root=moved)
    assert [r.path.relative_to(moved) for r in again.splits["val"]] == [r.path.relative_to(index.root) for r in index.splits["val"]]


def test_split_of_one_class_does_not_depend_on_another(tmp_path, datasets):
    copy = tmp_path / "flat"
    shutil.copytree(datasets["flat"], copy)
    before = scan_dataset(copy, verbose=False)
    (next((copy / "Coat").glob("*.png"))).unlink()
    after = scan_dataset(copy, verbose=False)
    for split in SPLITS:
        assert [r.path.name for r in after.splits[split] if r.label == "Bag"] == [r.path.name for r in before.splits[split] if r.label == "Bag"]


def test_valid_folder_and_missing_test(tmp_path):
    root = write_sample_subset(tmp_path / "data", per_class=3, splits=("train", "val"), classes=CLASSES)
    os.rename(root / "val", root / "valid")
    index = scan_dataset(root, verbose=False)
    assert index.num_images("val") == 9 and index.num_images("test") == 0
    assert index.sources == {"train": ["train/"], "val": ["valid/"]}
    report = check_dataset(index, num_workers=0, verbose=False)
    assert report.missing_classes == {"val": []}  # an empty test split is not "missing classes"


def test_no_validation_split_is_carved_from_train(tmp_path):
    root = write_sample_subset(tmp_path / "data", per_class=10, splits=("train",), classes=CLASSES)
    with pytest.warns(DatasetWarning, match="no validation split"):
        index = scan_dataset(root, val_fraction=0.2, verbose=False)
    assert index.counts()["val"] == {c: 2 for c in CLASSES} and index.counts()["train"] == {c: 8 for c in CLASSES}
    assert index.derived_splits == ("val",) and index.split_seed == 42


def test_roboflow_jsonl_with_suffix_labels_found_recursively(tmp_path, datasets):
    root = tmp_path / "rf"
    src = scan_dataset(datasets["folders"], verbose=False)
    for split, folder in (("train", "train"), ("val", "valid"), ("test", "test")):
        (root / folder / "deep" / "er").mkdir(parents=True)
        lines = []
        for n, r in enumerate(src.splits[split]):
            shutil.copy(r.path, root / folder / f"{n}.jpg.png")
            lines.append(json.dumps({"image": f"../{n}.jpg.png", "prefix": "<CLASSIFY>", "suffix": f" {r.label} "}))
        half = len(lines) // 2  # two annotation files at different depths
        (root / folder / "deep" / "a.jsonl").write_text("\n".join(lines[:half]) + "\n\n")
        (root / folder / "deep" / "er" / "b.jsonl").write_text("\n".join(l.replace('"../', '"../../') for l in lines[half:]) + "\n")
    index = scan_dataset(root, verbose=False)
    assert index.format == DatasetFormat.jsonl and index.class_names == list(CLASSES)
    for split in SPLITS: assert contents(index, split) == contents(src, split)
    assert index.sources["val"] == ["valid/deep/a.jsonl", "valid/deep/er/b.jsonl"]


def test_csv_with_bom_extra_columns_and_quoted_names(tmp_path):
    root = write_sample_subset(tmp_path / "data", per_class=2, format="csv", classes=CLASSES)
    rows = (root / "train.csv").read_text().splitlines()[1:]
    img = rows[0].split(",")[0]
    shutil.copy(root / img, root / "images" / "train" / "with, comma.png")
    text = "id,label,image,source\n" + "\n".join(f"{n},{r.split(',')[1]},{r.split(',')[0]},x" for n, r in enumerate(rows))
    text += '\n99,Bag,"images/train/with, comma.png",y\n'
    (root / "train.csv").write_text("\ufeff" + text, encoding="utf-8")
    index = scan_dataset(root, verbose=False)
    assert index.num_images("train") == 7
    assert index.splits["train"][-1].path == root / "images" / "train" / "with, comma.png"


@pytest.mark.parametrize("bad, message", [
    ('{"image": "images/x.png", "label": "Bag"', "line 3: not valid JSON"),
    ('["images/x.png", "Bag"]', "line 3: each line needs the keys 'image' and 'label' (or 'suffix')"),
    ('{"image": "images/x.png"}', "line 3: each line needs the keys"),
    ('{"image": "images/x.png", "label": ""}', "line 3: empty label"),
    ('{"image": 5, "label": "Bag"}', "line 3: 'image' must be a non-empty path string"),
])
def test_malformed_jsonl_names_file_and_line(tmp_path, bad, message):
    root = write_sample_subset(tmp_path / "data", per_class=1, format="jsonl", classes=("Bag", "Coat"))
    ann = root / "val" / "annotations.jsonl"
    ann.write_text(ann.read_text() + bad + "\n")
    with pytest.raises(DatasetError) as e:
        scan_dataset(root, verbose=False)
    assert str(ann) in str(e.value) and message in str(e.value)


def test_csv_missing_columns(tmp_path):
    root = write_sample_subset(tmp_path / "data", per_class=1, format="csv", classes=("Bag", "Coat"))
    (root / "test.csv").write_text("path,class\nimages/test/a.png,Bag\n")
    with pytest.raises(DatasetError, match=r"test\.csv: the header must name the columns 'image' and 'label'; found \['path', 'class'\]"):
        scan_dataset(root, verbose=False)


def test_classes_in_natural_order(tmp_path):
    root = write_sample_subset(tmp_path / "data", per_class=1, splits=("train", "val"), classes=("Bag", "Coat", "Sandal"))
    for split in ("train", "val"):
        for old, new in (("Bag", "class10"), ("Coat", "class2"), ("Sandal", "Class1")):
            os.rename(root / split / old, root / split / new)
    assert scan_dataset(root, verbose=False).class_names == ["Class1", "class2", "class10"]


def test_fractions_are_validated(datasets):
    with pytest.raises(ConfigError, match="data.val_fraction"):
        scan_dataset(datasets["flat"], val_fraction=1.5)
    with pytest.raises(ConfigError, match="must stay below 1"):
        scan_dataset(datasets["flat"], val_fraction=0.5, test_fraction=0.5)


def test_root_is_a_file(tmp_path):
    (tmp_path / "x.zip").write_bytes(b"PK")
    with pytest.raises(DatasetError, match="is a file, not a folder"):
        scan_dataset(tmp_path / "x.zip")


def test_dataset_samples_and_dataloader(datasets):
    index = scan_dataset(datasets["jsonl"], verbose=False)
    to_tensor = lambda im: torch.from_numpy(__import__("numpy").asarray(im).copy()).permute(2, 0, 1).float() / 255
    ds = ImageClassificationDataset(index.splits["train"], index.class_to_idx, transform=to_tensor)
    assert len(ds) == 12 and ds.targets == [index.class_to_idx[r.label] for r in index.splits["train"]]
    assert ds.paths == [r.path for r in index.splits["train"]]
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=5, shuffle=False)))
    assert batch["image"].shape == (5, 3, 28, 28) and batch["index"].tolist() == [0, 1, 2, 3, 4]
    assert batch["label"].tolist() == ds.targets[:5]
    expected = to_tensor(Image.open(ds.paths[3]).convert("RGB"))
    assert torch.equal(batch["image"][3], expected)


def test_cache_images_decodes_once(datasets, monkeypatch):
    import classifier_training.data.datasets as datasets_module
    index = scan_dataset(datasets["folders"], verbose=False)
    calls = []
    real = datasets_module.load_image_rgb
    monkeypatch.setattr(datasets_module, "load_image_rgb", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    ds = ImageClassificationDataset(index.splits["val"], index.class_to_idx, cache_images=True)
    assert len(calls) == 12
    for _ in range(2):
        for i in range(len(ds)): ds[i]
    assert len(calls) == 12 and ds.cache_images


def test_cache_images_auto_caches_when_the_decoded_split_fits(datasets, monkeypatch):
    import classifier_training.data.datasets as datasets_module
    index = scan_dataset(datasets["folders"], verbose=False)
    records, c2i = index.splits["val"], index.class_to_idx
    need = len(records) * 28 * 28 * 3  # the decoded RGB bytes of the 28x28 sample images
    share = datasets_module.AUTO_CACHE_RAM_SHARE
    monkeypatch.setattr(datasets_module, "available_ram_bytes", lambda: int(need / share) + 1)
    cached = ImageClassificationDataset(records, c2i, cache_images="auto")
    assert cached.cache_images
    monkeypatch.setattr(datasets_module, "available_ram_bytes", lambda: int(need / share) - 1)
    assert not ImageClassificationDataset(records, c2i, cache_images="auto").cache_images
    monkeypatch.setattr(datasets_module, "available_ram_bytes", lambda: None)  # unknown: no cache
    plain = ImageClassificationDataset(records, c2i, cache_images="auto")
    assert not plain.cache_images
    for i in (0, 5):  # the cache gives back the very image a fresh decode gives
        assert cached.load_image(i).mode == "RGB"
        assert cached.load_image(i).tobytes() == plain.load_image(i).tobytes()
    with pytest.raises(ConfigError, match="true, false or auto"):
        ImageClassificationDataset(records, c2i, cache_images="yes")


def test_unknown_label_in_records_is_an_error(datasets):
    with pytest.raises(DatasetError, match="Dog"):
        ImageClassificationDataset([SampleRecord(datasets["folders"] / "x.png", "Dog")], {"Bag": 0, "Coat": 1})


def test_report_is_json_and_printable(datasets, tmp_path, capsys):
    index = scan_dataset(datasets["csv"], verbose=False)
    report = check_dataset(index, num_workers=2)
    out = capsys.readouterr().out
    assert "Dataset check" in out and "train" in out and "36 images decoded" in out
    d = json.loads(json.dumps(report.to_dict()))
    assert d["checked_images"] == 36 and d["bad_images"] == 0 and d["format"] == "csv"
    assert d["counts"]["test"] == {c: 4 for c in CLASSES}
    assert d["image_size_range"] == {"min": [28, 28], "max": [28, 28]}
    assert "files" not in d["split"]  # the split came from the dataset: nothing to record


def test_check_uses_a_pool_on_larger_datasets(tmp_path):
    root = write_sample_subset(tmp_path / "data", per_class=30, splits=("train", "val"), classes=CLASSES)
    index = scan_dataset(root, verbose=False)
    for executor in ("thread", "process"):
        report = check_dataset(index, num_workers=2, executor=executor, verbose=False)
        assert report.num_workers == 2 and report.bad_files == [] and report.num_checked == 180


SCAN = """import sys, warnings
warnings.simplefilter("ignore")
from classifier_training.core import DatasetError
from classifier_training.data.datasets import scan_dataset
try: print(scan_dataset(sys.argv[1], verbose=False).class_names)
except DatasetError as e: print("DatasetError:", e)"""


def _scan_with_hash_seeds(root, seeds: tuple[str, ...]) -> dict[str, str]:
    "What fresh interpreters (side by side) with these PYTHONHASHSEEDs make of the dataset."
    procs = {seed: subprocess.Popen([sys.executable, "-c", SCAN, str(root)], text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    env={**os.environ, "PYTHONHASHSEED": seed})
             for seed in seeds}
    seen = {}
    try:
        for seed, proc in procs.items():
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err[-2000:]
            seen[seed] = out.strip()
    finally:
        for proc in procs.values():
            if proc.poll() is None: proc.kill(); proc.wait()
    return seen


def test_class_order_is_the_same_in_every_process(tmp_path):
    """Class folders that differ only in case (cat, Cat, CAT) tie under the natural sort key, so
    they kept the order of a set, which follows the per-process hash seed: seeds 0 and 3 gave two
    class orders (two different models for the same data). The order is now total, and such names
    are refused, naming them."""
    root = write_sample_subset(tmp_path / "cats", per_class=2, classes=("Bag", "Coat"))
    for split in SPLITS:
        for name in ("cat", "Cat", "CAT"):
            shutil.copytree(root / split / "Bag", root / split / name)
    seen = _scan_with_hash_seeds(root, ("0", "3"))
    assert seen["0"] == seen["3"], seen
    assert seen["0"].startswith("DatasetError:")
    assert "differ only in letter case: 'CAT' / 'Cat' / 'cat'." in seen["0"]
    assert "rename the folders or labels" in seen["0"]


def test_case_colliding_labels_in_a_csv_are_refused(tmp_path):
    root = write_sample_subset(tmp_path / "data", per_class=2, format="csv",
                               classes=("Bag", "Coat"))
    text = (root / "train.csv").read_text()
    (root / "train.csv").write_text(text.replace(",Coat\n", ",COAT\n", 1))
    with pytest.raises(DatasetError, match="differ only in letter case: 'COAT' / 'Coat'"):
        scan_dataset(root, verbose=False)
