"""Seconds from a cold process to `classifier-train --help`, against the import of the whole pipeline.

`--help` imports only Hydra and the library's torch-free core (the pipeline imports torch, Lightning and
timm where a run needs them) and writes Hydra's help text without Hydra listing its own groups
(`classifier_training.training.app_help`). The second figure is what `--help` paid before that change: the
import of the pipeline (torch, Lightning, timm, the data module, the model), which the old module did at
its top, before Hydra even started (about 6 s for `--help` then, on this kind of machine). Each figure
is the median wall time of fresh processes, timed in alternation. Aim: `--help` under 2 s.

    .venv/bin/python bench/bench_help_time.py             # appends a section to bench/RESULTS.md
    .venv/bin/python bench/bench_help_time.py --no-write
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _harness import Figure, append_results, time_interleaved  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HELP = [sys.executable, "-m", "classifier_training.training", "--help"]
PIPELINE = [sys.executable, "-c", "import classifier_training.training, classifier_training.config, "
            "classifier_training.run_folder, classifier_training.export"]


def run(cmd: list[str]) -> None:
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    help_t, pipeline_t = time_interleaved([lambda: run(HELP), lambda: run(PIPELINE)],
                                          repeats=args.repeats, warmup=1)
    figures = [Figure.at_most("classifier-train --help, cold process", help_t.median, "s", 2),
               Figure("import of the whole pipeline (what --help paid before)", pipeline_t.median, "s",
                      "", None)]
    for f in figures: print(f.row())
    if not args.no_write:
        append_results("classifier-train --help", figures, notes=f"Median of {args.repeats} fresh "
                       "processes each, in alternation, after one warm-up (the OS file cache warm).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
