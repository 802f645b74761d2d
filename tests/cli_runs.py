"""Running `classifier-train` from the tests, and what the session's one finished run is made of.

- `cli`: the real command in a subprocess (`python -m classifier_training.training`, or Python code
  that ends by calling `main()` as the console script does); `run_parallel`: several at once. A
  subprocess pays about 6 s of imports (lightning, torchmetrics, torchvision), so each entry point
  keeps one real subprocess test of its exit path.
- `in_process`: `classifier_training.training.main()` in the test's own process, with `sys.argv`
  set, for the error messages and the short runs; exit status and output as from a subprocess.
- `finished_run`: the one real training run of the fast suite (tests/conftest.py holds it as a
  session fixture): the default config, 32 px, one epoch, on a small dataset holding every damaged
  case (`build_damaged_dataset`), in a run folder where a checkpoint save was killed half way
  (`kill_a_checkpoint_save`), under an audit hook that logs every write in the run folder.
  tests/test_cli.py checks its artifacts, tests/test_reliability.py how it treated the damaged
  files and how it wrote. The other pieces here moved from tests/test_reliability.py unchanged.

Not a test file: tests/conftest.py and the test files import it (pytest puts tests/ on sys.path).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import gc
import io
import logging
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import unicodedata
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image

from classifier_training.core import sha256_file
from classifier_training.data.sample import write_sample_subset

QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
TINY_DEFAULTS = {"model.backbone": "test_resnet", "data.image_size": 32, "data.batch_size": 8, "trainer.max_epochs": 1}


def tiny(**overrides) -> list[str]:
    "Overrides of a tiny run (one per key: `tiny(data__batch_size=2)` replaces data.batch_size)."
    keys = {**TINY_DEFAULTS, **{k.replace("__", "."): v for k, v in overrides.items()}}
    return [f"{k}={v}" for k, v in keys.items()] + QUIET


TINY = tiny()
MAX_PARALLEL = 3  # CLI processes at once (each holds about 1 GB)


# ---------------------------------------------------------------- running the CLI
@dataclasses.dataclass
class Run:
    "A finished CLI process: its output, exit status, run folder and wall time."
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    run_dir: Path
    seconds: float

    @property
    def output(self) -> str: return self.stdout + self.stderr

    def explain(self) -> str:
        return f"exit {self.returncode}\n--- stdout ---\n{self.stdout[-6000:]}\n--- stderr ---\n{self.stderr[-6000:]}"


def cli(args: list, run_dir: Path, boot: str | None = None, env: dict | None = None, timeout: int = 900) -> Run:
    """Run `python -m classifier_training.training ARGS hydra.run.dir=RUN_DIR` (or, with `boot`, that Python code, which
    ends by calling `classifier_training.training.main()` exactly as the `classifier-train` console script does)."""
    run_dir = Path(run_dir)
    work = run_dir.parent
    work.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8", "COLUMNS": "250",
                "CLASSIFIER_TRAINING_CACHE": str(work / f"cache_{run_dir.name}"), **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    args = [*map(str, args), f"hydra.run.dir={run_dir}"]
    cmd = [sys.executable, "-c", boot, *args] if boot else [sys.executable, "-m", "classifier_training.training", *args]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=work, env=full_env, capture_output=True, text=True, encoding="utf-8",
                       errors="replace", timeout=timeout)
    return Run(args, p.returncode, p.stdout, p.stderr, run_dir, time.perf_counter() - t0)


def run_parallel(jobs: dict[str, dict]) -> dict[str, Run]:
    "Run several `cli(**kwargs)` jobs side by side (MAX_PARALLEL at a time)."
    with concurrent.futures.ThreadPoolExecutor(MAX_PARALLEL) as ex:
        futures = {name: ex.submit(cli, **kw) for name, kw in jobs.items()}
        return {name: f.result() for name, f in futures.items()}


def no_traceback(run: Run) -> bool:
    return "Traceback (most recent call last)" not in run.output


# ---------------------------------------------------------------- the user's files
def snapshot(root: Path) -> dict[str, str]:
    "Every file (sha256), folder and symlink (its target) under root; links are not followed, so loops are harmless."
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(folder) / name
            rel = str(p.relative_to(root))
            if p.is_symlink(): out[rel] = "link -> " + os.readlink(p)
            elif p.is_dir(): out[rel] = "dir"
            else: out[rel] = sha256_file(p)
    return out


# ---------------------------------------------------------------- damaged images
def photo(width: int, height: int) -> Image.Image:
    "A real colour photo (scikit-learn's china.jpg) shrunk to width x height."
    from sklearn.datasets import load_sample_images
    return Image.fromarray(load_sample_images().images[0]).resize((width, height))


def jpeg_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90, **kw)
    return buf.getvalue()


def png_bomb(width: int = 10_000, height: int = 10_000) -> bytes:
    "A valid 1-bit PNG of width x height pixels (100 megapixels: over Pillow's 89.5 M limit) in about 12 kB."
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    rows = (b"\0" * (1 + (width + 7) // 8)) * height  # filter byte + packed bits, all black
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))


CANTA = "Çanta über"  # a class name with a space and non-ASCII letters (val/ holds it in NFD, as macOS writes it)
BOOT_CLASS = "ankle boot"
# (test id, path relative to the dataset root, reason the check must give)
BAD_CASES = [
    ("truncated_jpeg", "train/Coat/cut.jpg", "truncated"),
    ("truncated_jpeg_in_val", f"val/{BOOT_CLASS}/cut_val.jpg", "truncated"),
    ("zero_byte_file", "train/Coat/zero.png", "empty"),
    ("text_file_with_an_image_extension", "train/Coat/notes.jpg", "not_an_image"),
    ("decompression_bomb", "train/Coat/bomb.png", "too_large"),
]
IGNORED_CASES = [("ds_store", f"train/{CANTA}/.DS_Store"), ("readme_txt", "train/Coat/README.txt")]
# valid but unusual images: all in train/Çanta über, which must keep 4 sample images + these
VALID_CASES = [
    ("cmyk_jpeg", "cmyk.jpg"), ("16_bit_png", "wide16.png"), ("palette_png_with_transparency", "palette.png"),
    ("rgba", "rgba.png"), ("grayscale", "gray.bmp"), ("exif_rotated_photo", "phone.jpg"), ("1x1_image", "dot.png"),
    ("upper_case_JPG", "A.JPG"), ("upper_case_PNG", "B.PNG"), ("upper_case_Jpeg", "C.Jpeg"),
]
PER_CLASS = 4


def build_damaged_dataset(folder: Path) -> Path:
    "One small folders dataset that holds every damaged case of the catalogue at once."
    root = write_sample_subset(folder / "data", per_class=PER_CLASS, classes=("Bag", "Coat", "Sandal", "Sneaker"))
    for split in ("train", "val", "test"):
        os.rename(root / split / "Bag", root / split / unicodedata.normalize("NFD" if split == "val" else "NFC", CANTA))
        os.rename(root / split / "Sandal", root / split / BOOT_CLASS)
    canta = root / "train" / CANTA
    gray = np.asarray(Image.open(next(canta.glob("*.png"))))  # a real 28x28 grayscale sample image
    # broken files: the run must leave them out and say why
    (root / "train/Coat/cut.jpg").write_bytes(jpeg_bytes(photo(64, 48))[:1500])
    (root / f"val/{BOOT_CLASS}/cut_val.jpg").write_bytes(jpeg_bytes(photo(64, 48))[:1500])
    (root / "train/Coat/zero.png").write_bytes(b"")
    (root / "train/Coat/notes.jpg").write_text("meeting notes, not a picture\n")
    (root / "train/Coat/bomb.png").write_bytes(png_bomb())
    # stray non-image files
    (canta / ".DS_Store").write_bytes(b"\0\0\0\1Bud1\0\0\x10\0")
    (root / "train/Coat/README.txt").write_text("coats from the spring catalogue\n")
    # unusual but valid images
    photo(64, 48).convert("CMYK").save(canta / "cmyk.jpg", quality=95)
    Image.fromarray(gray.astype(np.uint16) * 257).save(canta / "wide16.png")
    pal = Image.fromarray(gray).convert("P")
    pal.save(canta / "palette.png", transparency=pal.getpixel((0, 0)))
    Image.fromarray(np.dstack([gray, gray, gray, np.where(gray > 0, 255, 0).astype(np.uint8)]), "RGBA").save(canta / "rgba.png")
    Image.fromarray(gray).save(canta / "gray.bmp")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 90 wide x 30 high; upright (EXIF applied) it is 30 wide x 90 high
    photo(90, 30).save(canta / "phone.jpg", exif=exif, quality=95)
    Image.new("RGB", (1, 1), (10, 200, 30)).save(canta / "dot.png")
    rgb = Image.fromarray(gray).convert("RGB")
    rgb.save(canta / "A.JPG", format="JPEG")
    rgb.save(canta / "B.PNG", format="PNG")
    rgb.save(canta / "C.Jpeg", format="JPEG", quality=60)  # not byte-equal to A.JPG (that would be a duplicate)
    # layout: an empty class folder, a class missing from val, a val label unknown to train, a symlink loop
    (root / "train" / "Dress").mkdir()
    shutil.rmtree(root / "val" / "Coat")
    shirt = write_sample_subset(folder / "shirt", per_class=1, splits=("val",), classes=("Shirt",))
    shutil.copytree(shirt / "val" / "Shirt", root / "val" / "Shirt")
    os.symlink(root / "train", root / "train" / "Sneaker" / "loop")  # Sneaker/loop -> train/ -> Sneaker/ -> ...
    return root


# ---------------------------------------------------------------- subprocess helpers (Python run with `-c`)
KILLED_SAVE = r"""
import io, os, signal, sys, torch
from classifier_training.checkpoints import AtomicCheckpointIO
path = sys.argv[1]
plugin = AtomicCheckpointIO()
plugin.save_checkpoint({"state_dict": {"w": torch.arange(1000.0)}, "global_step": 1, "epoch": 0}, path)  # A
real_save = torch.save
def dying_save(obj, f, *args, **kwargs):  # write half of the bytes of B, make sure they hit the disk, die
    buf = io.BytesIO(); real_save(obj, buf, *args, **kwargs); data = buf.getvalue()
    f.write(data[: len(data) // 2]); f.flush(); os.fsync(f.fileno())
    os.kill(os.getpid(), signal.SIGKILL)
torch.save = dying_save
plugin.save_checkpoint({"state_dict": {"w": torch.zeros(2_000_000)}, "global_step": 2, "epoch": 1}, path)  # B
"""

# `classifier-train` under an audit hook that logs every open-for-writing and rename inside the run folder
AUDITED_TRAIN = r"""
import os, sys
watch = os.path.abspath(os.environ["CT_AUDIT_DIR"]) + os.sep
log = open(os.environ["CT_AUDIT_LOG"], "w", encoding="utf-8", buffering=1)
WRITE = os.O_WRONLY | os.O_RDWR
def _path(p):
    if isinstance(p, bytes): p = os.fsdecode(p)
    if isinstance(p, os.PathLike): p = os.fspath(p)
    return os.path.abspath(p) if isinstance(p, str) else None
def hook(event, args):
    try:
        if event == "open":
            path, mode, flags = args
            writing = (isinstance(flags, int) and flags & WRITE) or (isinstance(mode, str) and any(c in mode for c in "wax+"))
            p = _path(path) if writing else None
            if p and p.startswith(watch): log.write("open\t" + p + "\n")
        elif event == "os.rename":
            src, dst = _path(args[0]), _path(args[1])
            if dst and dst.startswith(watch): log.write("rename\t" + str(src) + "\t" + dst + "\n")
    except Exception:
        pass
sys.addaudithook(hook)
import classifier_training.training as T
sys.argv = ["classifier-train", *sys.argv[1:]]
T.main()
"""

TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp$")  # core.atomic_writer's temporary files: .<name>.<random>.tmp


# ---------------------------------------------------------------- classifier-train in this process
def in_process(args: list, run_dir: Path, monkeypatch, capsys) -> Run:
    """`classifier-train ARGS hydra.run.dir=RUN_DIR` run by `classifier_training.training.main()` in
    this process, as the console script calls it: the exit status from SystemExit (0 when main
    returns), stdout and stderr from capsys, the environment `cli` gives. What the run changes in
    the process is undone afterwards: the root logger Hydra configures, the garbage collector
    main() pauses and freezes, the seed variables Lightning sets. An exception that escapes `main`
    fails the test, as a traceback would."""
    import classifier_training.training as train_module
    run_dir = Path(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    args = [*map(str, args), f"hydra.run.dir={run_dir}"]
    monkeypatch.setattr(sys, "argv", ["classifier-train", *args])
    monkeypatch.setenv("CLASSIFIER_TRAINING_CACHE", str(run_dir.parent / f"cache_{run_dir.name}"))
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    root, environ, collecting = logging.getLogger(), dict(os.environ), gc.isenabled()
    handlers, level = root.handlers[:], root.level
    capsys.readouterr()
    t0 = time.perf_counter()
    try:
        train_module.main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else int(e.code is not None)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        os.environ.clear()
        os.environ.update(environ)  # PL_GLOBAL_SEED, PL_SEED_WORKERS: seed_everything's
        gc.unfreeze()  # main() freezes the collector's objects and pauses it at start-up
        if collecting: gc.enable()
    out, err = capsys.readouterr()
    return Run(args, code, out, err, run_dir, time.perf_counter() - t0)


# ---------------------------------------------------------------- the session's one finished run
# the default config (default backbone, callbacks, CSV logger) at 32 px, one epoch
FINISHED_RUN_ARGS = ["data.image_size=32", "data.batch_size=8", "trainer.max_epochs=1", *QUIET]


def kill_a_checkpoint_save(last: Path) -> dict:
    """A process saves checkpoint A to `last` with the pipeline's AtomicCheckpointIO, then is
    SIGKILLed half way through saving B over it. Returns what it left: exit status, stderr, temp
    files and their sizes, what `last` loads as (the checkpoint dict, or the error)."""
    import torch
    p = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(last)], capture_output=True,
                       text=True, timeout=600)
    temps = sorted(last.parent.glob(f".{last.name}.*.tmp"))
    try: loaded = torch.load(last, map_location="cpu", weights_only=True)
    except Exception as e: loaded = f"{type(e).__name__}: {e}"
    return {"returncode": p.returncode, "stderr": p.stderr, "temps": temps,
            "temp_sizes": [t.stat().st_size for t in temps], "loaded": loaded}


def finished_run(work: Path) -> SimpleNamespace:
    """The one real training run of the fast suite (see the module docstring), started in `work`.
    Returns `run` (the finished `Run`), the dataset `data_root` and its `data_before` snapshot, the
    `audit_log` and `killed_save` (what the killed save left before the run reused its folder).
    It does not check the run: the tests do."""
    root = build_damaged_dataset(work / "damaged")
    before = snapshot(root)
    run_dir = work / "run"
    killed = kill_a_checkpoint_save(run_dir / "checkpoints" / "last.ckpt")
    audit_log = work / "audit.log"
    run = cli([f"data.root={root}", *FINISHED_RUN_ARGS], run_dir, boot=AUDITED_TRAIN,
              env={"CT_AUDIT_DIR": str(run_dir), "CT_AUDIT_LOG": str(audit_log)})
    return SimpleNamespace(run=run, data_root=root, data_before=before, audit_log=audit_log,
                           killed_save=killed)
