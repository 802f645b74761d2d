"""Run every benchmark in bench/ one after the other and write bench/RESULTS.md (what `make bench` does).

Each script measures ratios side by side in one process (no timed unit tests) and appends its section
to RESULTS.md through bench/_harness.py; this runner starts the file afresh so it holds the last run
only, then prints every figure with its aim and whether it is met. The whole run is sized for about
ten minutes on 2 cores: the slower scripts run in their --quick form (pass --full for the long form).
"""
import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from _harness import RESULTS_PATH, machine  # noqa: E402

# hand-written sections of RESULTS.md (no script writes them): carried over to each new run
KEPT_SECTIONS = ("## Moved from the chapters", "## Moved from the configs")


def kept_sections(text: str) -> str:
    "The sections of an earlier RESULTS.md that start with one of KEPT_SECTIONS."
    return "".join(part for part in re.split(r"(?m)^(?=## )", text) if part.startswith(KEPT_SECTIONS))


# (script, arguments for the ~10 minute run, extra arguments for --full)
SCRIPTS = [
    ("bench_dataset_check.py", ["--quick"], []),
    ("bench_data_pipeline.py", ["--quick"], []),
    ("bench_ema.py", ["--quick"], []),
    ("bench_model_throughput.py", ["--steps", "30", "--repeats", "2"], []),
    ("bench_callback_overhead.py", ["--rounds", "1", "--epochs", "2"], []),  # default-size epochs: 1 steady epoch each
    ("bench_onnx_vs_eager.py", ["--repeats", "5"], []),
    ("bench_make_train.py", ["--ddp-repeats", "1"], ["--ddp-repeats", "3"]),
    ("bench_predict_startup.py", ["--repeats", "5"], ["--repeats", "15"]),
    ("bench_help_time.py", ["--repeats", "5"], []),
    ("bench_calibration.py", [], []),  # two real training runs (sample, digits): about 15 min on 2 cores
    ("bench_int8.py", [], []),  # the default run again + resnet18 at 224 px: about 15 min on 2 cores
    ("bench_train_speed.py", [], ["--rounds", "5", "--steps", "48", "--val-batches", "8"]),
    ("bench_step_costs.py", [], ["--rounds", "5"]),
    ("bench_fixed_costs.py", ["--set", "trainer.max_epochs=2"], []),
    ("bench_deploy_table.py", [], []),  # a 2-epoch default run + 3 classifier-evaluate --benchmark runs
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="long forms of every script (well over ten minutes)")
    ap.add_argument("--only", nargs="*", help="run only these scripts (file names)")
    args = ap.parse_args()
    header = ("# Benchmark results\n\nThe last `make bench` run; each section below is written by one script in bench/. The figures are ratios measured side by side, but on a machine that shares its cores with other virtual machines a single run still moves by 10-30 % (the same dataset check measured 10,000 and 6,000 images/s in two runs an hour apart); the ten-minute form takes one steady epoch per variant for the callback stack. `--full` repeats more.\n\n")
    header += "Machine: " + ", ".join(f"{k} {v}" for k, v in machine().items()) + "\n"
    kept = kept_sections(RESULTS_PATH.read_text()) if RESULTS_PATH.is_file() else ""
    RESULTS_PATH.write_text(header)
    failed, started = [], time.perf_counter()
    for script, quick_args, full_args in SCRIPTS:
        if args.only and script not in args.only:
            continue
        cmd = [sys.executable, str(BENCH / script), *(full_args if args.full else quick_args)]
        print(f"\n=== {script} {' '.join(cmd[2:])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd, cwd=BENCH.parent)
        print(f"=== {script}: exit {rc} after {time.perf_counter() - t0:.0f} s", flush=True)
        if rc != 0:
            failed.append(script)
    if kept:
        RESULTS_PATH.write_text(RESULTS_PATH.read_text().rstrip("\n") + "\n\n" + kept.rstrip("\n") + "\n")
    rows = [line for line in RESULTS_PATH.read_text().splitlines() if re.match(r"^\|[^|]*\|[^|]*\|[^|]*\|\s*[<>]=", line)]
    print(f"\nAll figures with an aim ({time.perf_counter() - started:.0f} s in all; details in {RESULTS_PATH}):")
    for row in rows:
        print("  " + row)
    if failed:
        print(f"scripts that failed: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
