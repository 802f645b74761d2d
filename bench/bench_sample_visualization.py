"""Sample visualization: what `every_n_epochs` saves and what `cam=true` costs, in the default run.

The default run (embedded sample, resnet10t at 32 px, 1,000 validation images, 6 epochs) is rebuilt from
the default config; per validation epoch the callback (a) collects candidates from every batch (always),
(b) draws and saves the two grids (what every_n_epochs skips) and, with cam=true, (c) computes Grad-CAM
overlays for both grids on the training thread and (d) draws their two `*_cam.png` twins. Each part is
timed on its own (median of repeats, wall and this process's CPU time), with the model's validation
forward over the same epoch as the yardstick. The saving of every_n_epochs=n over a 6-epoch run is
(6 - drawn epochs) x (b), where drawn epochs = those with (epoch + 1) % n == 0, plus the last one.

    .venv/bin/python bench/bench_sample_visualization.py            # appends a section to bench/RESULTS.md
    .venv/bin/python bench/bench_sample_visualization.py --no-write
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Figure, append_results, scratch_dir  # noqa: E402

from classifier_training.callbacks.sample_visualization import SampleVisualizationCallback  # noqa: E402
from classifier_training.config import compose_config  # noqa: E402
from classifier_training.training import build_datamodule, build_model  # noqa: E402


def timed(fn, repeats: int) -> tuple[float, float]:
    "Median wall and CPU seconds of `fn()` over `repeats` calls (after one warm-up)."
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w); cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    cfg = compose_config(["data.verbose=false", "data.num_workers=0"])
    dm = build_datamodule(cfg); dm.setup("fit")
    model = build_model(cfg, dm).eval()
    epochs = int(cfg.trainer.max_epochs)
    node = {k: v for k, v in cfg.callbacks.sample_visualization.items() if k != "_target_"}
    cb = SampleVisualizationCallback(**{**node, "background": False})
    batches = list(dm.val_dataloader())
    with torch.no_grad(): logits = [model(b["images"]) for b in batches]
    names, pre = dm.class_names, dm.preprocessing

    def forward():
        with torch.no_grad():
            for b in batches: model(b["images"])

    def collect():
        cb._start("val", model)
        for b, lg in zip(batches, logits):
            cb._update("val", {"logits": lg, "targets": b["labels"], "indices": b["indices"]}, b)

    collect()
    samples = cb._select_samples(cb._samples["val"])
    rank = types.SimpleNamespace(all_gather=lambda top: top)  # one process: the gather is identity
    entries = cb._gather_top("val", rank)
    out = scratch_dir("bench_viz_")
    draw = lambda: cb._draw(samples, entries, dm.val_dataset, names, pre, out, "val")
    cams = cb._cam_images(model, samples, entries, dm.val_dataset, pre)
    cam = lambda: cb._cam_images(model, samples, entries, dm.val_dataset, pre)
    draw_cam_only = lambda: (cb._samples_grid(samples, names, pre, "t", cams["samples"]).save(
        out / "a.png", compress_level=1), cb._top_losses_grid(entries, dm.val_dataset, names, pre,
                                                              "t", cams["top"]).save(
        out / "b.png", compress_level=1))
    t_fwd, c_fwd = timed(forward, args.repeats)
    t_col, c_col = timed(collect, args.repeats)
    t_draw, c_draw = timed(draw, args.repeats)
    t_cam, c_cam = timed(cam, args.repeats)
    t_dcam, c_dcam = timed(draw_cam_only, args.repeats)
    drawn = lambda n: sum(1 for e in range(epochs) if (e + 1) % n == 0 or e == epochs - 1)
    figures = [Figure("validation forward, 1 epoch (yardstick)", t_fwd, "s"),
               Figure("collect candidates, 1 epoch (always)", t_col * 1e3, "ms"),
               Figure("draw + save both grids, 1 epoch (every_n_epochs skips it)", t_draw * 1e3, "ms"),
               Figure("  same, CPU time", c_draw * 1e3, "ms"),
               Figure(f"every_n_epochs=3 saves over the {epochs}-epoch default run",
                      (epochs - drawn(3)) * t_draw, "s"),
               Figure(f"every_n_epochs={epochs} saves over the default run",
                      (epochs - drawn(epochs)) * t_draw, "s"),
               Figure(f"Grad-CAM overlays, {len(samples['targets'] and torch.cat(samples['targets']))}"
                      f" + {len(entries)} images, 1 epoch (training thread)", t_cam * 1e3, "ms"),
               Figure("  same, CPU time", c_cam * 1e3, "ms"),
               Figure("draw + save the two *_cam.png grids, 1 epoch", t_dcam * 1e3, "ms"),
               Figure("cam=true, whole default run (CAM + twins, every epoch)",
                      epochs * (t_cam + t_dcam), "s")]
    for f in figures: print(f.row())
    notes = (f"Default config (resnet10t untrained, 32 px, {len(dm.val_dataset)} val images, "
             f"{epochs} epochs, num_samples={cb.num_samples}, num_top_losses={cb.num_top_losses}, "
             f"cell_size={cb.cell_size}); medians of {args.repeats} repeats, torch threads "
             f"{torch.get_num_threads()}. Drawing runs on the writer thread in a real run "
             "(background=true), so on a 2-core machine what it saves in wall time is at most "
             "its CPU time; the CAM runs on the training thread. The machine was shared.")
    if not args.no_write:
        append_results("Sample visualization: every_n_epochs and Grad-CAM", figures, notes)


if __name__ == "__main__":
    main()
