"""`make train` with its defaults: time to a verified ONNX model and the test top-1 it reaches; DDP scaling on CPU.

1. Runs `make train ARGS="hydra.run.dir=<tmp>"` from the repository root exactly as a user would (the default
   config on the embedded Fashion-MNIST sample) and times it wall-clock. Then checks the run folder: the ONNX
   export verified against PyTorch (export_report.json), and -- independently of the training code -- the test
   top-1 of model.onnx itself, computed with onnxruntime on the sample's test split through the library's eval
   transform. Aims: <= 180 s on 2 CPU cores, test top-1 >= 0.85.
2. DDP on CPU: the same short workload (1 epoch on the sample, callbacks=minimal, logger=none) with
   trainer.devices=1 and with trainer.accelerator=cpu trainer.devices=2 trainer.strategy=ddp, interleaved and
   repeated (medians); reports wall and CPU times and the speed-up. On 2 cores two DDP processes share the cores
   that one process with two threads already uses, so expect no gain here; the figure is reported as measured.

    .venv/bin/python bench/bench_make_train.py              # both parts; appends a section to bench/RESULTS.md
    .venv/bin/python bench/bench_make_train.py --skip-ddp --no-write
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Figure, append_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(cmd: list[str], cwd: Path, timeout: int) -> tuple[float, float]:
    "Run `cmd`; return (wall seconds, CPU seconds of it and its children)."
    start, cpu = time.perf_counter(), _cpu_seconds()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return seconds, _cpu_seconds() - cpu


def _load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def onnx_test_top1(run_dir: Path) -> float:
    "Top-1 of the exported model.onnx on the sample's test split, with onnxruntime and the library's eval transform."
    import numpy as np
    import onnxruntime as ort
    from classifier_training.core import PreprocessingConfig
    from classifier_training.data.sample import materialize_sample
    from classifier_training.data.transforms import build_eval_transform
    from PIL import Image
    mapping = json.loads((run_dir / "labels_mapping.json").read_text())
    transform = build_eval_transform(PreprocessingConfig.from_dict(mapping["preprocessing"]))
    files = sorted((materialize_sample() / "test").rglob("*.png"))
    session = ort.InferenceSession(str(run_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    correct = 0
    for i in range(0, len(files), 100):
        chunk = files[i:i + 100]
        x = np.stack([transform(Image.open(f)).numpy() for f in chunk]).astype(np.float32)
        preds = session.run(None, {name: x})[0].argmax(1)
        correct += sum(mapping["class_names"][p] == f.parent.name for p, f in zip(preds, chunk))
    return correct / len(files)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-ddp", action="store_true", help="only the make train figures")
    ap.add_argument("--only-ddp", action="store_true", help="only the DDP scaling figures")
    ap.add_argument("--no-write", action="store_true", help="print, do not append to bench/RESULTS.md")
    ap.add_argument("--ddp-repeats", type=int, default=3, help="timed interleaved runs per device count")
    ap.add_argument("--keep", metavar="DIR", help="keep the run folders under DIR (default: a temporary folder)")
    ap.add_argument("--args", default="", help="extra overrides for the make train run (default: none, the real defaults)")
    args = ap.parse_args()
    figures, notes = [], []
    with tempfile.TemporaryDirectory(prefix="bench_make_train_") as tmp:
        if args.keep: tmp = str(Path(args.keep).absolute())
        run = Path(tmp) / "run"
        if not args.only_ddp: _bench_make_train(args, run, figures, notes)
        if not args.skip_ddp: _bench_ddp(args, Path(tmp), figures, notes)
    for f in figures: print(f.row())
    title = "DDP on CPU (issue 7)" if args.only_ddp else "make train (issue 7)"
    if not args.no_write: print("appended to", append_results(title, figures, notes="\n\n".join(notes)))


def _bench_make_train(args, run: Path, figures: list, notes: list) -> None:
    "One `make train` run with the defaults: wall and CPU time, test top-1, export verification."
    load_before = _load()
    seconds, cpu = _run(["make", "-s", "train", f"ARGS=hydra.run.dir={run} {args.args}".strip()], ROOT, timeout=1800)
    notes.append(f"Load average (1, 5, 15 min) before the run: {load_before}; after: {_load()}. On a machine shared "
                 "with other jobs the wall time overstates a quiet machine's; the CPU time does not depend on sharing "
                 "(wall time on a quiet 2-core machine is about CPU time / 2 at best).")
    if args.args: notes.append(f"Overrides on top of the defaults: `{args.args}` (not the plain defaults).")
    report = json.loads((run / "export_report.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    manifest = json.loads((run / "run_manifest.json").read_text())
    onnx_top1 = onnx_test_top1(run)
    print(f"make train: {seconds:.1f} s wall, {cpu:.0f} s CPU (pipeline {manifest['duration_s']} s); test/acc_top1 "
          f"{metrics['test/acc_top1']:.4f} (Lightning) {onnx_top1:.4f} (model.onnx, onnxruntime); "
          f"export verified: {report['verification']['passed']}")
    figures += [Figure.at_most("`make train` wall time to a verified model.onnx", seconds, "s", 180),
                Figure("`make train` CPU time (all threads and processes)", cpu, "s"),
                Figure.at_least("test top-1 of model.onnx (onnxruntime, 1000 sample test images)", onnx_top1, "", 0.85),
                Figure.at_least("test/acc_top1 logged by the pipeline (best EMA checkpoint)", metrics["test/acc_top1"], "", 0.85),
                Figure("ONNX export verification passed", float(report["verification"]["passed"]), "bool")]
    cfg = (run / "config.yaml").read_text()
    notes.append("Defaults: " + ", ".join(line.strip() for line in cfg.splitlines()
                                           if line.strip().split(":")[0] in ("backbone", "image_size", "batch_size", "lr", "max_epochs")))


def _bench_ddp(args, tmp: Path, figures: list, notes: list) -> None:
    "1 vs 2 CPU devices (DDP) on the same short workload, interleaved to share load changes."
    # same short workload with 1 and 2 devices, interleaved (1, 2, 1, 2) so that load changes on a shared
    # machine hit both alike; medians of the wall times and the CPU times of each
    common = ["trainer.max_epochs=1", "callbacks=minimal", "logger=none", "trainer.enable_progress_bar=false",
              "trainer.enable_model_summary=false"]
    ddp = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"]
    walls = {1: [], 2: []}
    first = -1 if args.only_ddp else 0  # rep -1: an untimed warm-up run of each; after make train the caches are warm
    for rep in range(first, args.ddp_repeats):
        for devices in (1, 2):
            cmd = [str(BIN / "classifier-train"), f"hydra.run.dir={Path(tmp) / f'ddp{devices}_{rep + 1}'}", *common,
                   *(ddp if devices == 2 else [])]
            w, _ = _run(cmd, ROOT, 1800)
            if rep >= 0: walls[devices].append(w)
            print(f"devices={devices} run {rep}: {w:.1f} s wall (load {_load()})")
    t1, t2 = statistics.median(walls[1]), statistics.median(walls[2])
    figures += [Figure("1 epoch + test + export, devices=1 (median wall)", t1, "s"),
                Figure("same, DDP on CPU, devices=2 (median wall)", t2, "s"),
                Figure("DDP speed-up (devices=1 wall / devices=2 wall)", t1 / t2, "x")]
    notes.append(f"DDP on CPU: {'one warm-up run each, then ' if first < 0 else 'after the make train run (warm caches), '}{args.ddp_repeats} interleaved runs each; walls devices=1 "
                 f"{[round(w) for w in walls[1]]} s, devices=2 {[round(w) for w in walls[2]]} s (CPU time is not "
                 "reported: Lightning's DDP ranks are not child processes that the timer can account for). Two processes "
                 "with one thread each against one process with two threads, on the same 2 cores: DDP cannot add "
                 "compute here, it only changes how the same cores are used, and each rank pays its own start-up "
                 "(imports, data check) and the gradient all-reduce. Whole-command times (start-up, test and export "
                 "included). Multi-GPU or multi-node is where DDP scales.")


if __name__ == "__main__":
    main()
