"""The user's route, end to end, in a minute: the installed package imports, `classifier-train`
fits one epoch on a tiny real dataset (the ONNX model it exports is verified against PyTorch), and
`classifier-predict` runs that model on an image.

CI runs it on macOS and Windows after `pip install -c constraints.txt .` (Linux runs the whole
suite); run it with any interpreter that has the package installed: `python tools/smoke_test.py`.
It writes only into a temporary folder, trains on the CPU and exits non-zero, with the command's
output, on the first failure.
"""
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

MODULES = ("classifier_training", "classifier_training.core", "classifier_training.predict",
           "classifier_training.data.datamodule", "classifier_training.model",
           "classifier_training.export", "classifier_training.training",
           "classifier_training.test_utils")
# the default data loading (worker processes, spawned on macOS and Windows); the CPU: runners have
# no usable GPU
FIT = ["trainer.max_epochs=1", "trainer.accelerator=cpu", "data.image_size=32",
       "data.batch_size=16", "trainer.enable_progress_bar=false",
       "trainer.enable_model_summary=false"]


def script(name: str) -> str:
    "The console script `name` installed beside this interpreter (bin/ or Scripts\\), else on PATH."
    found = shutil.which(name, path=sysconfig.get_path("scripts")) or shutil.which(name)
    if found is None: sys.exit(f"smoke test: the console script {name!r} is not installed")
    return found


def run(cmd: list[str], cwd: Path, env: dict) -> str:
    "Run `cmd`; on failure print its output and stop."
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          encoding="utf-8", errors="replace")
    seconds = time.perf_counter() - t0
    print(f"  {Path(cmd[0]).name} ... exit {proc.returncode} in {seconds:.0f} s", flush=True)
    if proc.returncode != 0:
        print(f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}")
        sys.exit(f"smoke test failed: {' '.join(map(str, cmd))}")
    return proc.stdout


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def main() -> int:
    print(f"Python {platform.python_version()} on {platform.platform()}")
    for name in MODULES: importlib.import_module(name)
    import lightning, onnxruntime, timm, torch  # noqa: E401 (already imported by the package)
    import classifier_training
    print(f"classifier_training {classifier_training.__version__}, torch {torch.__version__}, "
          f"lightning {lightning.__version__}, timm {timm.__version__}, "
          f"onnxruntime {onnxruntime.__version__}")
    from classifier_training.test_utils import tiny_dataset

    work = Path(tempfile.mkdtemp(prefix="ct_smoke_"))
    try:
        env = {**os.environ, "PYTHONUNBUFFERED": "1",
               "CLASSIFIER_TRAINING_CACHE": str(work / "cache")}
        data = tiny_dataset(work / "data", per_class=8)
        run_dir = work / "run"
        # forward slashes: a Windows path is then one plain Hydra override value
        run([script("classifier-train"), f"data.root={data.as_posix()}",
             f"hydra.run.dir={run_dir.as_posix()}", *FIT], work, env)
        verification = read_json(run_dir / "export_report.json")["verification"]
        assert verification["passed"], verification
        metrics = read_json(run_dir / "metrics.json")
        image = next((data / "test" / "Bag").iterdir())
        out = run([script("classifier-predict"), str(run_dir / "model.onnx"), str(image),
                   "--top-k", "2"], work, env)
        classes = read_json(run_dir / "labels_mapping.json")["class_names"]
        assert image.name in out and any(c in out for c in classes), out
        print(f"one epoch: test/acc_top1 {metrics['test/acc_top1']:.3f}; ONNX verified, max abs "
              f"diff {verification['max_abs_diff']:.1e}; classifier-predict printed: "
              f"{out.strip().splitlines()[0]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("smoke test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
