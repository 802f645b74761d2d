"""Training throughput of `ImageClassifier` in a Lightning `Trainer` against a plain PyTorch loop.

Both sides train the same timm backbone (fresh weights, same seed) on the same real images (the embedded
Fashion-MNIST sample's train split, prepared once with the library's eval transform and kept in memory, so
image decoding does not dilute the difference) with the same batch size, loss (cross-entropy with label
smoothing), optimiser (AdamW with the same no-decay parameter groups) and per-step warm-up + cosine schedule.

- Lightning: `Trainer.fit` of an `ImageClassifier` with everything the module does on every step (torchmetrics
  accuracy, epoch-level logging, the scheduler); no progress bar, logger, checkpointing or validation.
- Plain: `for batch in loader: forward, loss, zero_grad, backward, step, scheduler.step()`.

Runs alternate (Lightning, plain, Lightning, plain, ...) so that load changes on a shared machine hit both
alike. On a machine busy with other work, wall times swing by 30 % from run to run; `--clock cpu` times this
process's CPU seconds instead (with one torch thread that is the work done, whatever the load). The headline ratio is steady-state images/s (the training epoch, timed from the first to the last
batch hook; plain: the same number of steps), Lightning / plain; aim >= 0.95. The whole `fit()` call, with
its one-off setup, is reported too.

    .venv/bin/python bench/bench_model_throughput.py                    # appends a section to bench/RESULTS.md
    .venv/bin/python bench/bench_model_throughput.py --steps 20 --repeats 2 --no-write
    .venv/bin/python bench/bench_model_throughput.py --backbone resnet18 --device cuda --steps 200
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_model_throughput.py --clock cpu   # a busy shared CPU machine
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Figure, append_results  # noqa: E402

import lightning.pytorch as pl  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

from classifier_training.data.sample import load_sample_arrays  # noqa: E402
from classifier_training.data.transforms import build_eval_transform, preprocessing_for_backbone  # noqa: E402
from classifier_training.model import (ImageClassifier, build_backbone, build_optimizer,  # noqa: E402
                                       warmup_cosine_factor, weight_decay_param_groups)

warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*LeafSpec.*")
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)


def sample_tensors(backbone: str, image_size: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    "The first `n` real train images of the sample through the library's eval transform, and their labels."
    images, labels = load_sample_arrays()["train"]
    tf = build_eval_transform(preprocessing_for_backbone(backbone, image_size))
    x = torch.stack([tf(Image.fromarray(a, mode="L")) for a in images[:n]])
    return x, torch.as_tensor(labels[:n])


def loader(x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int) -> torch.utils.data.DataLoader:
    ds = torch.utils.data.TensorDataset(x, y, torch.arange(len(y)))
    collate = lambda items: {"images": torch.stack([i[0] for i in items]), "labels": torch.stack([i[1] for i in items]),
                             "indices": torch.stack([i[2] for i in items])}
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, drop_last=True, collate_fn=collate,
                                       generator=torch.Generator().manual_seed(seed))


def clock(kind: str) -> float:
    "Seconds on the wall clock, or CPU seconds of this process (steadier on a shared machine with 1 torch thread)."
    return time.perf_counter() if kind == "wall" else time.process_time()


class EpochTimer(pl.Callback):
    "Time from the start of the first training batch to the end of the last (steady state, no setup)."
    def __init__(self, kind: str): self.kind = kind

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            self._sync(pl_module)
            self.start = clock(self.kind)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._sync(pl_module)
        self.end, self.batches = clock(self.kind), batch_idx + 1

    @staticmethod
    def _sync(module):
        if module.device.type == "cuda": torch.cuda.synchronize()


def run_lightning(args, x, y, seed: int) -> tuple[float, float]:
    "(steady-state seconds over the N training batches, whole fit() seconds) of one Lightning run."
    pl.seed_everything(seed, verbose=False)
    model = ImageClassifier(10, backbone=args.backbone, image_size=args.image_size, lr=args.lr, warmup_epochs=0.2)
    timer = EpochTimer(args.clock)
    trainer = pl.Trainer(accelerator=args.device, devices=1, max_epochs=1, limit_train_batches=args.steps,
                         limit_val_batches=0, num_sanity_val_steps=0, enable_progress_bar=False,
                         enable_model_summary=False, logger=False, enable_checkpointing=False, callbacks=[timer])
    start = clock(args.clock)
    trainer.fit(model, train_dataloaders=loader(x, y, args.batch_size, seed))
    whole = clock(args.clock) - start
    assert timer.batches == args.steps
    return timer.end - timer.start, whole


def run_plain(args, x, y, seed: int) -> tuple[float, float]:
    "(steady-state seconds, whole-run seconds) of the same training in a hand-written loop."
    start_all = clock(args.clock)
    torch.manual_seed(seed)
    device = torch.device("cuda" if args.device == "cuda" else "cpu")
    net = build_backbone(args.backbone, 10).to(device).train()
    opt = build_optimizer(weight_decay_param_groups(net, 0.05), "adamw", lr=args.lr)
    warmup = round(0.2 * args.steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine_factor(s, warmup, args.steps, 0.01))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for i, batch in enumerate(loader(x, y, args.batch_size, seed)):
        if i == args.steps: break
        if i == 0:
            sync()
            start = clock(args.clock)
        images, labels = batch["images"].to(device), batch["labels"].to(device)
        loss = F.cross_entropy(net(images), labels, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    sync()
    end = clock(args.clock)
    return end - start, end - start_all


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="resnet10t")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=30, help="training steps per run")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per side (after one warm-up run each)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                    help="wall: elapsed time (what a user waits); cpu: this process's CPU time, steadier on a busy shared "
                         "machine (use with OMP_NUM_THREADS=1)")
    ap.add_argument("--no-write", action="store_true", help="print only; do not append to bench/RESULTS.md")
    args = ap.parse_args()

    x, y = sample_tensors(args.backbone, args.image_size, args.steps * args.batch_size)
    results = {"lightning": [], "plain": []}
    for r in range(args.repeats + 1):  # run 0 warms up both sides (allocator, kernels, imports)
        for name, fn in (("lightning", run_lightning), ("plain", run_plain)):
            steady, whole = fn(args, x, y, seed=r)
            if r: results[name].append((steady, whole))
            print(f"run {r} {name:9s}: {args.steps * args.batch_size / steady:7.1f} img/s steady, fit {whole:.2f} s"
                  + ("" if r else "  (warm-up, not counted)"), flush=True)

    # the steady window spans the first batch's start to the last batch's end: all `steps` batches.
    # Each Lightning run is paired with the plain run right after it; the ratio is the median of the pair ratios,
    # which cancels most of the slow drifts in machine load.
    images = args.steps * args.batch_size
    rate = lambda name, i: statistics.median(images / t[i] for t in results[name])
    pair_ratios = lambda i: [p[i] / l[i] for l, p in zip(results["lightning"], results["plain"])]
    l_steady, p_steady = rate("lightning", 0), rate("plain", 0)
    ratio, ratio_whole = statistics.median(pair_ratios(0)), statistics.median(pair_ratios(1))
    spread = max(pair_ratios(0)) - min(pair_ratios(0))
    print(f"\n{args.backbone} @ {args.image_size} px, batch {args.batch_size}, {args.steps} steps, {args.device}, "
          f"torch threads {torch.get_num_threads()}, {args.clock} clock")
    print(f"steady state: Lightning {l_steady:.1f} img/s, plain {p_steady:.1f} img/s; "
          f"ratio Lightning / plain {ratio:.3f} (median of {args.repeats} pairs, range {spread:.3f}; aim >= 0.95)")
    print(f"whole fit() including setup: ratio {ratio_whole:.3f}")
    if not args.no_write:
        tag = f"{args.backbone} @ {args.image_size} px, batch {args.batch_size}, {args.device}, {args.clock} clock"
        figures = [Figure(f"Lightning ImageClassifier, steady ({tag})", l_steady, "img/s"),
                   Figure(f"plain PyTorch loop, steady ({tag})", p_steady, "img/s"),
                   Figure.at_least("throughput ratio Lightning / plain, steady", ratio, "x", 0.95),
                   Figure("throughput ratio Lightning / plain, whole fit() incl. setup", ratio_whole, "x")]
        append_results("Model training throughput: Lightning vs plain PyTorch", figures,
                       notes=f"{args.steps} steps per run; {args.repeats} alternating pairs after one warm-up pair, ratio = "
                             f"median of the pair ratios (range {spread:.3f}); "
                             f"{args.clock} clock, {torch.get_num_threads()} torch thread(s); "
                             "in-memory real sample images; same backbone, seed, loss, optimiser groups and schedule. "
                             "The Lightning side also updates torchmetrics accuracy and logs epoch-level metrics.")


if __name__ == "__main__":
    main()
