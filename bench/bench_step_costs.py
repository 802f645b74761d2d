"""Where an epoch's time goes, in CPU seconds of one thread (steady on a shared machine, unlike wall time).

Each piece of the default run (the embedded sample, resnet10t, 32 px, batch 64) is timed with
`time.process_time` in one process with one torch thread, the variants interleaved round after round,
and put beside the training step it rides on:

- the bare training step (forward, loss, backward, AdamW), NCHW and channels_last;
- the AdamW update alone: PyTorch's default for-loop on CPU and the fused kernel `build_optimizer` picks;
- loading one batch (decode + train transform + collate) from the files and from the decoded-image cache,
  and from the cache with whole-batch augmentation (`BatchTrainTransform`, the default on the sample);
- one EMA update of the weights (`EMACallback`, what runs after every optimizer step);
- one epoch's figures: the confusion matrix (1 PNG) and the training-history curves (4 PNGs);
- one checkpoint save through `AtomicCheckpointIO` (temp file, fsync, rename; two per epoch: best and last),
  in CPU and in wall seconds (the fsync waits on the disk, and training waits with it);
- what the training thread pays for a save through `BackgroundCheckpointIO` (what `classifier-train` uses:
  the tensor copy, the write on another thread) and for the same state saved again (a hard link).

The per-epoch cost of each is then given as a share of one default epoch's steps (train batches x step).

    python bench/bench_step_costs.py              # ~2 minutes
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Figure, append_results, scratch_dir  # noqa: E402

from bench_train_speed import build_data, default_config, new_model  # noqa: E402
from classifier_training.callbacks.training_history import HISTORY_PLOTS, plot_history  # noqa: E402
from classifier_training.checkpoints import AtomicCheckpointIO, BackgroundCheckpointIO  # noqa: E402
from classifier_training.data.datamodule import BatchAugmentedDataset, collate_classification  # noqa: E402
from classifier_training.data.datasets import ImageClassificationDataset  # noqa: E402
from classifier_training.data.transforms import BatchTrainTransform  # noqa: E402
from classifier_training.model import build_optimizer, weight_decay_param_groups  # noqa: E402
from classifier_training.reports import plot_confusion_matrix, save_figure  # noqa: E402


def cpu(fn, n: int = 1) -> float:
    "CPU seconds of this process per call of fn, over n calls."
    start = time.process_time()
    for _ in range(n): fn()
    return (time.process_time() - start) / n


def thread_cpu(fn) -> float:
    "CPU seconds of the calling thread for one call of fn (work it hands to other threads left out)."
    start = time.thread_time()
    fn()
    return time.thread_time() - start


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4, help="training steps per timing")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    tmp = scratch_dir("bench_costs_")
    cfg = default_config([], tmp)
    dm = build_data(cfg)
    bs = dm.batch_size
    train_batches = len(dm.train_dataset) // bs
    batch = next(iter(dm.train_dataloader()))

    def stepper(channels_last: bool):
        model = new_model(dm, cfg)
        if channels_last: model.backbone.to(memory_format=torch.channels_last)
        opt = build_optimizer(weight_decay_param_groups(model, 0.05), "adamw", lr=3e-3)
        x = batch["images"].contiguous(memory_format=torch.channels_last) if channels_last else batch["images"]
        def step():
            opt.zero_grad(set_to_none=True)
            model.criterion(model.backbone(x), batch["labels"]).backward()
            opt.step()
        return model, step

    model, step_nchw = stepper(False)
    _, step_cl = stepper(True)
    records, c2i, tf = dm.train_dataset.records, dm.train_dataset.class_to_idx, dm.train_dataset.transform
    files = ImageClassificationDataset(records[:bs * 2], c2i, tf)
    cached = ImageClassificationDataset(records[:bs * 2], c2i, tf, cache_images=True)
    load = lambda ds: (lambda: collate_classification([ds[i] for i in range(bs)]))
    batch_form = BatchAugmentedDataset(cached, BatchTrainTransform.from_transform(tf))
    load_batch = lambda: batch_form.__getitems__(list(range(bs)))
    ema = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.99), use_buffers=True)
    counts = torch.randint(0, 60, (dm.num_classes, dm.num_classes))
    rows = [{"epoch": e, "train/loss": 1.0 / (e + 1), "val/loss": 1.1 / (e + 1), "train/acc_top1": 0.8,
             "val/acc_top1": 0.8, "val/f1_macro": 0.8, "lr": 3e-3 / (e + 1)} for e in range(6)]
    def cm_figure():
        save_figure(plot_confusion_matrix(counts, dm.class_names, title="val"), tmp / "cm.png", 100)
    def history_figures():
        for name, keys in HISTORY_PLOTS.items():
            save_figure(plot_history(rows, keys, title=name), tmp / f"{name}.png", 100)
    updates = {"for-loop": torch.optim.AdamW(weight_decay_param_groups(model, 0.05), lr=3e-3),
               "fused": build_optimizer(weight_decay_param_groups(model, 0.05), "adamw", lr=3e-3)}
    opt_state = torch.optim.AdamW(model.parameters())
    model.criterion(model.backbone(batch["images"][:2]), batch["labels"][:2]).backward(); opt_state.step()
    ckpt = {"state_dict": model.state_dict(), "optimizer_states": [opt_state.state_dict()],
            "current_model_state": {k: v.clone() for k, v in model.state_dict().items()}}
    wall_ckpt = []
    def save_ckpt():  # what each of the two ModelCheckpoints does after an epoch, via AtomicCheckpointIO
        start = time.perf_counter()
        AtomicCheckpointIO().save_checkpoint(ckpt, tmp / "last.ckpt")
        wall_ckpt.append(time.perf_counter() - start)
    background = BackgroundCheckpointIO()
    def background_pair():  # best.ckpt, then last.ckpt of the same state, as build_trainer saves them
        first = thread_cpu(lambda: background.save_checkpoint(ckpt, tmp / "best.ckpt"))
        second = thread_cpu(lambda: background.save_checkpoint(ckpt, tmp / "last.ckpt"))
        background.wait()
        return first, second
    pair_times = []
    pieces = {"train step, NCHW": (lambda: cpu(step_nchw, args.steps)),
              "train step, channels_last": (lambda: cpu(step_cl, args.steps)),
              "load a batch from the files (decode + transform)": (lambda: cpu(load(files))),
              "load a batch from the cache (transform)": (lambda: cpu(load(cached))),
              "load a batch from the cache, whole-batch augmentation": (lambda: cpu(load_batch)),
              "EMA update (one, all weights and buffers)": (lambda: cpu(lambda: ema.update_parameters(model), 10)),
              "AdamW update, for-loop (PyTorch's CPU default)": (lambda: cpu(updates["for-loop"].step, 10)),
              "AdamW update, fused (build_optimizer)": (lambda: cpu(updates["fused"].step, 10)),
              "confusion-matrix figure (1 PNG)": (lambda: cpu(cm_figure)),
              "training-history figures (4 PNGs)": (lambda: cpu(history_figures)),
              "checkpoint save (atomic, fsync; CPU)": (lambda: cpu(save_ckpt)),
              "checkpoint save, BackgroundCheckpointIO: training thread (tensor copy)": (
                  lambda: pair_times.append(background_pair()) or pair_times[-1][0]),
              "the same state saved again (hard link): training thread": (lambda: pair_times[-1][1])}
    for fn in pieces.values(): fn()  # warm-up: first allocations, font cache
    times = {k: [] for k in pieces}
    for _ in range(args.rounds):
        for k, fn in pieces.items(): times[k].append(fn())
    best = {k: min(v) for k, v in times.items()}
    step = best["train step, NCHW"]
    epoch_steps = train_batches * step
    per_epoch = {"load a batch from the files (decode + transform)": train_batches,
                 "load a batch from the cache (transform)": train_batches,
                 "load a batch from the cache, whole-batch augmentation": train_batches,
                 "EMA update (one, all weights and buffers)": train_batches,
                 "AdamW update, for-loop (PyTorch's CPU default)": train_batches,
                 "AdamW update, fused (build_optimizer)": train_batches,
                 "confusion-matrix figure (1 PNG)": 1, "training-history figures (4 PNGs)": 1,
                 "checkpoint save (atomic, fsync; CPU)": 2,
                 "checkpoint save, BackgroundCheckpointIO: training thread (tensor copy)": 1,
                 "the same state saved again (hard link): training thread": 1}
    figures = []
    for k, v in best.items():
        med = statistics.median(times[k])
        share = f"; per epoch {100 * v * per_epoch[k] / epoch_steps:.1f} % of the epoch's steps" if k in per_epoch else ""
        print(f"{v * 1e3:8.1f} ms CPU (median {med * 1e3:.1f})  {k}{share}")
        figures.append(Figure(f"{k}: CPU per call", v * 1e3, "ms"))
        if k in per_epoch:
            figures.append(Figure(f"{k}: per epoch, share of the epoch's step CPU", 100 * v * per_epoch[k] / epoch_steps, "%"))
    ckpt_wall = min(wall_ckpt)
    print(f"checkpoint save wall {ckpt_wall:.2f} s (median {statistics.median(wall_ckpt):.2f}); two per epoch "
          f"(best + last) = {100 * 2 * ckpt_wall / epoch_steps:.1f} % of an epoch's step time at 1 thread")
    figures.append(Figure("checkpoint save (atomic, fsync): wall per save", ckpt_wall, "s"))
    figures.append(Figure("two checkpoint saves per epoch, wall, share of the epoch's step CPU", 100 * 2 * ckpt_wall / epoch_steps, "%"))
    gain = step / best["train step, channels_last"]
    print(f"channels_last / NCHW step speed: {gain:.3f}")
    figures.append(Figure("train step speed, channels_last / NCHW (CPU, 1 thread)", gain, "x"))
    if not args.no_write:
        append_results("Where an epoch's CPU goes (1 thread)", figures, notes=(
            f"CPU seconds (time.process_time) of one process with one torch thread, {args.rounds} interleaved rounds, "
            f"the fastest kept (medians printed by the script); an epoch of the default run = {train_batches} train "
            f"batches of {bs}. Per-image loading runs in a worker process during training (overlapping the step "
            "on another core when one is free); whole-batch augmentation (the default on the sample) runs in the "
            "training process and needs no worker; the figures run on the plotting thread; all take CPU from "
            "the step's threads on a 2-core machine."))


if __name__ == "__main__":
    main()
