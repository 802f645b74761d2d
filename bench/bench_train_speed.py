"""Training throughput of the default recipe against the bare model step (issue "Speed").

Four ways to do the same work (resnet10t, 32 px, batch 64, AdamW + warm-up/cosine, label smoothing; one
"epoch" = `--steps` training steps then `--val-batches` no-grad validation batches; by default a whole
epoch of the default run, so that the once-per-epoch costs weigh what they weigh in the default run):

- **a, bare step**: forward, loss, backward, optimizer step on ONE fixed batch (no data pipeline);
- **b, + data**: the same loop fed by the real train/val DataLoaders of the data module (default workers);
- **c, Trainer**: (b) inside `lightning.Trainer` with no callbacks, logger, checkpointing or progress bar;
- **d, + callbacks**: the Trainer `classifier-train` builds (`build_callbacks`, `build_logger`,
  `build_trainer`): the default callback set minus the ONNX export (it runs after the last epoch and is
  measured by bench_fixed_costs.py), the CSV logger and the checkpoint writes.

The four run in alternation, round after round (at least 3), so that load changes on a shared machine hit
all alike; each figure is the fastest epoch of each variant (contention only ever adds time), with the ratios
of the medians printed beside; c and d time their epochs 1.. of a fit (epoch 0 holds
one-off warm-up). Ratios are throughput ratios (a's seconds / x's seconds). On a 2-core machine shared with
other jobs, read the ratios, not the absolute images per second.

    python bench/bench_train_speed.py                    # ~8 minutes
    python bench/bench_train_speed.py --rounds 5 --no-write
    python bench/bench_train_speed.py --only cd --after data.num_workers=1   # a change, side by side
"""
from __future__ import annotations

import argparse
import functools
import shutil
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Figure, append_results, scratch_dir  # noqa: E402

import lightning.pytorch as pl  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

import classifier_training  # noqa: E402
from classifier_training.data.datamodule import ImageClassificationDataModule  # noqa: E402
from classifier_training.training import (build_callbacks, build_datamodule, build_logger,  # noqa: E402
                                          build_model, build_trainer)
from classifier_training.model import (ImageClassifier, build_optimizer, warmup_cosine_factor,  # noqa: E402
                                       weight_decay_param_groups)

CONF = Path(classifier_training.__file__).resolve().parent / "conf"
AIMS = {"d/a": 0.95, "d/c": 0.97, "d'/a": 0.95, "d'/c'": 0.97}


def default_config(overrides: list[str], run_dir: Path):
    "The composed `classifier-train` config with `overrides` (Hydra syntax)."
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose(config_name="train", overrides=[f"paths.run_dir={run_dir}", *overrides])


def build_data(cfg) -> ImageClassificationDataModule:
    "The data module `classifier-train` builds from cfg (the embedded sample by default), set up."
    dm = build_datamodule(cfg)
    dm.verbose = False
    dm.setup()
    return dm


def new_model(dm, cfg) -> ImageClassifier:
    pl.seed_everything(0, verbose=False)
    return build_model(cfg, dm)


CPU = {}  # variant -> CPU seconds of this process per timed epoch (all its threads; not loader workers)


class EpochClock(pl.Callback):
    "Wall and CPU marks at each training epoch start and at train end (validation runs inside the epoch)."
    def __init__(self): self.marks, self.cpu_marks = [], []
    def _mark(self):
        self.marks.append(time.perf_counter()); self.cpu_marks.append(time.process_time())
    def on_train_epoch_start(self, trainer, pl_module): self._mark()
    def on_train_end(self, trainer, pl_module): self._mark()

    def epochs(self) -> list[float]:
        return [b - a for a, b in zip(self.marks, self.marks[1:])]

    def cpu_epochs(self) -> list[float]:
        return [b - a for a, b in zip(self.cpu_marks, self.cpu_marks[1:])]


def plain_epoch(model, opt, sched, train_batches, val_batches) -> float:
    "Seconds for one epoch of the hand-written loop over the given batch iterables."
    start = time.perf_counter()
    model.train()
    for batch in train_batches:
        opt.zero_grad(set_to_none=True)
        model.criterion(model(batch["images"]), batch["labels"]).backward()
        opt.step(); sched.step()
    model.eval()
    with torch.no_grad():
        for batch in val_batches: model(batch["images"]).argmax(-1)
    return time.perf_counter() - start


def plain_setup(dm, cfg, total_steps: int):
    "Model, the optimizer (build_optimizer) on the weight-decay groups and the warm-up/cosine schedule, as configure_optimizers."
    model = new_model(dm, cfg)
    h = model.hparams
    opt = build_optimizer(weight_decay_param_groups(model, h.weight_decay), h.optimizer, lr=h.lr,
                          momentum=h.momentum)
    factor = functools.partial(warmup_cosine_factor, warmup_steps=total_steps // 3, total_steps=total_steps,
                               min_lr_ratio=h.min_lr_ratio)
    return model, opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def take(loader, n: int):
    "The first n batches of a fresh pass over loader (a new epoch: workers start as in training)."
    out = []
    for i, batch in enumerate(loader):
        if i >= n: break
        out.append(batch)
    return out


def run_bare(dm, cfg, args) -> list[float]:
    model, opt, sched = plain_setup(dm, cfg, args.steps * args.epochs)
    train_batch, val_batch = take(dm.train_dataloader(), 1)[0], take(dm.val_dataloader(), 1)[0]
    return [plain_epoch(model, opt, sched, [train_batch] * args.steps, [val_batch] * args.val_batches)
            for _ in range(args.epochs)]


class _Limited:
    "An iterable over the first n batches of a fresh pass over a DataLoader, fetched lazily."
    def __init__(self, loader, n): self.loader, self.n = loader, n
    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if i >= self.n: return
            yield batch


def run_data(dm, cfg, args) -> list[float]:
    model, opt, sched = plain_setup(dm, cfg, args.steps * args.epochs)
    train, val = dm.train_dataloader(), dm.val_dataloader()
    return [plain_epoch(model, opt, sched, _Limited(train, args.steps), _Limited(val, args.val_batches))
            for _ in range(args.epochs)]


def run_trainer(dm, cfg, args, callbacks: bool, overrides: list[str]) -> list[float]:
    """c: a bare Trainer; d: the Trainer `classifier-train` builds (build_callbacks, build_logger,
    build_trainer: the default callbacks, the CSV logger, the checkpoint writes) minus the ONNX export."""
    run = scratch_dir("bench_speed_")
    clock = EpochClock()
    limits = [f"trainer.max_epochs={args.epochs}", f"trainer.limit_train_batches={args.steps}",
              f"trainer.limit_val_batches={args.val_batches}", "trainer.accelerator=cpu"]
    if callbacks:
        cfg = default_config([*overrides, *limits, "~callbacks.onnx_export"], run)
        trainer = build_trainer(cfg, [clock, *build_callbacks(cfg)], build_logger(cfg))
    else:
        trainer = pl.Trainer(max_epochs=args.epochs, default_root_dir=run, accelerator="cpu", devices=1,
                             callbacks=[clock], limit_train_batches=args.steps,
                             limit_val_batches=args.val_batches, num_sanity_val_steps=2,
                             log_every_n_steps=cfg.trainer.log_every_n_steps, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False)
    model = new_model(dm, cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, datamodule=dm)
    clock.cpu = clock.cpu_epochs()
    run_trainer.last_cpu = clock.cpu
    shutil.rmtree(run, ignore_errors=True)  # two ~80 MB checkpoints per fit
    return clock.epochs()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of a, b, c, d (>= 3)")
    ap.add_argument("--steps", type=int, default=None,
                    help="training steps per epoch (default: a whole epoch of the default run)")
    ap.add_argument("--val-batches", type=int, default=None,
                    help="validation batches per epoch (default: the whole val split)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per variant and round; epoch 0 is not timed")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides (Hydra syntax) for all four")
    ap.add_argument("--after", nargs="*", default=[], help="overrides of the changes under test: adds "
                    "variants b', c', d' (and a' for model.* keys), measured in the same rounds")
    ap.add_argument("--skip-c-after", action="store_true", help="leave out c' (saves time; no d'/c')")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--only", default="abcd", help="variants to run, e.g. 'cd'")
    ap.add_argument("--title", default="", help="added to the RESULTS.md section title")
    ap.add_argument("--no-write", action="store_true", help="print only; do not append to bench/RESULTS.md")
    args = ap.parse_args(argv)
    if args.threads: torch.set_num_threads(args.threads)
    tmp = scratch_dir("bench_speed_")
    cfg = default_config(args.set, tmp)
    dm = build_data(cfg)
    args.steps = args.steps or len(dm.train_dataloader())
    args.val_batches = args.val_batches or len(dm.val_dataloader())
    images = args.steps * dm.batch_size + args.val_batches * dm.batch_size
    print(f"{args.steps} train steps + {args.val_batches} val batches of {dm.batch_size} per epoch; "
          f"{args.epochs} epochs x {args.rounds} rounds; torch threads {torch.get_num_threads()}; "
          f"num_workers {dm.num_workers}; overrides {args.set or 'none'}; after: {args.after}", flush=True)
    variants = {"a": lambda: run_bare(dm, cfg, args), "b": lambda: run_data(dm, cfg, args),
                "c": lambda: run_trainer(dm, cfg, args, False, args.set),
                "d": lambda: run_trainer(dm, cfg, args, True, args.set)}
    if args.after:  # the same with the changes under test: b' and d' (and a' for model keys)
        cfg2 = default_config([*args.set, *args.after], tmp)
        dm2 = build_data(cfg2)
        if any(o.startswith("model.") for o in args.after):
            variants["a'"] = lambda: run_bare(dm2, cfg2, args)
        variants["b'"] = lambda: run_data(dm2, cfg2, args)
        if not args.skip_c_after:
            variants["c'"] = lambda: run_trainer(dm2, cfg2, args, False, [*args.set, *args.after])
        variants["d'"] = lambda: run_trainer(dm2, cfg2, args, True, [*args.set, *args.after])
    variants = {k: v for k, v in variants.items() if k[0] in args.only}
    times = {k: [] for k in variants}
    started = time.perf_counter()
    for r in range(args.rounds):
        for name, fn in variants.items():
            run_trainer.last_cpu = None
            epochs = fn()[1:]
            cpu_epochs = (run_trainer.last_cpu or [])[1:]
            times[name] += epochs
            CPU.setdefault(name, []).extend(cpu_epochs)
            print(f"  round {r} {name}: " + " ".join(f"{s:.2f}" for s in epochs) + " s/epoch"
                  + (" (CPU " + " ".join(f"{s:.2f}" for s in cpu_epochs) + " s)" if cpu_epochs else ""),
                  flush=True)
    # other jobs only ever slow an epoch down: the fastest epoch is the steadiest estimate of each
    # variant's own cost; the medians are printed beside it
    best = {k: min(v) for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    spread = {k: (max(v) - min(v)) / statistics.median(v) for k, v in times.items()}
    pairs = [(x, y) for x, y in (("b", "a"), ("c", "a"), ("d", "a"), ("d", "c"), ("a'", "a"), ("b'", "a"),
                                 ("c'", "a"), ("d'", "a"), ("d'", "c'"), ("d'", "c"), ("b'", "b"), ("d'", "d"))
             if x in med and y in med]
    ratios = {f"{x}/{y}": best[y] / best[x] for x, y in pairs}
    med_ratios = {f"{x}/{y}": med[y] / med[x] for x, y in pairs}
    for k in med:
        print(f"{k}: {images / best[k]:6.1f} img/s (best {best[k]:.2f} s/epoch, median {med[k]:.2f}, "
              f"spread {spread[k]:.0%})")
    for k, v in ratios.items():
        print(f"{k} = {v:.3f} (medians: {med_ratios[k]:.3f})" + (f" (aim >= {AIMS[k]})" if k in AIMS else ""))
    cpu_best = {k: min(v) for k, v in CPU.items() if v}
    cpu_ratios = {f"{x}/{y}": cpu_best[y] / cpu_best[x] for x, y in (("d", "c"), ("d'", "c"), ("d'", "d"))
                  if x in cpu_best and y in cpu_best}
    for k, v in cpu_ratios.items():
        print(f"CPU time (this process, all threads; loader workers excluded) {k} = {v:.3f}")
    print(f"{time.perf_counter() - started:.0f} s in all")
    if not args.no_write:
        names = {"b/a": "b/a: + real data pipeline / bare step", "c/a": "c/a: Trainer, no callbacks / bare step",
                 "d/a": "d/a: Trainer + default callbacks / bare step",
                 "d/c": "d/c: default callbacks / no callbacks"}
        after = f"after ({' '.join(args.after)})"
        names |= {"a'/a": f"a'/a: bare step {after} / before", "b'/a": f"b'/a: + data, {after} / bare step",
                  "c'/a": f"c'/a: Trainer, {after} / bare step",
                  "d'/a": f"d'/a: Trainer + callbacks, {after} / bare step",
                  "d'/c'": f"d'/c': callbacks / none, {after}", "d'/c": f"d'/c: callbacks {after} / Trainer before",
                  "b'/b": f"b'/b: data pipeline {after} / before", "d'/d": f"d'/d: default run {after} / before"}
        figures = [Figure.at_least(names[k], v, "x", AIMS[k]) if k in AIMS else Figure(names[k], v, "x")
                   for k, v in ratios.items()]
        figures += [Figure(f"{k} (ratio of medians)", v, "x") for k, v in med_ratios.items()]
        figures += [Figure(f"{k}, CPU time of the main process (best epochs; loader workers excluded)", v, "x")
                    for k, v in cpu_ratios.items()]
        figures += [Figure(f"{k}: throughput, best epoch (shared machine: read the ratios)",
                           images / best[k], "img/s") for k in med]
        notes = (f"resnet10t 32 px, batch {dm.batch_size}, {args.steps} train steps + {args.val_batches} val "
                 f"batches per epoch, epochs 1..{args.epochs - 1} of {args.epochs} timed, {args.rounds} "
                 f"interleaved rounds; ratios of the fastest epochs (other jobs only slow epochs down), ratios of the medians beside them; spreads " + ", ".join(f"{k} {spread[k]:.0%}" for k in med)
                 + f"; torch threads {torch.get_num_threads()}, data.num_workers {dm.num_workers}; overrides: "
                 f"{' '.join(args.set) or 'none (the defaults)'}. d leaves out the ONNX export (after the "
                 "last epoch; see Fixed costs). Today's figure before this work: d/a 0.735-0.938.")
        append_results("Training speed vs the bare step" + (f": {args.title}" if args.title else ""),
                       figures, notes=notes)


if __name__ == "__main__":
    main()
