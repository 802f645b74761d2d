"""Dataset check at scale: the index and the check on a generated dataset of many small images.

Generates `--n` distinct tiny PNGs (default 200,000; 28x28 grayscale) from the real sample: each is a blend
of two sample images of the same class, shifted by a few pixels, with a little noise, so that the images
are distinct pictures (few duplicates) of the sample's kind. Split 80/10/10 into train/val/test, ten
classes, under a temporary folder (removed afterwards). Then measures, at n/10 and at n (linearity):

- `scan_dataset` (the index): wall time, and memory it allocates per image (tracemalloc: peak and what
  the index keeps);
- `check_files` on one core (read + sha256 + full decode + pixel hash + thumbnail + mode), per CPU-second,
  and on all cores (threads, the default), wall;
- what the check keeps per image (the FileCheck results; tracemalloc over 20,000 files);
- the report (`check_dataset(checks=...)`: duplicate groups incl. the near-duplicate search, statistics);
- the check cache (JSON): write and read time, size per image.

    .venv/bin/python bench/bench_check_scale.py                  # appends a section to bench/RESULTS.md
    .venv/bin/python bench/bench_check_scale.py --n 20000 --no-write
"""
from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Figure, append_results, machine, scratch_dir  # noqa: E402

from classifier_training.data.check import _available_cores, check_dataset, check_files  # noqa: E402
from classifier_training.data.datamodule import read_check_cache, write_check_cache  # noqa: E402
from classifier_training.data.datasets import scan_dataset  # noqa: E402
from classifier_training.data.sample import SAMPLE_CLASS_NAMES, load_sample_arrays  # noqa: E402


def _write_part(args):
    root, start, stop, seed = args
    arrays = load_sample_arrays()
    x, y = arrays["train"]
    by_class = [np.flatnonzero(y == c) for c in range(10)]
    rng = np.random.default_rng(seed)
    for i in range(start, stop):
        c = i % 10
        a, b = x[rng.choice(by_class[c], 2)]
        mix = rng.uniform(0.3, 0.7)
        img = mix * a + (1 - mix) * np.roll(b, rng.integers(-3, 4, 2), axis=(0, 1))
        img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
        split = "train" if (i // 10) % 10 < 8 else ("val" if (i // 10) % 10 == 8 else "test")
        Image.fromarray(img).save(root / split / SAMPLE_CLASS_NAMES[c] / f"g{i:07d}.png", compress_level=1)


def generate(root: Path, n: int, workers: int) -> None:
    for s in ("train", "val", "test"):
        for c in SAMPLE_CLASS_NAMES: (root / s / c).mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, n, workers * 4 + 1).astype(int)
    with concurrent.futures.ProcessPoolExecutor(workers) as ex:
        list(ex.map(_write_part, [(root, int(a), int(b), k) for k, (a, b) in enumerate(zip(bounds, bounds[1:]))]))


def cpu_seconds(fn):
    before = os.times(); t0 = time.perf_counter()
    out = fn()
    after = os.times(); wall = time.perf_counter() - t0
    cpu = sum(getattr(after, k) - getattr(before, k) for k in ("user", "system", "children_user", "children_system"))
    return out, max(cpu, 1e-9), wall


def traced(fn):
    tracemalloc.start()
    out = fn()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return out, current, peak


def measure(root: Path, cores: int) -> dict:
    _, _, scan_wall = cpu_seconds(lambda: scan_dataset(root, verbose=False))
    index, kept, peak = traced(lambda: scan_dataset(root, verbose=False))
    paths = list(dict.fromkeys(index.paths()))
    n = len(paths)
    checks, cpu_one, wall_one = cpu_seconds(lambda: check_files(paths, num_workers=0))
    _, cpu_pool, wall_pool = cpu_seconds(lambda: check_files(paths, num_workers=cores))
    sub = paths[:20000]
    _, check_kept, _ = traced(lambda: check_files(sub, num_workers=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report, cpu_report, wall_report = cpu_seconds(lambda: check_dataset(index, verbose=False, checks=checks))
    cache = root.parent / "check.json"
    _, _, t_write = cpu_seconds(lambda: write_check_cache(cache, "fp", checks))
    _, _, t_read = cpu_seconds(lambda: read_check_cache(cache, "fp", paths))
    return dict(n=n, scan_wall=scan_wall, index_kept=kept / n, index_peak=peak / n, cpu_one=cpu_one,
                wall_one=wall_one, cpu_pool=cpu_pool, wall_pool=wall_pool, check_kept=check_kept / len(sub),
                report_wall=wall_report, groups=len(report.duplicate_groups),
                cross=sum(g["cross_split"] for g in report.duplicate_groups),
                cache_bytes=cache.stat().st_size / n, cache_write=t_write, cache_read=t_read)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000, help="images to generate")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to bench/RESULTS.md")
    args = parser.parse_args()
    cores = _available_cores()
    tmp = scratch_dir("bench_scale_")
    try:
        print(machine())
        results = []
        for n in (args.n // 10, args.n):
            root = tmp / f"data_{n}"
            t0 = time.perf_counter(); generate(root, n, cores)
            print(f"generated {n} images in {time.perf_counter() - t0:.1f} s")
            r = measure(root, cores)
            print({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()})
            results.append(r)
            shutil.rmtree(root, ignore_errors=True)
        small, big = results
        n = big["n"]
        figures = [
            Figure(f"scan_dataset (index), {n:,} images, wall", big["scan_wall"], "s"),
            Figure.at_most("index memory kept per image (tracemalloc)", big["index_kept"], "bytes", 1024),
            Figure("index memory peak during the scan per image (tracemalloc)", big["index_peak"], "bytes"),
            Figure.at_least(f"check_files 1 core, {n:,} images (decode + all hashes), per CPU-second",
                            n / big["cpu_one"], "images/s/core", 1000),
            Figure(f"check_files 1 core, {n:,} images, wall", big["wall_one"], "s"),
            Figure(f"check_files {cores} threads, {n:,} images, wall", big["wall_pool"], "s"),
            Figure(f"check_files {cores} threads, per CPU-second", n / big["cpu_pool"], "images/s/core"),
            Figure("check results kept per image (FileCheck, tracemalloc)", big["check_kept"], "bytes"),
            Figure(f"report from the results (duplicate groups incl. near search, statistics), {n:,}, wall",
                   big["report_wall"], "s"),
            Figure("check cache (JSON) size per image", big["cache_bytes"], "bytes"),
            Figure(f"check cache write, {n:,} images", big["cache_write"], "s"),
            Figure(f"check cache read, {n:,} images", big["cache_read"], "s"),
            Figure(f"linearity: check 1 core CPU time, {n:,} / {small['n']:,} images (10 = linear)",
                   big["cpu_one"] / small["cpu_one"], "x"),
            Figure(f"linearity: scan wall, {n:,} / {small['n']:,} images (10 = linear)",
                   big["scan_wall"] / small["scan_wall"], "x"),
            Figure(f"linearity: report wall, {n:,} / {small['n']:,} images (10 = linear)",
                   big["report_wall"] / small["report_wall"], "x"),
        ]
        for f in figures: print(f.row())
        notes = (f"{n:,} generated 28x28 grayscale PNGs (blends of two real sample images of one class, shifted, "
                 f"with noise; 80/10/10 split, 10 classes); also {small['n']:,} for the linearity ratios. The "
                 f"check found {big['groups']} duplicate groups ({big['cross']} across splits) among them. "
                 f"Memory per image by tracemalloc (Python allocations: the index's records and paths; the "
                 f"check's FileCheck results). Per CPU-second: CPU time of this process and its workers (os.times).")
        if not args.no_write: print("appended to", append_results("Dataset check at scale", figures, notes))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
