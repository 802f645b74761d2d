"""Fixed costs: the command-line start-ups and everything a default training run does outside its epochs.

- `classifier-predict --help` (aim < 0.5 s), one image predicted from a cold process (< 1 s) and
  `classifier-train --help` (< 2 s): wall time of a fresh Python process each, median of `--repeats`,
  the three interleaved;
- the default `classifier-train` run (the embedded sample) with a clock callback added through the config
  (`+callbacks.phase_clock`): its phases in seconds, and the share of the whole command outside the training
  epochs (aim < 10 %): start-up to the first Trainer hook (imports, config, data scan and check, model),
  sanity check, the epochs, after the last epoch (waiting for figures, checkpoints), test, export and its
  verification, and the rest up to the process exit;
- the pipeline's imports and the interpreter's exit in a fresh process, with the garbage collector as
  Python sets it and paused-then-frozen as `classifier-train` does, median of `--repeats`;
- the ONNX export of the default model in a fresh process with each of PyTorch's exporters
  (`export_graph(exporter=...)`, the TorchScript one is the default's first choice), median of `--repeats`;
- import times of the modules this run loads (`python -X importtime`), the largest ones listed.

On a 2-core machine shared with other jobs the seconds move with the load; the shares move less.

    python bench/bench_fixed_costs.py                 # ~4 minutes (one default run)
    python bench/bench_fixed_costs.py --no-train      # the start-ups and imports only
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Figure, append_results, scratch_dir  # noqa: E402

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SCRIPTS = {"classifier-train": "classifier_training.training", "classifier-predict": "classifier_training.predict",
           "classifier-export": "classifier_training.export"}


def command(name: str, *args: str) -> list[str]:
    "The console script `name` as the installed entry point runs it: import the module, call main()."
    code = (f"import sys; sys.argv[0] = {name!r}; from {SCRIPTS[name]} import main; "
            "sys.exit(main())")
    return [sys.executable, "-c", code, *args]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(BENCH), os.environ.get("PYTHONPATH", "")])}


def wall(cmd: list[str], **kw) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env(), check=True, **kw)
    return time.perf_counter() - start


def startups(model: Path | None, image: Path | None, repeats: int) -> dict[str, list[float]]:
    cmds = {"classifier-predict --help": command("classifier-predict", "--help"),
            "classifier-train --help": command("classifier-train", "--help")}
    if model is not None:
        cmds["classifier-predict, one image (cold process)"] = command("classifier-predict", str(model), str(image))
    times = {k: [] for k in cmds}
    for _ in range(repeats):
        for k, cmd in cmds.items(): times[k].append(wall(cmd))
    return times


HEAVY = ("torch", "lightning", "torchmetrics", "torchvision", "torch._dynamo", "scipy", "timm", "matplotlib",
         "onnx", "onnxruntime", "onnxscript", "hydra", "PIL", "numpy", "rich")


def import_table(module: str) -> list[tuple[str, float]]:
    "(package, cumulative seconds where it was first imported) for the heavy packages `module` pulls in."
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], env=env(),
                         capture_output=True, text=True).stderr
    seen = {}
    for line in out.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|\s*(\S+)", line)
        if m and m.group(3) in HEAVY + (module,):
            seen[m.group(3)] = max(seen.get(m.group(3), 0.0), int(m.group(2)) / 1e6)
    return sorted(seen.items(), key=lambda r: -r[1])


EXPORT_CODE = """
import sys, time, torch
from classifier_training.export import _Logits, export_graph
from classifier_training.model import ImageClassifier
graph = _Logits(ImageClassifier(num_classes=10, backbone="resnet10t", image_size=32)).eval()
start = time.perf_counter()
export_graph(graph, torch.zeros(2, 3, 32, 32), exporter=sys.argv[1])
print(time.perf_counter() - start)
"""


def export_times(repeats: int) -> dict[str, list[float]]:
    "Seconds of one cold export of the default model (fresh process each), per exporter, interleaved."
    times = {"torchscript": [], "dynamo": []}
    for _ in range(repeats):
        for exporter in times:
            out = subprocess.run([sys.executable, "-c", EXPORT_CODE, exporter], env=env(), check=True,
                                 capture_output=True, text=True).stdout
            times[exporter].append(float(out.split()[-1]))
    return times


PIPELINE_IMPORTS = ("lightning.pytorch, classifier_training.callbacks.onnx_export, "
                    "classifier_training.data.datamodule, classifier_training.model")

GC_CODE = f"""
import gc, sys, time
if sys.argv[1] == "paused": gc.disable()
start = time.perf_counter()
import {PIPELINE_IMPORTS}
if sys.argv[1] == "paused": gc.freeze(); gc.enable()
print(time.perf_counter() - start, time.time(), flush=True)
"""


def collector_times(repeats: int) -> dict[str, dict[str, list[float]]]:
    """Import the pipeline in a fresh process with the garbage collector as Python sets it, or paused and
    then frozen as classifier-train does: import seconds and exit seconds (the print to the process end)."""
    times = {mode: {"import": [], "exit": []} for mode in ("as is", "paused")}
    for _ in range(repeats):
        for mode in times:
            out = subprocess.run([sys.executable, "-c", GC_CODE, mode], env=env(), check=True,
                                 capture_output=True, text=True).stdout
            end = time.time()
            imported, printed = map(float, out.split()[-2:])
            times[mode]["import"].append(imported)
            times[mode]["exit"].append(end - printed)
    return times


def default_run(run_dir: Path, extra: list[str]) -> dict:
    "One default classifier-train run with the phase clock; the phases in seconds."
    marks = run_dir.parent / "phases.json"
    cmd = command("classifier-train", f"hydra.run.dir={run_dir}", "+callbacks.phase_clock._target_=phase_clock.PhaseClock",
                  f"+callbacks.phase_clock.path={marks}", *extra)
    start = time.time()
    subprocess.run(cmd, env={**env(), "PHASE_CLOCK_START": str(start)}, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.time()
    m = json.loads(marks.read_text())
    epochs = m["epoch_starts"]
    phases = {
        "start-up: imports, config, data scan + check, model (to the first Trainer hook)": m["setup"] - start,
        "fit start to sanity check (model summary, dataset report, loaders)": m["sanity_start"] - m["setup"],
        "sanity check (2 val batches)": m["sanity_end"] - m["sanity_start"],
        "sanity end to the first epoch": epochs[0] - m["sanity_end"],
        "training epochs (validation included)": m["train_end"] - epochs[0],
        "after the last epoch to fit end: calibration, ONNX export + verification (onnx_export callback), "
        "final figures, EMA swap": m["fit_end"] - m["train_end"],
        "test (best checkpoint)": m["test_end"] - m["test_start"] if "test_end" in m else 0.0,
        "between fit end and test start (checkpoint load)": m.get("test_start", m["fit_end"]) - m["fit_end"],
        "after test: waiting for figures, run record, metrics, interpreter exit": end - m.get("test_end", m["fit_end"]),
    }
    return {"phases": phases, "total": end - start, "epochs": len(epochs),
            "first_epoch": (epochs[1] - epochs[0]) if len(epochs) > 1 else None}


def default_epochs() -> int:
    "trainer.max_epochs of the default config."
    import classifier_training
    from hydra import compose, initialize_config_dir
    conf = Path(classifier_training.__file__).resolve().parent / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base=None):
        return int(compose(config_name="train", overrides=["paths.run_dir=."]).trainer.max_epochs)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-train", action="store_true", help="skip the default training run")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides for the default run")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    figures, notes = [], []
    model = image = None
    if not args.no_train:
        tmp = scratch_dir("bench_fixed_")
        run = default_run(tmp / "run", args.set)
        model = tmp / "run" / "model.onnx"
        total = run["total"]
        outside = total - run["phases"]["training epochs (validation included)"]
        for k, v in run["phases"].items(): print(f"{v:7.2f} s  {k}")
        print(f"{total:7.2f} s  whole command; outside the epochs {outside:.2f} s = {outside / total:.1%}")
        epochs_s = run["phases"]["training epochs (validation included)"]
        n_default = default_epochs()
        if run["epochs"] != n_default:  # a shortened run: the same fixed costs beside the default's epochs
            share = outside / (outside + n_default * epochs_s / run["epochs"])
            print(f"extrapolated to the default {n_default} epochs: outside the epochs {share:.1%}")
            figures.append(Figure(f"run of {run['epochs']} epochs: share outside the epochs", 100 * outside / total,
                                  "%"))
            figures.append(Figure.at_most(f"share outside the epochs, extrapolated to the default {n_default} epochs",
                                          100 * share, "%", 10))
        else:
            figures.append(Figure.at_most("default run: share of the command outside the training epochs",
                                          100 * outside / total, "%", 10))
        figures += [Figure(f"default run: {k}", v, "s") for k, v in run["phases"].items()]
        figures.append(Figure("default run: whole command", total, "s"))
        from classifier_training.data.sample import materialize_sample
        image = next(p for p in sorted(Path(materialize_sample()).rglob("*.png")))
    times = startups(model, image, args.repeats)
    aims = {"classifier-predict --help": 0.5, "classifier-train --help": 2.0,
            "classifier-predict, one image (cold process)": 1.0}
    for k, v in times.items():
        med = statistics.median(v)
        print(f"{med:6.2f} s  {k} (runs {', '.join(f'{x:.2f}' for x in v)})")
        figures.append(Figure.at_most(k, med, "s", aims[k]))
    exports = export_times(args.repeats)
    for exporter, v in exports.items():
        print(f"{statistics.median(v):6.2f} s  export_graph, exporter={exporter} (runs {', '.join(f'{x:.2f}' for x in v)})")
        figures.append(Figure(f"ONNX export of the default model, cold process, exporter={exporter}",
                              statistics.median(v), "s"))
    collector = collector_times(args.repeats)
    for mode, phases in collector.items():
        for phase, v in phases.items():
            what = "collector as Python sets it" if mode == "as is" else "collector paused, then frozen"
            print(f"{statistics.median(v):6.2f} s  pipeline {phase}, {what} (runs {', '.join(f'{x:.2f}' for x in v)})")
            figures.append(Figure(f"pipeline {phase} in a fresh process, {what}", statistics.median(v), "s"))
    for module in (PIPELINE_IMPORTS, "classifier_training.predict"):
        rows = import_table(module)
        print(f"slowest imports under {module}: " + ", ".join(f"{n} {s:.2f} s" for n, s in rows))
        notes.append(f"- `python -X importtime -c 'import {module}'`: cumulative seconds of the heavy packages where first imported (nested: torch._dynamo comes in through torchvision, scipy through torchmetrics): "
                     + ", ".join(f"{n} {s:.2f}" for n, s in rows))
    if not args.no_write:
        notes.insert(0, f"Start-ups: median of {args.repeats} fresh processes each, interleaved. Default run: "
                     f"`classifier-train {' '.join(args.set)}` with a phase clock callback; the phases are wall "
                     "seconds between Trainer hooks (a shared 2-core machine: the seconds move with the load).")
        append_results("Fixed costs: start-up and outside the epochs", figures, notes="\n".join(notes))


if __name__ == "__main__":
    main()
