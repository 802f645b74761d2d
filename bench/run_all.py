"""Run every benchmark in bench/ one after the other and write bench/RESULTS.md (what `make bench` does).

Each script measures ratios side by side in one process (no timed unit tests) and appends its section
to RESULTS.md through bench/_harness.py; this runner starts the file afresh so it holds the last run
only (sections of scripts it left out are carried over, with their own dates), then prints every figure
with its aim and whether it is met. The whole run takes about 30 minutes on 2 cores; --full runs every
script in its long form.
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
EARLIER = "## Earlier runs"  # the note before the carried-over sections


def kept_sections(text: str) -> str:
    "The sections of an earlier RESULTS.md that start with one of KEPT_SECTIONS."
    return "".join(part for part in re.split(r"(?m)^(?=## )", text) if part.startswith(KEPT_SECTIONS))


# (script, arguments of the `make bench` run, arguments of --full; None: the script runs with --full only).
# `make bench` holds what the issue "Speed" asks for from one run (the speed ratios, the fixed costs, the
# 5-seed accuracy of the default run, the check at scale) and the quick figures: about 30 minutes on 2
# cores. --full adds the long ones (two calibration runs, the INT8 runs, DDP, the deployment table).
SCRIPTS = [
    ("bench_help_time.py", ["--repeats", "5"], ["--repeats", "5"]),
    ("bench_predict_startup.py", ["--repeats", "5"], ["--repeats", "15"]),
    ("bench_dataset_check.py", ["--quick"], []),
    ("bench_data_pipeline.py", ["--quick"], []),
    ("bench_ema.py", ["--quick"], []),
    ("bench_model_throughput.py", ["--steps", "30", "--repeats", "2"], []),
    ("bench_onnx_vs_eager.py", ["--repeats", "5"], []),
    ("bench_train_speed.py", ["--after", "data.batch_augment=false", "--skip-c-after"],
     ["--rounds", "5", "--after", "data.batch_augment=false", "--skip-c-after"]),
    ("bench_step_costs.py", [], ["--rounds", "5"]),
    ("bench_fixed_costs.py", [], []),  # one whole default run, phase by phase
    ("bench_make_train.py", ["--skip-ddp"], ["--ddp-repeats", "3"]),
    ("bench_default_accuracy.py", [], []),  # five default runs + three of the code before the speed work: ~16 min
    ("bench_check_scale.py", [], []),  # 200,000 generated images
    ("bench_callback_overhead.py", None, []),  # superseded by bench_train_speed (d/c)
    ("bench_calibration.py", None, []),  # two real training runs (sample, digits): about 15 min
    ("bench_int8.py", None, []),  # the default run again + resnet18 at 224 px: about 15 min
    ("bench_deploy_table.py", None, []),  # a 2-epoch default run + 3 classifier-evaluate --benchmark runs
    ("bench_duplicates.py", None, []),
    ("bench_label_audit.py", None, []),  # cleanlab over K folds of real training
    ("bench_sample_visualization.py", None, []),
]


def carried_over(old_text: str, new_text: str) -> str:
    "Sections of the earlier RESULTS.md whose title (before any ':') this run did not write again."
    base = lambda title: title.split(":", 1)[0].strip()
    written = {base(m) for m in re.findall(r"(?m)^## (.+)$", new_text)}
    parts = [p for p in re.split(r"(?m)^(?=## )", old_text) if p.startswith("## ")]
    return "".join(p for p in parts if not p.startswith((*KEPT_SECTIONS, EARLIER))
                   and base(p.splitlines()[0][3:]) not in written)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="every script, in its long form (hours)")
    ap.add_argument("--only", nargs="*", help="run only these scripts (file names)")
    args = ap.parse_args()
    header = ("# Benchmark results\n\nThe last `make bench` run; each section below is written by one script in bench/. The figures are ratios measured side by side, but on a machine that shares its cores with other virtual machines a single run still moves by 10-30 % (the same dataset check measured 10,000 and 6,000 images/s in two runs an hour apart); the training-speed figures are the fastest of several interleaved whole epochs for that reason. `make bench` runs the scripts the speed issue asks for and the quick ones (about 30 minutes on 2 cores); `--full` runs every script and repeats more.\n\n")
    header += "Machine: " + ", ".join(f"{k} {v}" for k, v in machine().items()) + "\n"
    old = RESULTS_PATH.read_text() if RESULTS_PATH.is_file() else ""
    kept = kept_sections(old)
    RESULTS_PATH.write_text(header)
    failed, started = [], time.perf_counter()
    for script, quick_args, full_args in SCRIPTS:
        if (args.only and script not in args.only) or (quick_args is None and not args.full):
            continue
        cmd = [sys.executable, str(BENCH / script), *(full_args if args.full else quick_args)]
        print(f"\n=== {script} {' '.join(cmd[2:])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd, cwd=BENCH.parent)
        print(f"=== {script}: exit {rc} after {time.perf_counter() - t0:.0f} s", flush=True)
        if rc != 0:
            failed.append(script)
    earlier = carried_over(old, RESULTS_PATH.read_text())
    if earlier:
        RESULTS_PATH.write_text(RESULTS_PATH.read_text().rstrip("\n") + "\n\n"
                                + f"{EARLIER}\n\nThe sections below come from an earlier run of scripts "
                                "this run left out (`python bench/run_all.py --full` runs every script); "
                                "each keeps its own date.\n\n" + earlier.rstrip("\n") + "\n")
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
