"""Sweep training configs on the embedded sample: test top-1 and wall time of each, several seeds, in parallel.

How the sample defaults (epochs, EMA decay, image size) were chosen. Each run is the real CLI
(`python -m classifier_training.training`) in its own run folder; runs go in parallel, each pinned to its own
cores with `taskset` when the machine has more cores than jobs need. Prints a markdown table (median test
top-1 over seeds, min-max, median wall) and writes it to --out when given. Not a test: it asserts nothing.

    python bench/sweep_defaults.py --jobs 6 --cores-per-job 2 --seeds 1 2 \
        --config "8ep=" --config "6ep-ema99=trainer.max_epochs=6 callbacks.ema.decay=0.99"

A token `@DIR` among a config's overrides runs that config from another checkout of the project (a
`git worktree` of an older commit), so old and new code are timed in the same hour, interleaved seed by
seed. Each row also records the CPU seconds of the run (the process and the children it waited for),
which move less with the host's load than the wall time.

    git worktree add --detach /tmp/before 6fd1d93
    python bench/sweep_defaults.py --seeds 1 2 3 --config "before=@/tmp/before" --config "now="
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def parse_config(text: str) -> tuple[str, list[str]]:
    "`name=override override ...` -> (name, overrides); an `@DIR` token names the checkout to run."
    name, _, overrides = text.partition("=")
    return name.strip(), overrides.split()


def split_checkout(overrides: list[str]) -> tuple[Path, list[str]]:
    "The checkout a config runs from (`@DIR`, else this one) and its Hydra overrides."
    dirs = [Path(o[1:]).expanduser().resolve() for o in overrides if o.startswith("@")]
    if len(dirs) > 1:
        raise SystemExit(f"one @DIR per config, got {[str(d) for d in dirs]}")
    if dirs and not (dirs[0] / "classifier_training" / "training.py").is_file():
        raise SystemExit(f"@{dirs[0]}: not a checkout of classifier_training (no classifier_training/training.py)")
    return (dirs[0] if dirs else ROOT), [o for o in overrides if not o.startswith("@")]


def run_one(name: str, overrides: list[str], seed: int, run_dir: Path, cores: list[int] | None,
            threads: int | None) -> dict:
    checkout, overrides = split_checkout(overrides)
    cmd = [sys.executable, "-m", "classifier_training.training", f"hydra.run.dir={run_dir}", f"seed={seed}",
           *QUIET, *overrides]
    if cores is not None:
        cmd = ["taskset", "-c", ",".join(map(str, cores)), *cmd]
    env = dict(os.environ, PYTHONPATH=f"{checkout}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    with tempfile.TemporaryFile("w+") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=checkout, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(proc.pid, 0)  # this run's own CPU, even with runs in parallel
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        output = out.read()
    row = dict(config=name, seed=seed, wall_s=wall, cpu_s=usage.ru_utime + usage.ru_stime, rc=proc.returncode)
    metrics = run_dir / "metrics.json"
    if proc.returncode == 0 and metrics.exists():
        values = json.loads(metrics.read_text())
        row["test_top1"], row["val_top1"] = values.get("test/acc_top1"), values.get("val/acc_top1")
    else:
        row["error"] = output[-3000:]
    print(json.dumps({k: v for k, v in row.items() if k != "error"}), flush=True)
    if "error" in row:
        print(row["error"], file=sys.stderr, flush=True)
    return row


def summarise(rows: list[dict], configs: list[tuple[str, list[str]]]) -> str:
    lines = ["| config | overrides | test top-1 median | mean | min-max | runs | wall median (s) | CPU median (s) |",
             "|---|---|---:|---:|---|---:|---:|---:|"]
    for name, overrides in configs:
        mine = [r for r in rows if r["config"] == name and r.get("test_top1") is not None]
        if not mine:
            lines.append(f"| {name} | `{' '.join(overrides)}` | failed |  |  | 0 |  |  |")
            continue
        accs = [r["test_top1"] for r in mine]
        lines.append(f"| {name} | `{' '.join(overrides) or '(defaults)'}` | {statistics.median(accs):.3f} | "
                     f"{statistics.fmean(accs):.4f} | {min(accs):.3f}-{max(accs):.3f} | {len(mine)} | "
                     f"{statistics.median(r['wall_s'] for r in mine):.0f} | "
                     f"{statistics.median(r['cpu_s'] for r in mine):.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", action="append", required=True, help="name=overrides (repeatable)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1])
    ap.add_argument("--jobs", type=int, default=1, help="runs at once")
    ap.add_argument("--cores-per-job", type=int, default=0, help="pin each run to this many cores (0: no pinning)")
    ap.add_argument("--first-core", type=int, default=0, help="first core of the pinned range")
    ap.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS of each run (0: leave as is)")
    ap.add_argument("--keep", metavar="DIR", help="keep the run folders under DIR")
    ap.add_argument("--out", help="also write the table (and the raw rows as JSON) to this file")
    args = ap.parse_args()
    configs = [parse_config(c) for c in args.config]
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="sweep_"))
    tasks = [(name, overrides, seed) for seed in args.seeds for name, overrides in configs]
    free_slots = list(range(args.jobs))

    def work(task):
        name, overrides, seed = task
        slot = free_slots.pop()
        try:
            cores = (list(range(args.first_core + slot * args.cores_per_job,
                                args.first_core + (slot + 1) * args.cores_per_job))
                     if args.cores_per_job else None)
            return run_one(name, overrides, seed, base / f"{name}_seed{seed}", cores, args.threads or None)
        finally:
            free_slots.append(slot)

    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(work, tasks))
    table = summarise(rows, configs)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n\n```json\n" + json.dumps(rows, indent=1, default=str) + "\n```\n")


if __name__ == "__main__":
    main()
