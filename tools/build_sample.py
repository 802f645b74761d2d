"""Rebuild the embedded Fashion-MNIST sample shipped in classifier_training/assets/.

Source: Debian package `dataset-fashion-mnist` (MIT licence, Zalando Research), installed with
`apt-get install -y dataset-fashion-mnist`. The sample takes, per class and with a fixed seed,
600 train + 100 val images from Fashion-MNIST's training set and 100 test images from its test set,
so the sample's test split never overlaps the images it trains on.

    python tools/build_sample.py            # writes classifier_training/assets/fashion_mnist_sample.npz
"""
import argparse
import gzip
import hashlib
from pathlib import Path

import numpy as np

SOURCE_DIR = Path("/usr/share/datasets/fashion-mnist")
OUT = Path(__file__).resolve().parents[1] / "classifier_training" / "assets" / "fashion_mnist_sample.npz"
CLASS_NAMES = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"]


def read_idx(path: Path) -> np.ndarray:
    "Read an IDX file (the MNIST container format) into a numpy array."
    data = gzip.decompress(path.read_bytes())
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def pick(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    "Indices of `per_class` images of every class, in a seeded random order."
    chosen = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(len(CLASS_NAMES))]
    return np.sort(np.concatenate(chosen))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=600)
    parser.add_argument("--val", type=int, default=100)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--seed", type=int, default=20260101)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    train_images = read_idx(SOURCE_DIR / "train-images-idx3-ubyte.gz")
    train_labels = read_idx(SOURCE_DIR / "train-labels-idx1-ubyte.gz")
    test_images = read_idx(SOURCE_DIR / "t10k-images-idx3-ubyte.gz")
    test_labels = read_idx(SOURCE_DIR / "t10k-labels-idx1-ubyte.gz")
    fit_idx = pick(train_labels, args.train + args.val, rng)
    rng.shuffle(fit_idx)
    is_val = np.zeros(len(fit_idx), bool)
    for c in range(len(CLASS_NAMES)):
        is_val[np.flatnonzero(train_labels[fit_idx] == c)[: args.val]] = True
    train_idx, val_idx = np.sort(fit_idx[~is_val]), np.sort(fit_idx[is_val])
    test_idx = pick(test_labels, args.test, rng)
    arrays = dict(
        train_images=train_images[train_idx], train_labels=train_labels[train_idx], train_source_index=train_idx,
        val_images=train_images[val_idx], val_labels=train_labels[val_idx], val_source_index=val_idx,
        test_images=test_images[test_idx], test_labels=test_labels[test_idx], test_source_index=test_idx,
        class_names=np.array(CLASS_NAMES),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, sha256 {digest})")
    for split in ("train", "val", "test"):
        print(split, np.bincount(arrays[f"{split}_labels"], minlength=len(CLASS_NAMES)).tolist())


if __name__ == "__main__":
    main()
