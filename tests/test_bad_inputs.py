"""Bad-input catalogue (issue 10, point 1) through the real scan and the real dataset check.

Each case builds a small real dataset (Fashion-MNIST sample PNGs, scikit-learn's sample photos for JPEG
cases), damages it in one way, and shows: the message names the file and the reason, the user's files are
byte-for-byte untouched (sha256 before and after), and the run goes on or stops as the policy says
(skip: left out and the clean train split decodes end to end; warn: kept; fail: DatasetCheckError).
"""
import json
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import unicodedata
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from classifier_training.core import DatasetError, sha256_file, write_labels_mapping
from classifier_training.data.check import DatasetCheckError, check_dataset
from classifier_training.data.datasets import (DatasetWarning, ImageClassificationDataset, ImageReadError,
                                               load_image_rgb, scan_dataset)
from classifier_training.data.sample import write_sample_subset

CLASSES = ("Bag", "Coat", "Sandal")


# ---------------------------------------------------------------- helpers
def snapshot(root: Path) -> dict[str, str]:
    "sha256 of every regular file under root (symlinks not followed, so loops are harmless)."
    out = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            p = Path(folder) / name
            if p.is_file() and not p.is_symlink(): out[str(p.relative_to(root))] = sha256_file(p)
    return out


@pytest.fixture
def data(tmp_path) -> Path:
    return write_sample_subset(tmp_path / "data", per_class=3, classes=CLASSES)


@contextmanager
def untouched(root: Path):
    "Assert that nothing under root changes inside the block (no file modified, moved, added or deleted)."
    before = snapshot(root)
    yield
    assert snapshot(root) == before, "the dataset check modified, moved, added or deleted user files"


@contextmanager
def time_limit(seconds: int):
    "Fail (instead of hanging the suite) when the block runs longer than `seconds`."
    def _raise(*_): raise TimeoutError(f"took longer than {seconds} s (hang?)")
    old = signal.signal(signal.SIGALRM, _raise)
    signal.alarm(seconds)
    try: yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def check(root: Path, policy: str = "skip", **kw):
    "Scan + check quietly (warnings from the library are expected and asserted separately)."
    index = scan_dataset(root, verbose=False)
    return check_dataset(index, policy=policy, num_workers=0, verbose=False, **kw)


def decode_all(records, class_to_idx):
    "What a training epoch does with a split: decode every image (raises on a bad one)."
    ds = ImageClassificationDataset(records, class_to_idx)
    return [ds[i]["image"].size for i in range(len(ds))]


def photo() -> np.ndarray:
    "A real colour photo (scikit-learn's china.jpg), cropped and shrunk to 64x48."
    from sklearn.datasets import load_sample_images
    return np.asarray(Image.fromarray(load_sample_images().images[0]).resize((64, 48)))


def sample_gray(root: Path) -> np.ndarray:
    return np.asarray(Image.open(next((root / "train" / "Bag").glob("*.png"))))


def assert_policy_behaviour(root: Path, bad_name: str, reason: str):
    "The three policies on a dataset with one bad file named `bad_name`."
    with untouched(root):
        with pytest.warns(DatasetWarning, match=bad_name):
            skip = check(root, "skip")
        [bad] = skip.bad_files
        assert (bad.path.name, bad.reason) == (bad_name, reason)
        assert bad_name in bad.message and str(bad.path) in bad.message
        assert bad.path not in {r.path for s in skip.clean_index.splits.values() for r in s}
        decode_all(skip.clean_index.splits["train"], skip.clean_index.class_to_idx)  # the run goes on
        with pytest.warns(DatasetWarning, match="kept"):
            warn = check(root, "warn")
        assert bad.path in {r.path for s in warn.clean_index.splits.values() for r in s}
        with pytest.raises(DatasetCheckError, match=bad_name) as e:
            check(root, "fail")
        assert "policy 'fail'" in str(e.value) and e.value.report.bad_files[0].reason == reason


# ---------------------------------------------------------------- broken files
def test_truncated_jpeg(data):
    cut = data / "train" / "Coat" / "cut.jpg"
    full = data / "train" / "Coat" / "full.jpg"
    Image.fromarray(photo()).save(full, quality=90)
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    Image.open(cut).verify()  # Pillow's verify() does not notice; only the full decode does
    assert_policy_behaviour(data, "cut.jpg", "truncated")


def test_zero_byte_file(data):
    (data / "train" / "Bag" / "zero.png").write_bytes(b"")
    assert_policy_behaviour(data, "zero.png", "empty")


def test_text_file_with_an_image_extension(data):
    (data / "val" / "Sandal" / "notes.jpg").write_text("this is not a picture")
    assert_policy_behaviour(data, "notes.jpg", "not_an_image")


def test_missing_file_named_in_annotations(tmp_path):
    root = write_sample_subset(tmp_path / "csv", per_class=3, format="csv", classes=CLASSES)
    with open(root / "train.csv", "a") as f: f.write("images/train/gone.png,Bag\n")
    assert_policy_behaviour(root, "gone.png", "missing")


def test_stray_non_image_files_are_ignored_and_counted(data):
    (data / "train" / "Bag" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (data / "train" / "Coat" / "README.txt").write_text("coats")
    (data / "train" / "._Thumbs.png").write_bytes(b"\0\5\x16\7")  # macOS AppleDouble file with an image name
    with untouched(data):
        report = check(data)
    assert report.bad_files == []
    names = sorted(p.name for p in report.index.ignored_files)
    assert names == [".DS_Store", "._Thumbs.png", "README.txt"]
    assert report.to_dict()["ignored_files"] == ["train/._Thumbs.png", "train/Bag/.DS_Store", "train/Coat/README.txt"]
    assert "3 non-image file(s) ignored" in scan_dataset(data, verbose=False).describe()


# ---------------------------------------------------------------- unusual but valid images
def _add(data: Path, name: str, img: Image.Image, **save) -> Path:
    path = data / "train" / "Bag" / name
    img.save(path, **save)
    return path


def _valid(data: Path, path: Path) -> np.ndarray:
    "The image passes the check, stays in the clean index, and decodes to 8-bit RGB."
    with untouched(data):
        report = check(data)
    assert report.bad_files == []
    assert path in {r.path for r in report.clean_index.splits["train"]}
    im = load_image_rgb(path)
    assert im.mode == "RGB"
    return np.asarray(im)


def test_cmyk_jpeg(data):
    rgb = photo()
    path = _add(data, "cmyk.jpg", Image.fromarray(rgb).convert("CMYK"), quality=95)
    assert Image.open(path).mode == "CMYK"
    out = _valid(data, path)
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() < 8  # colours survive the round trip


def test_16_bit_png(data):
    gray = sample_gray(data)
    path = _add(data, "wide.png", Image.fromarray(gray.astype(np.uint16) * 257))
    assert Image.open(path).mode.startswith("I;16")
    out = _valid(data, path)
    assert (out[..., 0] == gray).all() and (out[..., 2] == gray).all()  # scaled, not clipped to white


def test_palette_png_with_transparency(data):
    gray = sample_gray(data)
    pal = Image.fromarray(gray).convert("P")
    pal.info["transparency"] = pal.getpixel((0, 0))  # the background colour is transparent
    path = _add(data, "palette.png", pal, transparency=pal.getpixel((0, 0)))
    assert Image.open(path).mode == "P" and "transparency" in Image.open(path).info
    out = _valid(data, path)
    assert (out[0, 0] == 255).all()  # transparent background becomes white


def test_rgba(data):
    gray = sample_gray(data)
    alpha = np.where(gray > 0, 255, 0).astype(np.uint8)
    path = _add(data, "rgba.png", Image.fromarray(np.dstack([gray, gray, gray, alpha]), "RGBA"))
    out = _valid(data, path)
    assert (out[gray == 0] == 255).all() and (out[gray > 0][:, 1] == gray[gray > 0]).all()


def test_grayscale(data):
    gray = sample_gray(data)
    path = _add(data, "gray.bmp", Image.fromarray(gray))
    out = _valid(data, path)
    assert (out[..., 0] == gray).all() and (out[..., 1] == out[..., 2]).all()


def test_exif_rotated_photo(data):
    rgb = photo()  # 64 wide, 48 high
    exif = Image.Exif()
    exif[0x0112] = 6  # camera held sideways: viewers rotate 90 degrees clockwise
    path = _add(data, "phone.jpg", Image.fromarray(rgb), exif=exif, quality=95)
    out = _valid(data, path)
    assert out.shape == (64, 48, 3)  # upright: now 48 wide, 64 high
    expected = np.asarray(Image.fromarray(rgb).transpose(Image.Transpose.ROTATE_270))
    assert np.abs(out.astype(int) - expected.astype(int)).mean() < 8


def test_1x1_image(data):
    path = _add(data, "dot.png", Image.new("RGB", (1, 1), (10, 200, 30)))
    assert _valid(data, path).tolist() == [[[10, 200, 30]]]


def _png_header_only(width: int, height: int) -> bytes:
    "A PNG claiming width x height pixels (a decompression bomb's header), with a tiny body."
    def chunk(kind, body): return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_very_large_image_decompression_bomb(data):
    bomb = data / "train" / "Coat" / "bomb.png"
    bomb.write_bytes(_png_header_only(30_000, 30_000))  # 900 megapixels in a 100-byte file
    assert bomb.stat().st_size < 200
    assert_policy_behaviour(data, "bomb.png", "too_large")
    with pytest.raises(ImageReadError, match="bomb.png.*decompression-bomb guard"):
        load_image_rgb(bomb)


def test_pixel_limit_is_configurable(data):
    with untouched(data):
        with pytest.warns(DatasetWarning):
            report = check(data, max_pixels=27 * 28)
    assert {b.reason for b in report.bad_files} == {"too_large"}
    assert len(report.bad_files) == report.index.num_images()
    assert "784 pixels is over the limit of 756" in report.bad_files[0].message


def test_real_photo_over_a_small_pixel_limit_names_file_limit_and_key(data):
    """data.max_pixels = 100,000: the 28x28 sample images pass, a real 640x427 photo (273,280 pixels) is refused with
    a message that names the file, its size, the limit and the config key to raise; a larger limit lets it through."""
    from sklearn.datasets import load_sample_images
    big = data / "train" / "Bag" / "china.jpg"
    Image.fromarray(load_sample_images().images[0]).save(big, quality=90)
    with untouched(data):
        with pytest.warns(DatasetWarning, match="china.jpg"):
            report = check(data, max_pixels=100_000)
        [bad] = report.bad_files
        assert (bad.path, bad.reason) == (big, "too_large")
        for part in (str(big), "640x427 = 273,280 pixels", "limit of 100,000 pixels", "data.max_pixels"):
            assert part in bad.message, (part, bad.message)
        assert big not in {r.path for r in report.clean_index.splits["train"]}
        with pytest.raises(DatasetCheckError, match="china.jpg: too large"):
            check(data, "fail", max_pixels=100_000)
        assert check(data, max_pixels=273_280).bad_files == []  # at the limit: accepted


# ---------------------------------------------------------------- names and layout
def test_upper_case_extensions(data):
    src = next((data / "train" / "Bag").glob("*.png"))
    img = Image.open(src).convert("RGB")
    for name, fmt in [("A.JPG", "JPEG"), ("B.PNG", "PNG"), ("C.Jpeg", "JPEG"), ("D.TIFF", "TIFF"),
                      ("E.BMP", "BMP"), ("F.GIF", "GIF"), ("G.WebP", "WEBP"), ("H.Tif", "TIFF")]:
        img.save(data / "train" / "Bag" / name, format=fmt)
    with untouched(data):
        report = check(data)
    names = {r.path.name for r in report.clean_index.splits["train"]}
    assert {"A.JPG", "B.PNG", "C.Jpeg", "D.TIFF", "E.BMP", "F.GIF", "G.WebP", "H.Tif"} <= names
    assert report.bad_files == [] and report.index.ignored_files == []


def test_class_names_with_spaces_and_non_ascii_letters(tmp_path):
    root = write_sample_subset(tmp_path / "data", per_class=3, classes=("Bag", "Coat", "Sandal"))
    names = {"Bag": "ankle boot 2", "Coat": "Çanta über", "Sandal": "ankle boot 10"}
    for split in ("train", "val", "test"):
        for old, new in names.items():
            # val written in NFD (as macOS does), train in NFC: they must still be the same class
            new = unicodedata.normalize("NFD" if split == "val" else "NFC", new)
            os.rename(root / split / old, root / split / new)
    with untouched(root):
        report = check(root)
    assert report.index.class_names == ["ankle boot 2", "ankle boot 10", "Çanta über"]  # natural order
    assert report.index.unknown_labels == {} and report.missing_classes == {"val": [], "test": []}
    write_labels_mapping(tmp_path / "labels_mapping.json", report.index.class_names)
    mapping = json.loads((tmp_path / "labels_mapping.json").read_text(encoding="utf-8"))
    assert mapping["idx_to_class"]["2"] == "Çanta über"


def test_empty_class_folder(data):
    (data / "train" / "Dress").mkdir()
    with untouched(data):
        with pytest.warns(DatasetWarning, match="Dress"):
            report = check(data)
    assert report.index.class_names == list(CLASSES)  # an empty class cannot be learned: left out
    assert report.empty_classes == ["Dress"]
    assert report.to_dict()["empty_classes"] == ["Dress"]


def test_class_missing_from_val(data):
    shutil.rmtree(data / "val" / "Coat")
    with untouched(data):
        report = check(data)
    assert report.missing_classes == {"val": ["Coat"], "test": []}
    assert report.to_dict()["counts"]["val"]["Coat"] == 0


def test_val_label_unknown_to_train(data):
    (data / "val" / "Dress").mkdir()
    shutil.copy(next((data / "val" / "Bag").glob("*.png")), data / "val" / "Dress" / "x.png")
    with untouched(data):
        with pytest.warns(DatasetWarning, match=r"val: 1 image\(s\) with label\(s\) unknown to train are excluded: \{'Dress': 1\}"):
            report = check(data)
    assert report.index.unknown_labels == {"val": {"Dress": 1}}
    assert all(r.label != "Dress" for r in report.clean_index.splits["val"])
    assert report.to_dict()["unknown_labels"] == {"val": {"Dress": 1}}


def test_single_class_is_a_clear_error(tmp_path):
    root = write_sample_subset(tmp_path / "data", per_class=3, classes=("Bag",))
    with untouched(root), pytest.raises(DatasetError, match="cannot train a classifier on one class"):
        scan_dataset(root, verbose=False)


def test_missing_train_folder(tmp_path):
    root = write_sample_subset(tmp_path / "data", per_class=2, splits=("val", "test"), classes=CLASSES)
    msg = (f"data.root '{root}' has no train/ folder; expected train/<class>/*.jpg, "
           "train/annotations.jsonl or train.csv")
    with untouched(root), pytest.raises(DatasetError, match=msg.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*").replace(".", r"\.")):
        scan_dataset(root, verbose=False)
    with pytest.raises(DatasetError, match="does not exist"):
        scan_dataset(tmp_path / "nowhere", verbose=False)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
@pytest.mark.parametrize("escape", ["../../outside.png", "images/../../../secret.png", "/etc/hosts.png"])
def test_annotation_path_escaping_the_root(tmp_path, fmt, escape):
    root = write_sample_subset(tmp_path / "data", per_class=2, format=fmt, classes=CLASSES)
    (tmp_path / "outside.png").write_bytes((next(root.rglob("*.png"))).read_bytes())
    if fmt == "jsonl":
        ann = root / "train" / "annotations.jsonl"
        with open(ann, "a") as f: f.write(json.dumps({"image": escape, "label": "Bag"}) + "\n")
    else:
        ann = root / "train.csv"
        with open(ann, "a") as f: f.write(f"{escape},Bag\n")
    with untouched(root), pytest.raises(DatasetError) as e:
        scan_dataset(root, verbose=False)
    assert "points outside the dataset root" in str(e.value) and ann.name in str(e.value) and escape in str(e.value)


def test_symlink_loop_does_not_hang(data):
    os.symlink(data / "train", data / "train" / "Bag" / "loop")  # Bag/loop -> train/ -> Bag/ -> ...
    os.symlink("..", data / "train" / "Coat" / "up")
    with time_limit(60), untouched(data):
        report = check(data)
    assert report.bad_files == []
    # the links lead back into train/, which is never entered twice: each image is listed once, under its class
    assert report.index.num_images("train") == 9
    assert {r.label for r in report.index.splits["train"]} == set(CLASSES)


def test_symlink_between_class_folders_hides_no_class(data):
    os.symlink(data / "train" / "Coat", data / "train" / "Bag" / "also_coats")
    with time_limit(60), untouched(data):
        report = check(data)
    counts = report.index.counts()["train"]
    assert counts == {"Bag": 6, "Coat": 3, "Sandal": 3}  # Coat keeps its images; Bag lists the linked ones too
    assert report.duplicates_within_split["train"] == 3


def test_broken_symlink_is_reported_missing(data):
    os.symlink(data / "nowhere.png", data / "train" / "Bag" / "dangling.png")
    assert_policy_behaviour(data, "dangling.png", "missing")


def test_leakage_across_splits_names_both_files(data):
    src = next((data / "train" / "Coat").glob("*.png"))
    shutil.copy(src, data / "test" / "Coat" / "copy_of_train.png")
    with untouched(data):
        with pytest.warns(DatasetWarning, match="leakage"):
            report = check(data)
    [group] = report.duplicates_across_splits
    assert [(f["split"], f["path"]) for f in group["files"]] == [
        ("train", f"train/Coat/{src.name}"), ("test", "test/Coat/copy_of_train.png")]
    assert group["sha256"] == sha256_file(src)



# ---------------------------------------------------------------- wide and float images
def test_float32_tiff_with_values_0_to_1(data):
    """A float32 TIFF holding 0..1 (real sample pixels / 255) used to be read as 8-bit: an almost
    black image (0 or 1). Float images are now read as 0 = black .. 1 = white: the 8-bit pixels."""
    gray = sample_gray(data)
    path = _add(data, "float01.tif", Image.fromarray(gray.astype(np.float32) / 255))
    assert Image.open(path).mode == "F"
    out = _valid(data, path)
    assert (out[..., 0] == gray).all() and (out[..., 2] == gray).all()


def test_16_bit_tiff(data):
    gray = sample_gray(data)
    path = _add(data, "wide16.tif", Image.fromarray(gray.astype(np.uint16) * 257))
    assert Image.open(path).mode.startswith("I;16")
    out = _valid(data, path)
    assert (out[..., 0] == gray).all()


def test_float_image_outside_0_to_1_is_refused_by_name(data):
    "0..255 stored as float: not guessed (a min..max stretch brightens dark images) but refused."
    gray = sample_gray(data)
    _add(data, "float255.tif", Image.fromarray(gray.astype(np.float32)))
    assert_policy_behaviour(data, "float255.tif", "unsupported")
    expected = f"float255.tif: unsupported: float .32-bit. pixel values run from 0 to {gray.max()}"
    with pytest.raises(ImageReadError, match=expected):
        load_image_rgb(data / "train" / "Bag" / "float255.tif")


# ---------------------------------------------------------------- hostile files
CHECK = """import json, sys, warnings
warnings.simplefilter("ignore")
from classifier_training.core import DatasetError
from classifier_training.data.check import check_dataset
from classifier_training.data.datasets import scan_dataset
results = []
for root in sys.argv[1:]:
    try: report = check_dataset(scan_dataset(root, verbose=False), num_workers=0, verbose=False)
    except DatasetError as e: results.append({"error": str(e)})
    else: results.append({"bad_files": report.to_dict()["bad_files"]})
print(json.dumps(results))"""


def check_in_subprocess(roots: list[Path], seconds: int = 120, memory_gib: int = 6) -> list[dict]:
    """Scan + check each dataset of `roots` in one fresh interpreter that is killed after `seconds`
    and may map at most `memory_gib` GiB: a read that blocks or never ends fails the tests instead
    of hanging CI or exhausting the host's memory. One interpreter for all (4 s of imports each)."""
    def limit(): resource.setrlimit(resource.RLIMIT_AS, (memory_gib << 30, memory_gib << 30))
    try:
        r = subprocess.run([sys.executable, "-c", CHECK, *map(str, roots)], capture_output=True,
                           text=True, timeout=seconds, preexec_fn=limit)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the dataset scan and check did not finish in {seconds} s (hang)")
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict:
    """Three datasets, each with one hostile file, checked in one subprocess
    (`check_in_subprocess`). Each entry: (dataset root, what scan + check gave, whether every user
    file was left untouched)."""
    base = tmp_path_factory.mktemp("hostile")
    roots = {"pipe": write_sample_subset(base / "pipe", per_class=3, classes=CLASSES),
             "dev_zero": write_sample_subset(base / "dev_zero", per_class=3, classes=CLASSES),
             "annotation_pipe": write_sample_subset(base / "annotation_pipe", per_class=2,
                                                    format="jsonl", classes=CLASSES)}
    os.mkfifo(roots["pipe"] / "train" / "Bag" / "pipe.png")
    os.symlink("/dev/zero", roots["dev_zero"] / "train" / "Coat" / "zero.png")
    os.mkfifo(roots["annotation_pipe"] / "train" / "more.jsonl")
    before = {name: snapshot(root) for name, root in roots.items()}
    results = check_in_subprocess(list(roots.values()))
    return {name: (root, result, snapshot(root) == before[name])
            for (name, root), result in zip(roots.items(), results)}


def test_named_pipe_called_png_is_reported_not_read(hostile):
    "Before: the check opened the pipe and waited for a writer forever."
    data, result, untouched_files = hostile["pipe"]
    assert untouched_files, "the dataset check modified, moved, added or deleted user files"
    [bad] = result["bad_files"]
    assert (bad["path"], bad["reason"]) == ("train/Bag/pipe.png", "not_a_file")
    assert "named pipe (FIFO), not a regular file" in bad["message"]
    assert str(data / "train/Bag/pipe.png") in bad["message"]


def test_link_to_dev_zero_is_reported_not_read(hostile):
    "Before: the check read /dev/zero until memory ran out."
    _, result, untouched_files = hostile["dev_zero"]
    assert untouched_files, "the dataset check modified, moved, added or deleted user files"
    [bad] = result["bad_files"]
    assert (bad["path"], bad["reason"]) == ("train/Coat/zero.png", "not_a_file")
    assert "character device, not a regular file" in bad["message"]


def test_annotation_file_that_is_a_pipe_is_refused(hostile):
    "Before: the scan opened the pipe and waited forever."
    root, result, untouched_files = hostile["annotation_pipe"]
    assert untouched_files, "the dataset check modified, moved, added or deleted user files"
    assert f"{root / 'train' / 'more.jsonl'}: not a regular file" in result["error"]


def test_image_over_the_byte_limit_is_reported(data, monkeypatch):
    import classifier_training.core as core
    big = _add(data, "photo.png", Image.fromarray(photo()))
    monkeypatch.setattr(core, "MAX_IMAGE_BYTES", big.stat().st_size - 1)
    assert_policy_behaviour(data, "photo.png", "too_large")
    with pytest.raises(ImageReadError, match=f"{big.stat().st_size:,} bytes is over the limit of"):
        load_image_rgb(big)


# ---------------------------------------------------------------- unreadable folders, lost images
def test_unreadable_class_folder_is_named_not_taken_for_a_missing_class(data, monkeypatch):
    """Before: a train class folder that cannot be listed silently lost its class (and val's images
    of it became "unknown to train"). chmod 000 does this for a normal user; as root chmod has no
    effect, so os.scandir is made to raise the PermissionError a normal user gets."""
    folder = data / "train" / "Coat"
    folder.chmod(0)
    try:
        if os.access(folder, os.R_OK):  # running as root: simulate
            real = os.scandir
            def scandir(path="."):
                if Path(path) == folder: raise PermissionError(13, "Permission denied", str(path))
                return real(path)
            monkeypatch.setattr(os, "scandir", scandir)
        with untouched(data), pytest.raises(DatasetError) as e:
            scan_dataset(data, verbose=False)
    finally: folder.chmod(0o755)
    assert str(e.value).startswith(f"the folder '{folder}' cannot be read (Permission denied)")
    assert "chmod -R u+rX" in str(e.value)


def test_image_that_disappears_after_the_check_is_one_line(data):
    "Deleted between the check and the epoch that loads it: one line naming it (num_workers=0)."
    from classifier_training.test_utils import tiny_datamodule
    dm = tiny_datamodule(data, check_workers=0, num_workers=0, batch_size=32, check_policy="skip",
                         cache_images=False)  # a cached image would not be read again
    dm.setup()
    gone = dm.train_dataset.paths[0]
    gone.unlink()
    with pytest.raises(ImageReadError) as e:
        next(iter(dm.train_dataloader()))
    assert str(e.value) == (f"{gone}: missing: file not found; fix the path in the annotations or "
                            "restore the file")
    assert e.value.reason == "missing"


# ---------------------------------------------------------------- refused datasets stay untouched
def _cats(tmp_path):
    root = write_sample_subset(tmp_path / "data", per_class=2, classes=CLASSES)
    for split in ("train", "val", "test"):
        for name in ("cat", "Cat"): shutil.copytree(root / split / "Bag", root / split / name)
    return root, ["class names that differ only in letter case: 'Cat' / 'cat'"]


def _latin1_csv(tmp_path):
    root = write_sample_subset(tmp_path / "data", per_class=2, format="csv", classes=CLASSES)
    data = (root / "train.csv").read_bytes() + b"images/train/x.png,Caf\xe9\n"
    (root / "train.csv").write_bytes(data)
    line, at = data.count(b"\n"), data.index(b"\xe9")
    return root, [f"train.csv, line {line}: the byte 0xe9 at byte offset {at} is not valid UTF-8",
                  "annotation files must be UTF-8"]


def _latin1_jsonl(tmp_path):
    root = write_sample_subset(tmp_path / "data", per_class=2, format="jsonl", classes=CLASSES)
    ann = root / "val" / "annotations.jsonl"
    data = b'{"image": "images/x.png", "label": "Caf\xe9"}\n' + ann.read_bytes()
    ann.write_bytes(data)
    at = data.index(b"\xe9")
    return root, [f"annotations.jsonl, line 1: the byte 0xe9 at byte offset {at}"]


def _two_labels(tmp_path):
    root = write_sample_subset(tmp_path / "data", per_class=2, format="jsonl", classes=CLASSES)
    ann = root / "train" / "annotations.jsonl"
    first = json.loads(ann.read_text().splitlines()[0])
    with open(ann, "a") as f: f.write(json.dumps({**first, "label": "Coat"}) + "\n")
    n = len(ann.read_text().splitlines())
    return root, [f"'Bag' ({ann}, line 1) and 'Coat' ({ann}, line {n})",
                  "an image belongs to one class"]


def _class_named_test(tmp_path):
    root = write_sample_subset(tmp_path / "data", per_class=3, format="flat", classes=CLASSES)
    os.rename(root / "Coat", root / "test")
    return root, ["has no train/ folder", "It has test/, taken for a split because the folder "
                  "names train, val, valid, validation, test are reserved for splits",
                  "rename that folder, e.g. to 'test_class'"]


def _class_named_train(tmp_path):
    root = write_sample_subset(tmp_path / "data", per_class=3, format="flat", classes=CLASSES)
    os.rename(root / "Sandal", root / "train")
    return root, [f"'{root / 'train'}' holds 9 image(s) directly but no class folder with images",
                  "rename that folder, e.g. to 'train_class'"]


@pytest.mark.parametrize("make", [_cats, _latin1_csv, _latin1_jsonl, _two_labels, _class_named_test,
                                  _class_named_train])
def test_refused_dataset_is_named_and_left_untouched(tmp_path, make):
    """Each refusal is a DatasetError that says what is wrong and what to do, and no user file
    changes (sha256 of every file before and after). Before: case-only class names trained (in a
    process-dependent order), a Latin-1 byte gave a bare UnicodeDecodeError, two labels for one
    image passed as a duplicate, and a class folder named like a split gave "no train/ folder" or
    "train has no images" without saying why."""
    root, expected = make(tmp_path)
    with untouched(root), pytest.raises(DatasetError) as e:
        scan_dataset(root, verbose=False)
    for part in expected: assert part in str(e.value), (part, str(e.value))
