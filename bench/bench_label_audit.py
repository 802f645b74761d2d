"""Label audit (classifier-audit) on the embedded sample with 5 % of the training labels flipped.

Builds a copy of the embedded Fashion-MNIST sample (6,000 train images, 10 classes) whose train split has
5 % of its images moved into another class folder, chosen at random with a fixed seed (never shipped:
it lives in a temporary folder), runs the audit with the default recipe (`classifier_training.audit.main`:
K = 5 folds, 2 epochs each, resnet10t at 32 px) and scores the ranking against the planted errors:

- precision@k: share of planted images among the k most suspicious, k = number planted (= recall@k);
- recall / precision of cleanlab's flagged set (find_label_issues);
- wall time and the CPU time of this process (the machine is shared: wall time moves with the load).

    .venv/bin/python bench/bench_label_audit.py                  # appends a section to bench/RESULTS.md
    .venv/bin/python bench/bench_label_audit.py --epochs 3 --no-write
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Figure, append_results, scratch_dir  # noqa: E402

from classifier_training.audit import main as audit_main  # noqa: E402
from classifier_training.data.datamodule import SAMPLE_CROP_PCT, SAMPLE_IMAGE_SIZE  # noqa: E402
from classifier_training.data.sample import materialize_sample  # noqa: E402


def flipped_copy(dest: Path, fraction: float, seed: int) -> tuple[Path, set[str]]:
    "A copy of the sample whose train split has `fraction` of its images in a wrong class folder."
    src = materialize_sample()
    root = dest / "data"
    shutil.copytree(src / "train", root / "train")
    for split in ("val", "test"):  # kept apart, so that every train image is audited
        (root / split).symlink_to(src / split, target_is_directory=True)
    rng = np.random.default_rng(seed)
    files = sorted((root / "train").glob("*/*.png"))
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    moved = set()
    for i in rng.choice(len(files), round(fraction * len(files)), replace=False):
        f = files[i]
        wrong = rng.choice([c for c in classes if c != f.parent.name])
        shutil.move(f, root / "train" / wrong / f.name)
        moved.add(f.name)
    return root, moved


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fraction", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--no-write", action="store_true")
    args, overrides = ap.parse_known_args()
    work = scratch_dir("bench_audit_")
    try:
        root, planted = flipped_copy(work, args.fraction, args.seed)
        t0, c0 = time.perf_counter(), os.times()
        # the sample's own preprocessing (32 px, no crop), as data.root=null gives the default run
        result = audit_main([f"data.root={root}", f"data.cache_dir={work / 'cache'}",
                             "data.verbose=false", f"data.image_size={SAMPLE_IMAGE_SIZE}",
                             f"data.preprocessing={{crop_pct:{SAMPLE_CROP_PCT}}}", *overrides,
                             "--folds", str(args.folds),
                             "--epochs", str(args.epochs), "--out", str(work / "audit")])
        wall, c1 = time.perf_counter() - t0, os.times()
        cpu = (c1.user - c0.user) + (c1.system - c0.system) + (c1.children_user - c0.children_user)
        k = len(planted)
        top = {Path(r["file"]).name for r in result.rows[:k]}
        flagged = {Path(r["file"]).name for r in result.rows if r["is_label_issue"]}
        p_at_k = len(top & planted) / k
        recall = len(flagged & planted) / k
        precision = len(flagged & planted) / max(1, len(flagged))
        s = result.summary
        figures = [Figure.at_least(f"precision@k (k = {k} flipped = recall@k)", p_at_k, "", 0.7),
                   Figure.at_least("recall of cleanlab's flagged set", recall, "", 0.6),
                   Figure("precision of cleanlab's flagged set", precision, ""),
                   Figure("images flagged", len(flagged), "images"),
                   Figure("out-of-fold accuracy against the given labels", s["oof_accuracy"], ""),
                   Figure("audit wall time (2 cores, shared)", wall, "s"),
                   Figure("audit CPU time (this process)", cpu, "s")]
        for f in figures: print(f.row())
        notes = (f"{s['images']} train images of the embedded sample, {k} ({args.fraction:.0%}) moved "
                 f"to a random wrong class (seed {args.seed}); classifier-audit --folds {args.folds} "
                 f"--epochs {args.epochs}, default recipe ({s['backbone']}, {s['image_size']} px)"
                 f"{', overrides ' + ' '.join(overrides) if overrides else ''}. Wall time includes "
                 "the data check of the copy; the machine's 2 cores were shared with other jobs.")
        if not args.no_write: append_results("Label audit (classifier-audit)", figures, notes)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
