"""Cold-start time of the predictor (issue §4): `classifier-predict --help` and one image predicted, each in a fresh
Python process as the console script runs it, for this checkout and optionally an earlier revision side by side.

    python bench/bench_predict_startup.py --before 5ef125a

The earlier revision's `classifier_training/` is taken with `git archive` into a temporary folder (no worktree is
touched). The model is a tiny trained export of the embedded sample (test_utils.tiny_trained_export).
"""
import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
from _harness import Figure, append_results, scratch_dir  # noqa: E402

CONSOLE = "import sys; from classifier_training.predict import main; sys.argv[0] = 'classifier-predict'; sys.exit(main())"


def cold(source: Path, args: list[str], cwd: Path) -> float:
    "Wall seconds of one fresh interpreter running the console script's code with `args` against `source`."
    env = {**os.environ, "PYTHONPATH": str(source), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()  # cwd: not the checkout, whose folder `python -c` would put first on sys.path
    r = subprocess.run([sys.executable, "-c", CONSOLE, *args], env=env, capture_output=True, text=True, cwd=cwd)
    took = time.perf_counter() - start
    if r.returncode not in (0,): raise SystemExit(f"{args}: exit {r.returncode}: {r.stderr[-500:]}")
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", help="an earlier git revision to measure beside this checkout")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    work = scratch_dir("bench_predict_")
    sys.path.insert(0, str(ROOT))
    from classifier_training.test_utils import tiny_trained_export
    demo = tiny_trained_export(work / "demo", per_class=2, test_per_class=1)
    image = str(next((demo.data_root / "val").rglob("*.png")))
    sources = {"this checkout": ROOT}
    if args.before:
        old = work / "before"
        old.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.before, "classifier_training"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        sources = {f"before ({args.before})": old, **sources}
    cases = {"--help": ["--help"], "one image": [str(demo.model_path), image, "--reject", "none"]}
    cases_before = {"--help": ["--help"], "one image": [str(demo.model_path), image]}  # no --reject there
    runs = {(s, c): [] for s in sources for c in cases}
    baseline = []
    for _ in range(args.repeats):  # interleaved: the machine's load changes hit every variant alike
        start = time.perf_counter(); subprocess.run([sys.executable, "-c", "pass"], cwd=work); baseline.append(time.perf_counter() - start)
        for s, path in sources.items():
            for c in cases:
                runs[(s, c)].append(cold(path, (cases_before if s.startswith("before") else cases)[c], work))
    med = lambda xs: sorted(xs)[len(xs) // 2]
    figures = [Figure("python -c pass (interpreter start)", med(baseline), "s")]
    for (s, c), xs in runs.items():
        name = f"classifier-predict {c}, cold process, {s}"
        limit = 0.5 if c == "--help" else 1.0
        figures.append(Figure.at_most(name, med(xs), "s", limit) if s == "this checkout" else Figure(name, med(xs), "s"))
    for f in figures: print(f.row())
    append_results("Predictor cold start (issue §4)", figures, notes=(
        f"Medians of {args.repeats} fresh interpreters each, interleaved, running the console script's code "
        "(`from classifier_training.predict import main`). The predictor imports onnxruntime only when a model is "
        "opened, so --help needs numpy and Pillow only; 'one image' includes opening the session of a tiny model."))
    return 0


if __name__ == "__main__":
    sys.exit(main())
