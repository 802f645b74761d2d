"""The deployment table of `classifier-evaluate MODEL DATA --benchmark`, measured three times: do repeat runs agree?

A real run of the default config (backbone and image size named in the notes) on the embedded Fashion-MNIST
sample, with the pipeline's own callbacks: calibration.json, model.onnx (temperature and reject threshold in
its metadata) and model.int8.onnx (`callbacks.onnx_export.int8=true`) in the run folder, checkpoints/best.ckpt
beside them. Then the same command, `classifier-evaluate RUN/model.onnx SAMPLE/test --benchmark --ood DIGITS`,
three times in fresh interpreters: PyTorch eager (the run's best.ckpt, found beside the model), ONNX FP32 and
ONNX INT8 on the 1000 test images. Reported per runtime: accuracy, p50/p95 latency at batch 1 and throughput
at batch 32 (median of the three runs) and their spread ((max - min) / median), the file sizes; the coverage
and the accuracy of the accepted at the run's reject threshold; the OOD separation of scikit-learn's digits
(a far-OOD folder). Measured on whatever machine runs it, shared or not: the spread says how much one table
can be trusted there.

    .venv/bin/python bench/bench_deploy_table.py           # trains (20 min on a busy 2-core box), appends
    .venv/bin/python bench/bench_deploy_table.py --run RUN_FOLDER --no-write
"""
from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Figure, append_results, scratch_dir  # noqa: E402
from bench_calibration import write_digits  # noqa: E402

from classifier_training.config import compose_config  # noqa: E402
from classifier_training.data.sample import write_sample_subset  # noqa: E402
try: from classifier_training.training import train  # noqa: E402  (main renamed the pipeline module)
except ImportError: from classifier_training.train import train  # noqa: E402

FIGURES = (("latency_p50_ms", "p50 latency, batch 1", "ms"), ("latency_p95_ms", "p95 latency, batch 1", "ms"),
           ("throughput_ips", "throughput, batch 32", "images/s"))


def train_run(sample: Path, run_dir: Path, epochs: int) -> Path:
    overrides = [f"data.root={sample}", f"trainer.max_epochs={epochs}", "trainer.enable_progress_bar=false",
                 "callbacks.onnx_export.int8=true", "callbacks.onnx_export.latency_repeats=0"]
    with redirect_stdout(io.StringIO()):
        train(compose_config(overrides, run_dir=run_dir))
    return run_dir


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="a finished run folder (model.onnx, model.int8.onnx, checkpoints/best.ckpt)")
    ap.add_argument("--epochs", type=int, default=2, help="epochs of the default run when training one")
    ap.add_argument("--runs", type=int, default=3, help="repeats of the same classifier-evaluate command")
    ap.add_argument("--repeats", type=int, default=30, help="--repeats of classifier-evaluate (timed calls)")
    ap.add_argument("--threads", type=int, default=1, help="--threads of classifier-evaluate (each runtime)")
    ap.add_argument("--no-write", action="store_true", help="print only; do not append to RESULTS.md")
    args = ap.parse_args()
    work = scratch_dir("bench_deploy_")
    sample = write_sample_subset(work / "sample", per_class=None)
    run = Path(args.run) if args.run else train_run(sample, work / "run", args.epochs)
    for f in ("model.onnx", "model.int8.onnx", "checkpoints/best.ckpt"):
        if not (run / f).is_file(): raise SystemExit(f"{run} has no {f}")
    digits = write_digits(work / "digits")
    tables, metrics = [], None
    for i in range(args.runs):
        out = work / f"eval_{i}"
        cmd = [sys.executable, "-m", "classifier_training.evaluate", str(run / "model.onnx"), str(sample / "test"),
               "--out", str(out), "--benchmark", "--ood", str(digits), "--repeats", str(args.repeats),
               "--threads", str(args.threads)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode: raise SystemExit(p.stderr[-3000:])
        print(p.stdout, flush=True)
        tables.append(json.loads((out / "benchmark.json").read_text())["rows"])
        metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    figs = []
    for k, row in enumerate(tables[0]):
        name = row["runtime"]
        accs = {t[k]["accuracy"] for t in tables}
        figs.append(Figure(f"{name}: top-1 ({row['num_images']} test images)", 100 * row["accuracy"], "%"))
        figs.append(Figure(f"{name}: runs with a different top-1", len(accs) - 1, ""))
        for key, label, unit in FIGURES:
            values = [t[k][key] for t in tables]
            med = statistics.median(values)
            figs.append(Figure(f"{name}: {label} (median of {len(values)} runs)", med, unit))
            figs.append(Figure(f"{name}: {label}, spread (max - min) / median", 100 * (max(values) - min(values)) / med,
                               "%"))
        figs.append(Figure(f"{name}: file size", row["size_bytes"] / 1e6, "MB"))
    m = metrics
    if "eval/coverage" in m:
        figs += [Figure(f"reject threshold {m['eval/reject_threshold']:.3f}: coverage", 100 * m["eval/coverage"], "%"),
                 Figure("accuracy of the accepted", 100 * m["eval/acc_accepted"], "%")]
    for kind in ("msp", "energy"):
        figs += [Figure(f"OOD (digits, {m['eval/ood_num_images']} images): {kind} AUROC",
                        m[f"eval/ood_{kind}_auroc"], ""),
                 Figure(f"OOD (digits): {kind} FPR at 95 % TPR", 100 * m[f"eval/ood_{kind}_fpr95"], "%")]
    for f in figs: print(f.row())
    config = (run / "config.yaml").read_text()
    setting = ", ".join(l.strip() for l in config.splitlines()
                        if l.strip().startswith(("backbone:", "image_size:")))
    epochs = args.epochs if not args.run else "?"
    notes = (f"Model: {setting}. The same command run {args.runs} times in fresh interpreters: "
             f"`classifier-evaluate RUN/model.onnx SAMPLE/test --benchmark --ood DIGITS --repeats {args.repeats} "
             f"--threads {args.threads}`; the run: default config, {epochs} epochs, "
             "`callbacks.onnx_export.int8=true`. Latency is the model call only (preprocessing excluded), "
             f"{args.threads} thread(s) per runtime, on a machine shared with other jobs while measured: the "
             "spread is that of this machine, not of the method. The PyTorch size is the whole checkpoint (EMA "
             "copy and optimizer state included).")
    if not args.no_write: append_results("Deployment table: classifier-evaluate --benchmark, repeated", figs, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
