"""Epoch throughput with the whole callback stack against a bare Trainer and a plain PyTorch loop.

Three ways to run the same epochs (same model, data, batch size, seeds and thread count):

- **plain**: a hand-written PyTorch loop (forward, loss, backward, AdamW step; then a no-grad pass over
  the validation set), no Lightning;
- **bare**: `lightning.Trainer` with no callbacks at all (no checkpointing, logger, progress bar or
  model summary);
- **stack**: the Trainer with every callback of `conf/callbacks/default.yaml` (the twelve: EMA, model
  info, dataset statistics, sampler distribution, confusion matrix, training history, sample
  visualisation, ONNX export, the best and last ModelCheckpoints, EarlyStopping, LearningRateMonitor,
  RichProgressBar) built with `hydra.utils.instantiate`, plus a CSVLogger (LearningRateMonitor needs one).

The figure is train+val images per second per epoch (and, steadier on a shared machine, the process's CPU
seconds per epoch, the plotting thread included), epochs 1.. only (epoch 0 carries one-off costs:
imports, font cache, first allocations); they are reported apart, as is the work at fit start (model info,
dataset report) and fit end (ONNX export and its verification, waiting for the last figures). The three
variants run in alternation, round after round, so that load changes on a shared machine hit all alike.
Aim: stack >= 0.95 of bare.

    .venv/bin/python bench/bench_callback_overhead.py             # the default training run's data and model
    .venv/bin/python bench/bench_callback_overhead.py --quick --no-write
    .venv/bin/python bench/bench_callback_overhead.py --threads 1 # fixed torch threads (shared machines)
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Figure, Timing, append_results, scratch_dir  # noqa: E402

import lightning.pytorch as pl  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from lightning.pytorch.loggers import CSVLogger  # noqa: E402

import classifier_training  # noqa: E402
from classifier_training.data.datamodule import ImageClassificationDataModule  # noqa: E402
from classifier_training.data.sample import write_sample_subset  # noqa: E402
from classifier_training.model import ImageClassifier, weight_decay_param_groups  # noqa: E402

CONF = Path(classifier_training.__file__).resolve().parent / "conf"


def _now() -> tuple[float, float]:
    "(wall clock, CPU time of this process: all its threads, the plotting thread included)."
    return time.perf_counter(), time.process_time()


def _spans(marks: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    "Wall and CPU seconds between consecutive marks."
    return ([b[0] - a[0] for a, b in zip(marks, marks[1:])], [b[1] - a[1] for a, b in zip(marks, marks[1:])])


class EpochClock(pl.Callback):
    "Marks at each training epoch start (validation runs inside the epoch) and at train end."
    def __init__(self): self.epoch_starts, self.train_end = [], None
    def on_train_epoch_start(self, trainer, pl_module): self.epoch_starts.append(_now())
    def on_train_end(self, trainer, pl_module): self.train_end = _now()


def stack_callbacks(run_dir: Path) -> list[pl.Callback]:
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(config_name="train", overrides=[f"paths.run_dir={run_dir}"])
    return [instantiate(node) for node in cfg.callbacks.values()]


def new_model(dm, args) -> ImageClassifier:
    pl.seed_everything(0, verbose=False)
    return ImageClassifier(dm.num_classes, dm.class_names, backbone=args.backbone, preprocessing=dm.preprocessing.to_dict())


def run_lightning(dm, args, with_stack: bool) -> dict:
    "One fit; per-epoch seconds, and the seconds spent before the first epoch and after the last."
    run = scratch_dir("bench_cb_")
    clock = EpochClock()
    callbacks = [clock, *(stack_callbacks(run) if with_stack else [])]
    extra = dict(logger=CSVLogger(run, name="logs", version=""), enable_progress_bar=True) if with_stack else \
        dict(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer = pl.Trainer(max_epochs=args.epochs, default_root_dir=run, accelerator=args.device, devices=1,
                         callbacks=callbacks, enable_model_summary=False, num_sanity_val_steps=2, log_every_n_steps=10,
                         **extra)
    model = new_model(dm, args)
    start = _now()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, datamodule=dm)
    end = _now()
    wall, cpu = _spans([*clock.epoch_starts, clock.train_end])
    return {"epochs": wall, "cpu": cpu, "before": clock.epoch_starts[0][0] - start[0], "after": end[0] - clock.train_end[0]}


def run_plain(dm, args) -> dict:
    "The same epochs as a hand-written loop: train (forward, loss, backward, AdamW) then a no-grad validation pass."
    model = new_model(dm, args).to(args.device)
    opt = torch.optim.AdamW(weight_decay_param_groups(model.backbone, model.hparams.weight_decay), lr=model.hparams.lr)
    train_loader, val_loader = dm.train_dataloader(), dm.val_dataloader()
    marks = []
    for _ in range(args.epochs):
        marks.append(_now())
        model.train()
        for batch in train_loader:
            images, labels = batch["images"].to(args.device), batch["labels"].to(args.device)
            opt.zero_grad(set_to_none=True)
            model.criterion(model(images), labels).backward()
            opt.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for batch in val_loader:
                correct += int((model(batch["images"].to(args.device)).argmax(-1).cpu() == batch["labels"]).sum())
        if args.device.startswith("cuda"): torch.cuda.synchronize()
    marks.append(_now())
    wall, cpu = _spans(marks)
    return {"epochs": wall, "cpu": cpu, "before": 0.0, "after": 0.0}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a 300-image subset, timm's test_resnet, 1 round")
    ap.add_argument("--no-write", action="store_true", help="print only; do not append to bench/RESULTS.md")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds of (plain, bare, stack); default 2 (quick: 1)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per fit; epoch 0 is reported apart")
    args = ap.parse_args(argv)
    if args.threads: torch.set_num_threads(args.threads)
    rounds = args.rounds or (1 if args.quick else 2)
    if args.quick:
        root = write_sample_subset(scratch_dir("bench_cb_data_") / "data", per_class=30)
        args.backbone, batch_size = "test_resnet", 32
    else:  # what `classifier-train` does by default: the whole embedded sample, resnet10t, 32 px, batch 64
        root, args.backbone, batch_size = None, "resnet10t", 64
    dm = ImageClassificationDataModule(root, image_size=32, batch_size=batch_size, backbone=args.backbone, verbose=False)
    dm.setup()
    train_images = len(dm.train_dataset) // batch_size * batch_size  # drop_last
    images = train_images + len(dm.val_dataset)
    print(f"{len(dm.train_dataset)} train / {len(dm.val_dataset)} val images, {args.backbone} 32 px, batch {batch_size}, "
          f"{args.epochs} epochs x {rounds} rounds, torch threads {torch.get_num_threads()}, device {args.device}")

    results = {"plain": [], "bare": [], "stack": []}
    for r in range(rounds):
        for name in results:
            res = run_plain(dm, args) if name == "plain" else run_lightning(dm, args, with_stack=name == "stack")
            results[name].append(res)
            print(f"  round {r}: {name:>5} epochs " + " ".join(f"{s:.2f}" for s in res["epochs"]) + " s (CPU "
                  + " ".join(f"{s:.2f}" for s in res["cpu"]) + f" s); before first epoch {res['before']:.2f} s, "
                  f"after last {res['after']:.2f} s")

    steady = {n: Timing(tuple(s for res in rs for s in res["epochs"][1:])) for n, rs in results.items()}
    cpu = {n: Timing(tuple(s for res in rs for s in res["cpu"][1:])) for n, rs in results.items()}
    first = {n: statistics.median(res["epochs"][0] for res in rs) for n, rs in results.items()}
    rate = {n: images / t.median for n, t in steady.items()}
    ratio_bare, ratio_plain = rate["stack"] / rate["bare"], rate["bare"] / rate["plain"]
    per_epoch_cost = steady["stack"].median - steady["bare"].median
    cpu_ratio, cpu_cost = cpu["bare"].median / cpu["stack"].median, cpu["stack"].median - cpu["bare"].median
    for n in results:
        print(f"{n:>5}: {rate[n]:7.1f} img/s (epoch {steady[n].median:.2f} s, {steady[n]}); epoch 0 {first[n]:.2f} s")
    print(f"stack / bare = {ratio_bare:.3f} (aim >= 0.95); bare / plain = {ratio_plain:.3f}; "
          f"the stack costs {per_epoch_cost:+.2f} s per epoch")
    print(f"CPU time per epoch: " + ", ".join(f"{n} {cpu[n].median:.2f} s" for n in results)
          + f"; bare / stack = {cpu_ratio:.3f}, the stack costs {cpu_cost:+.2f} CPU s per epoch")
    one_off = {n: (statistics.median(r["before"] for r in rs), statistics.median(r["after"] for r in rs))
               for n, rs in results.items() if n != "plain"}
    for n, (before, after) in one_off.items():
        print(f"{n:>5}: {before:.2f} s before the first epoch, {after:.2f} s after the last")

    if not args.no_write:
        tag = f"{args.backbone} 32px bs{batch_size}, {images} img/epoch, {args.device}, {torch.get_num_threads()} threads"
        figures = [Figure.at_least(f"stack / bare Trainer throughput ({tag})", ratio_bare, "x", 0.95),
                   Figure(f"bare Trainer / plain loop throughput ({tag})", ratio_plain, "x"),
                   Figure("stack: cost per epoch", per_epoch_cost, "s"),
                   Figure.at_least("CPU time per epoch, bare / stack", cpu_ratio, "x", 0.95),
                   Figure("stack: CPU cost per epoch", cpu_cost, "s"),
                   *(Figure(f"{n}: train+val throughput", rate[n], "img/s") for n in results)]
        noisy = max(t.spread for t in steady.values()) > 0.05
        notes = "\n".join([
            f"- Steady-state epochs (1..{args.epochs - 1}) of {rounds} rounds, variants interleaved; medians. Spread: "
            + ", ".join(f"{n} {steady[n].spread:.0%} wall, {cpu[n].spread:.0%} CPU" for n in results) + "."
            + (" The wall-clock spread exceeds the 5 % being measured (a shared machine): read the CPU-time ratio."
               if noisy else ""),
            f"- CPU seconds per epoch: " + ", ".join(f"{n} {cpu[n].median:.2f}" for n in results)
            + ". The stack's own work is a fixed cost per epoch (figures, checkpoints), so its share shrinks as epochs grow.",
            "- Epoch 0 (one-off warm-up): " + ", ".join(f"{n} {first[n]:.2f} s" for n in results) + ".",
            "- Outside the epochs: " + "; ".join(f"{n} {b:.2f} s before the first epoch (sanity check included), "
                                                 f"{a:.2f} s after the last (stack: ONNX export + verification)"
                                                 for n, (b, a) in one_off.items()) + "."])
        append_results(f"Callback stack overhead ({args.device})", figures, notes=notes)


if __name__ == "__main__":
    main()
