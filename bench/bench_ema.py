"""Cost of one EMA update (EMACallback) as a share of one training step.

For each backbone: a real training step (forward + cross-entropy + backward + AdamW step) on a batch of
real sample images (Fashion-MNIST, resized to the input size, 3 channels) against one EMA update of the
same model (`AveragedModel.update_parameters` with EMACallback's fused `torch._foreach_lerp_` update, the
exact call the callback makes after each optimizer step), timed in alternation so that load changes on a
shared machine hit both alike. Aim: update <= 3 % of a step.

Two clocks: wall time (perf_counter, through bench/_harness.py) and the process's CPU time (process_time,
all threads). On a machine shared with other jobs, wall times swing with the load (waiting for a core counts),
while CPU time counts only the work done, so the CPU-time share is the stable figure there; on an idle machine
or a GPU (CUDA synchronised after each call) the two agree.

    .venv/bin/python bench/bench_ema.py                 # CPU; appends a section to bench/RESULTS.md
    .venv/bin/python bench/bench_ema.py --quick --no-write
    .venv/bin/python bench/bench_ema.py --threads 1     # busy shared CPU: one thread, CPU-time share is stable
    .venv/bin/python bench/bench_ema.py --device cuda   # on a GPU machine
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Figure, append_results, time_interleaved  # noqa: E402

import lightning.pytorch as pl  # noqa: E402
import timm  # noqa: E402

from classifier_training.callbacks.ema import EMACallback  # noqa: E402
from classifier_training.data.sample import load_sample_arrays  # noqa: E402


class _Wrapped(pl.LightningModule):
    "The smallest LightningModule around a timm model, so that EMACallback.setup runs as in a real fit."
    def __init__(self, backbone: torch.nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, x): return self.backbone(x)


def real_batch(batch_size: int, image_size: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    "Sample images as a normalised (B, 3, S, S) float batch and their labels."
    images, labels = load_sample_arrays()["train"]
    x = torch.from_numpy(images[:batch_size].astype(np.float32) / 255.0)[:, None]
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    x = (x - 0.5) / 0.25
    return x.to(device), torch.from_numpy(labels[:batch_size]).to(device)


def measure(backbone: str, image_size: int, batch_size: int, device: str, repeats: int) -> dict:
    torch.manual_seed(0)
    module = _Wrapped(timm.create_model(backbone, pretrained=False, num_classes=10)).to(device).train()
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    x, y = real_batch(batch_size, image_size, device)
    ema = EMACallback(decay=0.999, warmup_steps=100)
    ema.setup(None, module, "fit")  # creates the AveragedModel on the model's device, as in fit
    ema._average_model.update_parameters(module)  # first update is a copy; time the real (lerp) ones
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(module(x), y).backward()
        opt.step()
        sync()

    def update():
        ema._average_model.update_parameters(module)
        sync()

    t_step, t_update = time_interleaved([step, update], repeats=repeats, warmup=2)
    cpu_step, cpu_update = [], []
    for _ in range(repeats):
        for fn, out in ((step, cpu_step), (update, cpu_update)):
            start = time.process_time()
            fn()
            out.append(time.process_time() - start)
    params = sum(p.numel() for p in module.parameters())
    return {"backbone": backbone, "image_size": image_size, "batch_size": batch_size, "params": params,
            "step_ms": t_step.median * 1e3, "update_ms": t_update.median * 1e3,
            "share": t_update.median / t_step.median, "spread": max(t_step.spread, t_update.spread),
            "cpu_step_ms": statistics.median(cpu_step) * 1e3, "cpu_update_ms": statistics.median(cpu_update) * 1e3,
            "cpu_share": statistics.median(cpu_update) / statistics.median(cpu_step)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one backbone, 64 px, few repeats")
    ap.add_argument("--no-write", action="store_true", help="print only; do not append to bench/RESULTS.md")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's); 1 avoids "
                    "OpenMP spin-waiting inflating CPU times on a busy machine")
    args = ap.parse_args(argv)
    if args.threads: torch.set_num_threads(args.threads)
    if args.quick: cases, repeats = [("resnet18", 64, 32)], 3
    elif args.device.startswith("cuda"):
        cases, repeats = [("resnet18", 224, 64), ("mobilenetv3_large_100", 224, 64), ("resnet50", 224, 64)], 20
    else: cases, repeats = [("resnet18", 64, 32), ("mobilenetv3_large_100", 64, 32), ("resnet18", 128, 32)], 5
    rows = [measure(b, s, bs, args.device, repeats) for b, s, bs in cases]
    for r in rows:
        print(f"{r['backbone']:>24} {r['image_size']:>4}px bs{r['batch_size']}: step {r['step_ms']:8.1f} ms, "
              f"EMA update {r['update_ms']:6.2f} ms = {100 * r['share']:.2f} % of a step (spread {r['spread']:.0%}); "
              f"CPU time: step {r['cpu_step_ms']:.1f} ms, update {r['cpu_update_ms']:.2f} ms = {100 * r['cpu_share']:.2f} %")
    if not args.no_write:
        figures = []
        for r in rows:
            case = f"{r['backbone']} {r['image_size']}px bs{r['batch_size']} ({args.device}, {torch.get_num_threads()} threads)"
            figures.append(Figure.at_most(f"EMA update / step, wall time, {case}", 100 * r["share"], "%", 3))
            if not args.device.startswith("cuda"):
                figures.append(Figure.at_most(f"EMA update / step, CPU time, {case}", 100 * r["cpu_share"], "%", 3))
        notes = "\n".join(f"- {r['backbone']} ({r['params'] / 1e6:.1f} M params) {r['image_size']}px bs{r['batch_size']}: "
                          f"wall: step {r['step_ms']:.1f} ms, update {r['update_ms']:.2f} ms (spread {r['spread']:.0%}); "
                          f"CPU time: step {r['cpu_step_ms']:.1f} ms, update {r['cpu_update_ms']:.2f} ms" for r in rows)
        append_results(f"EMA update cost ({args.device})", figures, notes=notes)


if __name__ == "__main__":
    main()
