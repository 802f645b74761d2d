"""Dataset check speed: images per second per core, full decode, on the small real sample PNGs.

Writes 3,000 real Fashion-MNIST sample images (28x28 grayscale PNG, about 0.6 KB each) as an image-folder
dataset, then measures:

- scan: `scan_dataset` (folder listing only, no decoding);
- check, one core: `check_files(paths, num_workers=0)`: read + sha256 + full decode + RGB + the duplicate
  fingerprints (sha256 of the pixels, 8x8 thumbnail, colour mode), in this process, as wall-clock rate and
  as images per CPU-second (robust on a shared machine);
- decode only, one core: `load_image_rgb` on each file (no hashing), to show what hashing costs;
- the report from those results (`check_dataset(checks=...)`: duplicate groups incl. the near-duplicate
  search, image statistics);
- check, pool: `check_files` over all usable cores with worker processes, and with threads (the default
  executor), wall-clock and per CPU-second;
- `check_dataset` end to end (default settings: processes when the dataset is large enough).

Aim: at least 1,000 images/s/core (per CPU-second) for the one-core check.

    .venv/bin/python bench/bench_dataset_check.py            # appends a section to bench/RESULTS.md
    .venv/bin/python bench/bench_dataset_check.py --quick --no-write
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Figure, append_results, machine, time_it, scratch_dir  # noqa: E402

from classifier_training.data.check import _available_cores, check_dataset, check_files  # noqa: E402
from classifier_training.data.datasets import load_image_rgb, scan_dataset  # noqa: E402
from classifier_training.data.sample import write_sample_subset  # noqa: E402


def cpu_seconds(fn, repeats: int) -> float:
    "Least CPU time (user + system, this process and its finished children) of `repeats` calls of `fn`."
    best = float("inf")
    for _ in range(repeats):
        before = os.times()
        fn()
        after = os.times()
        used = sum(getattr(after, k) - getattr(before, k) for k in ("user", "system", "children_user", "children_system"))
        best = min(best, used)
    return max(best, 1e-9)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=100, help="images per class and split (x 10 classes x 3 splits)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="fewer images and repeats")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to bench/RESULTS.md")
    args = parser.parse_args()
    per_class, repeats = (20, 2) if args.quick else (args.per_class, args.repeats)
    tmp = scratch_dir("bench_check_")
    try:
        root = write_sample_subset(tmp / "data", per_class=per_class)
        index = scan_dataset(root, verbose=False)
        paths = index.paths()
        n, cores = len(paths), _available_cores()
        print(f"{n} images, {sum(p.stat().st_size for p in paths) / n:.0f} bytes each on average; {cores} usable core(s)")
        print(machine())

        t_scan = time_it(lambda: scan_dataset(root, verbose=False), repeats=repeats)
        cpu_one = cpu_seconds(lambda: check_files(paths, num_workers=0), repeats)
        t_one = time_it(lambda: check_files(paths, num_workers=0), repeats=repeats)
        t_decode = time_it(lambda: [load_image_rgb(p) for p in paths], repeats=repeats)
        checks = check_files(paths, num_workers=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cpu_report = cpu_seconds(lambda: check_dataset(index, verbose=False, checks=checks), repeats)
        cpu_proc = cpu_seconds(lambda: check_files(paths, num_workers=cores, min_parallel=0, executor="process"), repeats)
        t_proc = time_it(lambda: check_files(paths, num_workers=cores, min_parallel=0, executor="process"), repeats=repeats)
        cpu_thread = cpu_seconds(lambda: check_files(paths, num_workers=cores, min_parallel=0, executor="thread"), repeats)
        t_thread = time_it(lambda: check_files(paths, num_workers=cores, min_parallel=0, executor="thread"), repeats=repeats)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t_full = time_it(lambda: check_dataset(index, verbose=False), repeats=repeats)
        for name, t in [("scan", t_scan), ("check 1 core", t_one), ("decode only 1 core", t_decode),
                        (f"check {cores} processes", t_proc), (f"check {cores} threads", t_thread),
                        ("check_dataset default", t_full)]:
            print(f"{name:24s} {t.rate(n):9,.0f} images/s wall   ({t})")
        for name, c in [("check 1 core", cpu_one), (f"check {cores} processes", cpu_proc), (f"check {cores} threads", cpu_thread)]:
            print(f"{name:24s} {n / c:9,.0f} images per CPU-second")

        figures = [
            Figure("scan_dataset (listing, no decode), wall", t_scan.rate(n), "images/s"),
            Figure.at_least("check 1 core (read + sha256 + full decode + RGB + duplicate hashes), per CPU-second",
                            n / cpu_one, "images/s/core", 1000),
            Figure("report from the results (duplicate groups, near search, statistics), per CPU-second",
                   n / cpu_report, "images/s/core"),
            Figure("check 1 core, wall", t_one.rate(n), "images/s"),
            Figure("decode only (load_image_rgb), 1 core, wall", t_decode.rate(n), "images/s"),
            Figure(f"check_files, {cores} worker processes, wall", t_proc.rate(n), "images/s"),
            Figure(f"check_files, {cores} worker processes, per CPU-second", n / cpu_proc, "images/s/core"),
            Figure(f"check_files, {cores} threads, wall", t_thread.rate(n), "images/s"),
            Figure(f"check_files, {cores} threads, per CPU-second", n / cpu_thread, "images/s/core"),
            Figure("check_dataset, default settings, wall", t_full.rate(n), "images/s"),
        ]
        notes = (f"{n} real sample images (28x28 grayscale PNG). 'Per CPU-second' divides by the CPU time this process "
                 f"and its workers used (os.times), which stays meaningful on a shared machine where wall-clock rates "
                 f"depend on the neighbours; best of {repeats} runs. Processes vs threads informs "
                 f"`check_files(executor=...)` (default: threads).")
        for f in figures: print(f.row())
        if not args.no_write: print("appended to", append_results("Dataset check", figures, notes))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
