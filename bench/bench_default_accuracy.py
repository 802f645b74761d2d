"""The default run over several seeds: test top-1 (mean and spread) and wall time of a bare `classifier-train`.

Each seed is one real `classifier-train seed=N` run on the embedded sample (the CLI as a user runs it, through
`sweep_defaults.run_one`: a fresh process, its own run folder), one after the other so that the runs do not
share the cores. The aim (issue "Speed", section 3): the default run ends with test top-1 of at least 0.87
on the sample, as the mean over 5 seeds, and takes no longer than it did before the speed work (165 s of
wall time for `make train` on this machine class, bench/RESULTS.md "make train", 2026-11-28).

    python bench/bench_default_accuracy.py                  # 5 seeds, about 13 minutes on 2 cores
    python bench/bench_default_accuracy.py --seeds 1 2 --no-write --set trainer.max_epochs=8
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Figure, append_results, scratch_dir  # noqa: E402
from sweep_defaults import run_one  # noqa: E402

ACCURACY_AIM = 0.87
WALL_AIM_S = 165.0  # the default run's wall time before the speed work (make train, 2026-11-28)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--set", nargs="*", default=[], help="overrides (Hydra syntax); none: the real defaults")
    ap.add_argument("--keep", metavar="DIR", help="keep the run folders under DIR")
    ap.add_argument("--no-write", action="store_true", help="print only; do not append to bench/RESULTS.md")
    args = ap.parse_args(argv)
    base = Path(args.keep) if args.keep else scratch_dir("default_accuracy_")
    rows = [run_one("default", args.set, seed, base / f"seed{seed}", None, None) for seed in args.seeds]
    done = [r for r in rows if r.get("test_top1") is not None]
    if not done:
        print("every run failed; see the errors above", file=sys.stderr)
        return 1
    accs = [r["test_top1"] for r in done]
    walls = [r["wall_s"] for r in done]
    mean = statistics.fmean(accs)
    spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
    print(f"test top-1 over {len(accs)} seeds: mean {mean:.4f}, std {spread:.4f}, "
          f"min {min(accs):.4f}, max {max(accs):.4f}; wall median {statistics.median(walls):.0f} s")
    if args.no_write:
        return 0 if len(done) == len(rows) else 1
    figures = [Figure.at_least(f"test top-1, mean of {len(accs)} seeds", mean, "", ACCURACY_AIM),
               Figure(f"test top-1, standard deviation over {len(accs)} seeds", spread, ""),
               Figure("test top-1, lowest seed", min(accs), ""),
               Figure("test top-1, highest seed", max(accs), ""),
               Figure.at_most("wall time of one default run (median over the seeds)",
                              statistics.median(walls), "s", WALL_AIM_S),
               Figure("wall time, slowest seed", max(walls), "s")]
    per_seed = ", ".join(f"seed {r['seed']}: {r['test_top1']:.4f} in {r['wall_s']:.0f} s" for r in done)
    failed = [r["seed"] for r in rows if r.get("test_top1") is None]
    notes = (f"`classifier-train seed=N{(' ' + ' '.join(args.set)) if args.set else ''}` on the embedded "
             f"sample, one run after the other; test top-1 is `test/acc_top1` of metrics.json (the best "
             f"checkpoint, EMA weights). Per seed: {per_seed}."
             + (f" Failed seeds: {failed}." if failed else "")
             + f" The wall-time aim is the default run before the speed work ({WALL_AIM_S:.0f} s, "
             "`make train` on 2026-11-28 on this machine class); absolute seconds move with the load.")
    append_results("Default run: accuracy over seeds and wall time", figures, notes=notes)
    return 0 if len(done) == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
