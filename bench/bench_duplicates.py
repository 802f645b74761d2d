"""Near duplicates: the threshold, recall and false positives on the whole real sample, and the cost.

On all 8,000 images of the embedded Fashion-MNIST sample (28x28 grayscale, all splits):

- recall: every image is re-encoded as JPEG quality 70 and resized to 0.8x (bicubic); the share of those
  copies within `NEAR_DUPLICATE_RMS` of their original (8x8 thumbnail RMS difference, gray levels);
- mirror images: the share of horizontally flipped copies within the threshold (a left-right symmetric
  garment's mirror image is the same picture);
- false positives: `duplicate_groups` on the originals alone (distinct images: any group is false),
  and the smallest thumbnail distance between two originals (the margin over the threshold);
- the alternative, a difference hash (`imagehash.dhash`, 64 bits): the same figures in bits, to show why
  it was not used here;
- cost per image: the thumbnail vs `imagehash.dhash` on a decoded image, and the grouping.

    .venv/bin/python bench/bench_duplicates.py            # appends a section to bench/RESULTS.md
    .venv/bin/python bench/bench_duplicates.py --quick --no-write
"""
from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Figure, append_results  # noqa: E402

from classifier_training.data.check import NEAR_DUPLICATE_RMS, FileCheck, image_thumbnail, near_duplicate_pairs  # noqa: E402
from classifier_training.data.sample import load_sample_arrays  # noqa: E402


def jpeg70(im):
    b = io.BytesIO(); im.save(b, format="JPEG", quality=70); return Image.open(b).convert("RGB")


def resized(im): return im.resize((round(im.width * .8), round(im.height * .8)), Image.Resampling.BICUBIC)
def flipped(im): return im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def rms(a: bytes, b: bytes) -> float:
    return float(np.sqrt(((np.frombuffer(a, np.uint8).astype(float) - np.frombuffer(b, np.uint8)) ** 2).mean()))


def cpu_rate(fn, items) -> float:
    start = time.process_time()
    for x in items: fn(x)
    return len(items) / max(time.process_time() - start, 1e-9)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 images instead of all")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to bench/RESULTS.md")
    args = parser.parse_args()
    import imagehash
    arrays = load_sample_arrays()
    pixels = np.concatenate([arrays[s][0] for s in ("train", "val", "test")])
    if args.quick: pixels = pixels[:2000]
    ims = [Image.fromarray(p).convert("RGB") for p in pixels]
    n = len(ims)
    thumbs = [image_thumbnail(im) for im in ims]
    hashes = [imagehash.dhash(im) for im in ims]
    figures, notes = [], []
    for name, f in (("JPEG quality 70", jpeg70), ("resized 0.8x", resized), ("mirrored", flipped)):
        copies = [f(im) for im in ims]
        d = np.array([rms(image_thumbnail(c), t) for c, t in zip(copies, thumbs)])
        bits = np.array([imagehash.dhash(c) - h for c, h in zip(copies, hashes)])
        share = float((d <= NEAR_DUPLICATE_RMS).mean() * 100)
        if name == "mirrored":
            figures.append(Figure(f"{name} copies within the threshold (symmetric garments)", share, "%"))
        else:
            figures.append(Figure.at_least(f"{name} copies found (thumbnail RMS <= {NEAR_DUPLICATE_RMS:g})",
                                           share, "%", 99))
        notes.append(f"{name}: thumbnail RMS max {d.max():.2f}, 99th percentile {np.percentile(d, 99):.2f}; "
                     f"dhash bits max {bits.max()}, 99th percentile {np.percentile(bits, 99):.0f}")
    matrix = np.frombuffer(b"".join(thumbs), np.uint8).reshape(n, -1)
    start = time.process_time()
    pairs = near_duplicate_pairs(matrix)
    t_pairs = time.process_time() - start
    figures.append(Figure.at_most(f"false near-duplicate pairs among the {n} sample originals", len(pairs), "pairs", 0))
    t = matrix.astype(np.float64)
    sq = (t * t).sum(1)
    nearest = np.full(n, np.inf)
    for i in range(0, n, 1000):
        d2 = sq[i:i + 1000, None] + sq[None] - 2 * t[i:i + 1000] @ t.T
        d2[np.arange(d2.shape[0]), np.arange(i, i + d2.shape[0])] = np.inf
        nearest[i:i + 1000] = np.sqrt(np.maximum(d2.min(1), 0) / t.shape[1])
    figures.append(Figure("smallest thumbnail RMS between two originals (margin over the threshold)",
                          float(nearest.min()), "gray levels"))
    h = np.array([int(str(x), 16) for x in hashes], dtype=np.uint64)
    near_bits = np.full(n, 64)
    for i in range(0, n, 1000):
        b = np.bitwise_count(h[i:i + 1000, None] ^ h[None]).astype(np.int64)
        b[np.arange(b.shape[0]), np.arange(i, i + b.shape[0])] = 64
        near_bits[i:i + 1000] = b.min(1)
    figures.append(Figure("dhash (64 bits): originals whose nearest other original is <= 6 bits away",
                          float((near_bits <= 6).mean() * 100), "%"))
    figures += [Figure("thumbnail (8x8 gray) per decoded image, 1 core", cpu_rate(image_thumbnail, ims), "images/s"),
                Figure("imagehash.dhash per decoded image, 1 core", cpu_rate(imagehash.dhash, ims), "images/s"),
                Figure(f"near_duplicate_pairs over {n} thumbnails, 1 core", n / max(t_pairs, 1e-9), "images/s")]
    for f in figures: print(f.row())
    for line in notes: print(line)
    text = (f"{n} real sample images (all splits). Threshold NEAR_DUPLICATE_RMS = {NEAR_DUPLICATE_RMS:g} gray levels "
            f"(RMS over the 8x8 grayscale thumbnail, 0-255). " + "; ".join(notes) + ". A difference hash makes "
            "unrelated sample originals collide (centred garments on black) while JPEG copies drift by many bits, "
            "so no bit threshold separates them; the thumbnail distance does, with the margin shown.")
    if not args.no_write: print("appended to", append_results("Near duplicates", figures, text))


if __name__ == "__main__":
    main()
