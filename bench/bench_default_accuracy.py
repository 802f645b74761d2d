"""The default run over several seeds: test top-1 (mean and spread) and its time against the code before the speed work.

Each seed is one real `classifier-train seed=N` run on the embedded sample (the CLI as a user runs it, through
`sweep_defaults.run_one`: a fresh process, its own run folder), one after the other so that the runs do not
share the cores. The aim (issue "Speed", section 3): the default run ends with test top-1 of at least 0.87
on the sample, as the mean over 5 seeds, and takes no longer than it did before the speed work on the same
machine. The yardstick is measured in the same run: the default run of the code before the speed work
(commit 6fd1d93, checked out with `git worktree` from this clone's history) runs for the first seeds,
interleaved with the current one, and the figure is the ratio of the median times (wall, and CPU beside).

    python bench/bench_default_accuracy.py                  # 5 seeds + 3 runs of the old code, about 16 minutes
    python bench/bench_default_accuracy.py --seeds 1 2 --no-write --set trainer.max_epochs=8 --before none
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Figure, append_results, scratch_dir  # noqa: E402
from sweep_defaults import run_one  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ACCURACY_AIM = 0.87
BEFORE_COMMIT = "6fd1d93"  # the code the issue "Speed" was measured against
TIME_RATIO_AIM = 1.0  # no longer than the default run before the speed work


def checkout_before(commit: str, where: Path) -> Path | None:
    "A detached worktree of `commit` at `where`, or None (printed why) when this clone cannot make one."
    proc = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), commit],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"no worktree of {commit} (the time ratio is left out): {proc.stderr.strip()}", file=sys.stderr)
        return None
    return where


def remove_checkout(where: Path) -> None:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(where)], capture_output=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--set", nargs="*", default=[], help="overrides (Hydra syntax); none: the real defaults")
    ap.add_argument("--before", default=BEFORE_COMMIT,
                    help="commit whose default run is the time yardstick ('none': no yardstick)")
    ap.add_argument("--before-runs", type=int, default=3, help="runs of the old code, one per seed, interleaved")
    ap.add_argument("--keep", metavar="DIR", help="keep the run folders under DIR")
    ap.add_argument("--no-write", action="store_true", help="print only; do not append to bench/RESULTS.md")
    args = ap.parse_args(argv)
    base = Path(args.keep) if args.keep else scratch_dir("default_accuracy_")
    before = (checkout_before(args.before, base / "before")
              if args.before != "none" and args.before_runs > 0 else None)
    rows, before_rows = [], []
    try:
        for i, seed in enumerate(args.seeds):
            run_before = before is not None and i < args.before_runs
            if run_before and i % 2:  # alternate the order, so that neither side always runs second
                before_rows.append(run_one("before", [f"@{before}"], seed, base / f"before{seed}", None, None))
            rows.append(run_one("default", args.set, seed, base / f"seed{seed}", None, None))
            if run_before and not i % 2:
                before_rows.append(run_one("before", [f"@{before}"], seed, base / f"before{seed}", None, None))
    finally:
        if before is not None: remove_checkout(before)
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
    before_done = [r for r in before_rows if r.get("test_top1") is not None]
    paired = [r for r in done if any(b["seed"] == r["seed"] for b in before_done)]
    ratios = {}
    if before_done and paired:
        for key in ("wall_s", "cpu_s"):
            ratios[key] = (statistics.median(r[key] for r in paired)
                           / statistics.median(b[key] for b in before_done))
        print(f"against {args.before} ({len(before_done)} runs, interleaved): wall {ratios['wall_s']:.3f}x, "
              f"CPU {ratios['cpu_s']:.3f}x")
    if args.no_write:
        return 0 if len(done) == len(rows) else 1
    figures = [Figure.at_least(f"test top-1, mean of {len(accs)} seeds", mean, "", ACCURACY_AIM),
               Figure(f"test top-1, standard deviation over {len(accs)} seeds", spread, ""),
               Figure("test top-1, lowest seed", min(accs), ""),
               Figure("test top-1, highest seed", max(accs), ""),
               Figure("wall time of one default run (median over the seeds)", statistics.median(walls), "s"),
               Figure("wall time, slowest seed", max(walls), "s"),
               Figure("CPU time of one default run (median over the seeds; the process and its children)",
                      statistics.median(r["cpu_s"] for r in done), "s")]
    if ratios:
        figures += [
            Figure.at_most(f"wall time of the default run / the default run before the speed work ({args.before}), "
                           f"medians of {len(paired)} interleaved pairs", ratios["wall_s"], "x", TIME_RATIO_AIM),
            Figure(f"CPU time of the default run / before the speed work ({args.before}), same pairs",
                   ratios["cpu_s"], "x"),
            Figure(f"before the speed work ({args.before}): wall time of its default run (median)",
                   statistics.median(b["wall_s"] for b in before_done), "s"),
            Figure(f"before the speed work ({args.before}): test top-1 (mean of its {len(before_done)} runs)",
                   statistics.fmean(b["test_top1"] for b in before_done), "")]
    per_seed = ", ".join(f"seed {r['seed']}: {r['test_top1']:.4f} in {r['wall_s']:.0f} s ({r['cpu_s']:.0f} s CPU)"
                         for r in done)
    failed = [r["seed"] for r in rows if r.get("test_top1") is None]
    notes = (f"`classifier-train seed=N{(' ' + ' '.join(args.set)) if args.set else ''}` on the embedded "
             f"sample, one run after the other; test top-1 is `test/acc_top1` of metrics.json (the best "
             f"checkpoint, EMA weights). Per seed: {per_seed}."
             + (f" Failed seeds: {failed}." if failed else "")
             + (f" The time yardstick: `classifier-train seed=N` of commit {args.before} (the code before the "
                "speed work, its own defaults), from a `git worktree` of this clone, run for seeds "
                f"{', '.join(str(b['seed']) for b in before_done)} interleaved with the current code "
                "(the order alternating); per run: "
                + ", ".join(f"seed {b['seed']}: {b['test_top1']:.4f} in {b['wall_s']:.0f} s "
                            f"({b['cpu_s']:.0f} s CPU)" for b in before_done) + "."
                if ratios else " No run of the code before the speed work (no yardstick).")
             + " Absolute seconds move with the host's load; the ratios of interleaved runs less so.")
    append_results("Default run: accuracy over seeds and wall time", figures, notes=notes)
    return 0 if len(done) == len(rows) and len(before_done) == len(before_rows) else 1


if __name__ == "__main__":
    sys.exit(main())
