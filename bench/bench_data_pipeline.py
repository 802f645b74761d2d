"""Train-transform throughput of our data pipeline against a bare Pillow decode + augment loop.

Both read the same real JPEG files (scikit-learn's two sample photos, cropped and resized to several sizes,
500x375 among them) on one core (torch threads = 1), and produce the same thing: a RandomResizedCrop to 224
(bicubic), a random flip, colour jitter 0.2, a float tensor normalised with the ImageNet mean/std.

- ours: `ImageClassificationDataset(records, class_to_idx, build_train_transform(pre))[i]`, i.e. `load_image_rgb`
  (full decode, EXIF orientation, RGB) + torchvision.transforms.v2 on the PIL image;
- bare: `Image.open().convert("RGB")`, crop+resize in one `Image.resize(box=...)`, `ImageEnhance`, numpy -> torch.

Aim: ours >= 0.9 x bare. Also measured: the same dataset with torchvision's stock v2 steps (RandomResizedCrop,
ColorJitter, ToImage/ToDtype/Normalize) instead of our PIL-direct ones, what `Image.draft()` (JPEG DCT-domain downscaling during decode) would
gain, and DataLoader num_workers 0 vs 2 on the embedded sample through the datamodule.

    .venv/bin/python bench/bench_data_pipeline.py            # appends a section to bench/RESULTS.md
    .venv/bin/python bench/bench_data_pipeline.py --quick --no-write
"""
from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance
from torchvision.transforms import v2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Figure, append_results, machine, time_interleaved, time_it  # noqa: E402

from classifier_training.data.datasets import ImageClassificationDataset  # noqa: E402
from classifier_training.data.records import SampleRecord  # noqa: E402
from classifier_training.data.transforms import build_train_transform, preprocessing_for_backbone  # noqa: E402

SIZES = ((320, 240), (500, 375), (640, 427), (1280, 853), (2000, 1333))  # (width, height)


def make_jpegs(folder: Path, per_size: int) -> dict[tuple[int, int], list[Path]]:
    "Real photos (china.jpg, flower.jpg) cropped at several offsets and resized to each size, JPEG quality 90."
    from sklearn.datasets import load_sample_images
    photos = [Image.fromarray(a) for a in load_sample_images().images]  # 640x427 each
    rng = random.Random(0)
    out = {}
    for w, h in SIZES:
        paths = []
        for n in range(per_size):
            photo = photos[n % len(photos)]
            cw = rng.randint(int(photo.width * 0.7), photo.width)
            ch = min(photo.height, int(round(cw * h / w)))
            left, top = rng.randint(0, photo.width - cw), rng.randint(0, photo.height - ch)
            img = photo.resize((w, h), Image.BICUBIC, box=(left, top, left + cw, top + ch))
            if n % 4 == 1: img = img.transpose(Image.FLIP_LEFT_RIGHT)
            path = folder / f"{w}x{h}_{n:03d}.jpg"
            img.save(path, quality=90)
            paths.append(path)
        out[(w, h)] = paths
    return out


def bare_train_sample(path: Path, size: int, mean: torch.Tensor, std: torch.Tensor, draft: int | None = None,
                      scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), jitter=0.2) -> torch.Tensor:
    "What a hand-written Pillow loop does: decode, random resized crop, flip, jitter, to normalised tensor."
    im = Image.open(path)
    if draft: im.draft("RGB", (draft, draft))
    im = im.convert("RGB")
    width, height = im.size
    area, log_r = width * height, (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * random.uniform(*scale)
        ar = math.exp(random.uniform(*log_r))
        w, h = int(round(math.sqrt(target * ar))), int(round(math.sqrt(target / ar)))
        if 0 < w <= width and 0 < h <= height:
            top, left = random.randint(0, height - h), random.randint(0, width - w)
            break
    else:
        w, h, top, left = width, height, 0, 0
    im = im.resize((size, size), Image.BICUBIC, box=(left, top, left + w, top + h))
    if random.random() < 0.5: im = im.transpose(Image.FLIP_LEFT_RIGHT)
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        im = enhance(im).enhance(random.uniform(1 - jitter, 1 + jitter))
    x = torch.from_numpy(np.array(im)).permute(2, 0, 1).float().div_(255)
    return x.sub_(mean).div_(std)


def decode_only(paths, draft: int | None):
    for p in paths:
        im = Image.open(p)
        if draft: im.draft("RGB", (draft, draft))
        im.convert("RGB")


def draft_request(image_size: int, min_scale: float) -> int:
    "Smallest decoded side that still gives the smallest RandomResizedCrop >= image_size pixels per side."
    return int(math.ceil(image_size / math.sqrt(min_scale)))


def bench_transforms(files, repeats: int, image_size: int = 224):
    pre = preprocessing_for_backbone("resnet18", image_size=image_size, interpolation="bicubic")
    tf = build_train_transform(pre, hflip=True, color_jitter=0.2)
    mean, std = torch.tensor(pre.mean).view(3, 1, 1), torch.tensor(pre.std).view(3, 1, 1)
    stock = v2.Compose([v2.RandomResizedCrop(image_size, interpolation=v2.InterpolationMode.BICUBIC), v2.RandomHorizontalFlip(),
                        v2.ColorJitter(0.2, 0.2, 0.2), v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                        v2.Normalize(list(pre.mean), list(pre.std))])
    figures = []
    for (w, h), paths in files.items():
        records = [SampleRecord(p, "photo") for p in paths]
        ours_ds, stock_ds = (ImageClassificationDataset(records, {"photo": 0}, t) for t in (tf, stock))
        t_ours, t_stock, t_bare = time_interleaved([lambda: [ours_ds[i]["image"] for i in range(len(paths))],
                                                    lambda: [stock_ds[i]["image"] for i in range(len(paths))],
                                                    lambda: [bare_train_sample(p, image_size, mean, std) for p in paths]],
                                                   repeats=repeats)
        n = len(paths)
        ratio, stock_ratio = t_ours.rate(n) / t_bare.rate(n), t_stock.rate(n) / t_bare.rate(n)
        figures.append(Figure.at_least(f"ours / bare, {w}x{h} JPEG -> {image_size}", ratio, "x", 0.9))
        figures.append(Figure(f"stock torchvision v2 steps / bare, {w}x{h} JPEG -> {image_size}", stock_ratio, "x"))
        figures.append(Figure(f"ours, {w}x{h} JPEG -> {image_size}", t_ours.rate(n), "img/s/core"))
        figures.append(Figure(f"bare, {w}x{h} JPEG -> {image_size}", t_bare.rate(n), "img/s/core"))
        print(f"{w}x{h}: ours {t_ours.rate(n):.0f} img/s ({t_ours}), stock v2 {t_stock.rate(n):.0f} img/s, "
              f"bare {t_bare.rate(n):.0f} img/s ({t_bare}); ours/bare {ratio:.2f}, stock/bare {stock_ratio:.2f}")
    return figures


def bench_draft(files, repeats: int):
    figures = []
    for image_size in (224, 64):
        request = draft_request(image_size, 0.08)
        for (w, h), paths in files.items():
            if (w, h) not in ((500, 375), (2000, 1333)): continue
            probe = Image.open(paths[0]); probe.draft("RGB", (request, request))
            if probe.size == (w, h):
                print(f"draft {w}x{h} -> need {request}px: Pillow cannot reduce (needs a side >= 2 x {request}); no gain")
                continue
            full, drafted = time_interleaved([lambda: decode_only(paths, None), lambda: decode_only(paths, request)],
                                             repeats=repeats)
            gain = full.median / drafted.median
            figures.append(Figure(f"Image.draft gain, decode {w}x{h} as {probe.size[0]}x{probe.size[1]} for a {image_size}px "
                                  f"crop (draft >= {request}px)", gain, "x"))
            print(f"draft {w}x{h} -> need {request}px: full {full.rate(len(paths)):.0f} img/s, drafted "
                  f"{drafted.rate(len(paths)):.0f} img/s, gain {gain:.2f}x")
    return figures


def bench_workers(repeats: int, batches: int):
    "One pass of `batches` train batches (bs 64, 32 px) of the embedded sample with num_workers 0 and 2."
    from classifier_training.data.datamodule import ImageClassificationDataModule
    figures = {}
    for workers in (0, 2):
        dm = ImageClassificationDataModule(image_size=32, batch_size=64, num_workers=workers, verbose=False)
        dm.setup()
        def one_pass():
            loader = dm.train_dataloader()  # persistent workers: started once, reused by later passes
            for n, _ in zip(range(batches), loader): pass
        t = time_it(one_pass, repeats=repeats, warmup=1)
        figures[workers] = t.rate(batches * 64)
        print(f"num_workers={workers}: {figures[workers]:.0f} img/s ({t})")
        dm.teardown("fit")
    return [Figure(f"train loader, sample 28x28 PNG -> 32, bs 64, num_workers={w}", v, "img/s") for w, v in figures.items()]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer files and repeats (a smoke run)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to bench/RESULTS.md")
    parser.add_argument("--skip-workers", action="store_true", help="skip the DataLoader num_workers measurement")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    random.seed(0); torch.manual_seed(0)
    per_size, repeats = (8, 2) if args.quick else (24, 5)
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        files = make_jpegs(Path(tmp), per_size)
        figures = bench_transforms(files, repeats) + bench_draft(files, repeats)
    if not args.skip_workers: figures += bench_workers(repeats=3 if not args.quick else 1, batches=30 if not args.quick else 5)
    notes = (f"{per_size} JPEG files per size (quality 90) made from scikit-learn's sample photos; torch threads 1; "
             "ours, stock and bare timed interleaved (the machine is shared; per-timing spreads are printed by the script); "
             "bare decodes with torchvision's pil_loader idiom Image.open().convert('RGB'); "
             "draft gain = full decode time / drafted decode time, with the draft size that keeps the smallest "
             "RandomResizedCrop (scale 0.08) at full resolution. Our pipeline does not use Image.draft "
             "(load_image_rgb decodes fully, and evaluation must match the torch-free predictor exactly).")
    if not args.no_write: print("appended to", append_results("Data pipeline: train transform and loader", figures, notes))


if __name__ == "__main__":
    main()
