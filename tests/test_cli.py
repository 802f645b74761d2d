"""The real `classifier-train` CLI, on tiny real data from the embedded sample.

Fast (default suite): strict-config errors (one through the installed console script in a
subprocess, the others by `main()` in this process: `cli_runs.in_process`), a dry run (`python -m`,
a subprocess), the artifacts of the session's finished run (`finished_run` in tests/conftest.py: the
default config, one epoch), resume errors (in this process).
Slow (`-m slow`): every dataset format, resume after kill -9, DDP on 2 CPU processes, a dry run on the full sample.
"""
import inspect
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from classifier_training.callbacks.ema import EMACallback
from classifier_training.data.sample import write_sample_subset
from classifier_training.test_utils import TINY_CLASSES
from cli_runs import BOOT_CLASS, CANTA, in_process

BIN = Path(sys.executable).parent
CLI = [str(BIN / "classifier-train")]
MODULE = [sys.executable, "-m", "classifier_training.training"]
QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
TINY = ["data.image_size=32", "data.batch_size=16", "trainer.max_epochs=1", *QUIET]
CLASSES = ("Bag", "Coat", "Sneaker", "Trouser")
FINISHED_RUN_CLASSES = (BOOT_CLASS, "Coat", "Sneaker", CANTA)  # natural order: "ankle boot" first


def run_cli(args, tmp_path, cmd=CLI, timeout=600, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CLASSIFIER_TRAINING_CACHE": str(tmp_path / "cache")}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([*cmd, *map(str, args)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=timeout, **kw)


def explain(proc):
    return f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"


@pytest.fixture(scope="module")
def four_classes(tmp_path_factory):
    "Real sample images of four classes, 8 per class and split (the DDP run)."
    return write_sample_subset(tmp_path_factory.mktemp("data") / "folders", per_class=8, classes=CLASSES)


def assert_run_folder(run: Path, classes=CLASSES):
    """Every artifact the issue lists is there, written once."""
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "last.ckpt" in ckpts and len(ckpts) == 2, ckpts  # the best checkpoint + last.ckpt
    for name in ("model.onnx", "labels_mapping.json", "export_report.json", "metrics.json", "classification_report.csv",
                 "classification_report.md", "confusion_matrix.png", "dataset_report.json", "model_info.json",
                 "training_history.csv", "sample_predictions.png", "config.yaml", "run_manifest.json"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, f"{name} missing in {sorted(os.listdir(run))}"
    assert list((run / "training_history").glob("*.png")), "no training history plots"
    assert not list(run.rglob("*.tmp")), "temporary files left behind"
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("val/acc_top1", "val/loss", "test/acc_top1", "test/loss"):
        assert 0 <= metrics[key] < 100, (key, metrics)
    for name in ("calibration.json", "reliability_diagram.png", "risk_coverage.png",
                 "risk_coverage.csv"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, f"{name} missing"
    for key in ("test/ece", "test/ece_calibrated", "test/nll", "test/nll_calibrated", "test/brier",
                "test/brier_calibrated", "test/temperature"):  # the calibration callback's
        assert key in metrics, (key, sorted(metrics))
    fitted = json.loads((run / "calibration.json").read_text())["temperature"]
    assert abs(metrics["test/temperature"] - fitted) <= 1e-6 * fitted  # logged as float32
    mapping = json.loads((run / "labels_mapping.json").read_text())
    assert mapping["class_names"] == list(classes)
    manifest = json.loads((run / "run_manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["seed"] == 42 and len(manifest["config_sha256"]) == 64
    assert len(manifest["dataset"]["file_list_sha256"]) == 64
    assert manifest["versions"]["lightning"] and manifest["started_at"] and manifest["finished_at"]
    export = json.loads((run / "export_report.json").read_text())
    assert export["verification"]["passed"] is True, export["verification"]
    return metrics, manifest


# ---------------------------------------------------------------- fast: strict config and dry run

@pytest.mark.parametrize("override,expected,route", [
    ("data.bach_size=8", "did you mean 'data.batch_size'", "console script"),  # for real
    ("trainer.max_epochs=two", "trainer.max_epochs", "in process"),
    ("logger=tensorbord", "logger=tensorboard", "in process"),
])
def test_strict_config_fails_before_any_data_is_read(tmp_path, monkeypatch, capsys, override,
                                                     expected, route):
    # data.root does not exist: a run that reached the data would fail with a dataset error instead
    run = tmp_path / "run"
    args = [override, f"data.root={tmp_path / 'no_such_dataset'}"]
    if route == "in process": proc = in_process(args, run, monkeypatch, capsys)
    else: proc = run_cli([*args, f"hydra.run.dir={run}"], tmp_path)
    assert proc.returncode == 2, explain(proc)
    assert expected in proc.stderr, explain(proc)
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not run.exists(), "the run folder was created: the config was not checked first"


def test_dry_run_prints_config_data_and_callbacks_and_trains_nothing(tmp_path, tiny_data):
    run = tmp_path / "run"
    proc = run_cli(["dry_run=true", f"data.root={tiny_data}", f"hydra.run.dir={run}", *QUIET], tmp_path, cmd=MODULE)
    assert proc.returncode == 0, explain(proc)
    out = proc.stdout
    assert "Resolved config" in out and "backbone: resnet10t" in out
    assert all(c in out for c in TINY_CLASSES)
    assert "ModelCheckpoint" in out and "EMACallback" in out
    assert not (run / "checkpoints").exists() and not (run / "model.onnx").exists()
    assert not (run / "metrics.json").exists() and not (run / "run_manifest.json").exists()


def test_tiny_run_with_the_default_config(finished_run):
    "The session's finished run: the default config (32 px, one epoch) on data with damaged files."
    proc, run = finished_run.run, finished_run.run.run_dir
    assert proc.returncode == 0, explain(proc)
    metrics, manifest = assert_run_folder(run, FINISHED_RUN_CLASSES)
    assert "test/acc_top1" in proc.stdout  # the summary table
    log = (run / "train.log").read_text(encoding="utf-8")  # what the terminal showed, kept in the run folder
    assert "classifier-train summary" in log and "data.root" in log and "`Trainer.fit` stopped" in log, log[-3000:]
    assert "\r" not in log and "\x1b" not in log
    assert manifest["world_size"] == 1 and manifest["resumed_from"] is None
    assert (run / "logs" / "metrics.csv").is_file()  # the default CSV logger writes into the run folder
    cfg = (run / "config.yaml").read_text()
    assert f"root: {finished_run.data_root}" in cfg and "image_size: 32" in cfg


def test_missing_resume_path_is_a_config_error(tmp_path, tiny_data, monkeypatch, capsys):
    proc = in_process([f"data.root={tiny_data}", f"resume={tmp_path / 'nope.ckpt'}", *TINY],
                      tmp_path / "run", monkeypatch, capsys)
    assert proc.returncode == 2, explain(proc)
    assert "nope.ckpt" in proc.stderr and "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    assert "nope.ckpt" in (tmp_path / "run" / "train.log").read_text(encoding="utf-8")  # the error is in the log too


def test_resume_from_a_file_that_is_not_a_checkpoint_is_a_config_error(tmp_path, tiny_data,
                                                                      monkeypatch, capsys):
    (tmp_path / "notes.ckpt").write_text("not a checkpoint")
    proc = in_process([f"data.root={tiny_data}", f"resume={tmp_path / 'notes.ckpt'}", *TINY],
                      tmp_path / "run", monkeypatch, capsys)
    assert proc.returncode == 2, explain(proc)
    assert "notes.ckpt" in proc.stderr and "not a readable checkpoint" in proc.stderr and "Traceback" not in proc.stderr
    assert (tmp_path / "notes.ckpt").read_text() == "not a checkpoint"  # the user's file is untouched


# ---------------------------------------------------------------- slow: formats, resume, DDP

@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["jsonl", "csv", "flat"])
def test_user_folder_in_each_format(tmp_path, fmt):
    data = write_sample_subset(tmp_path / fmt, per_class=8, classes=CLASSES, format=fmt)
    run = tmp_path / "run"
    extra = ["logger=tensorboard"] if fmt == "jsonl" else []
    proc = run_cli([f"data.root={data}", f"hydra.run.dir={run}", *TINY, *extra], tmp_path)
    assert proc.returncode == 0, explain(proc)
    _, manifest = assert_run_folder(run)
    assert manifest["dataset"]["format"].endswith(fmt)
    if fmt == "jsonl": assert list((run / "tensorboard").rglob("events.out.tfevents.*"))


@pytest.mark.slow
def test_resume_after_kill_9_in_the_middle_of_an_epoch(tmp_path):
    data = write_sample_subset(tmp_path / "data", per_class=20, classes=CLASSES)
    run = tmp_path / "run"
    args = [f"data.root={data}", f"hydra.run.dir={run}", "data.image_size=32", "data.batch_size=4",
            "trainer.max_epochs=3", *QUIET]
    last = run / "checkpoints" / "last.ckpt"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([*CLI, *args], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while not last.exists() and proc.poll() is None and time.monotonic() < deadline: time.sleep(0.05)
        assert last.exists(), f"no last.ckpt appeared (exit {proc.poll()}): {proc.stderr.read()[-3000:] if proc.poll() is not None else ''}"
        time.sleep(1.0)  # inside the next epoch (20 steps of a few hundred ms each)
        assert proc.poll() is None, "the run finished before it could be killed; make it longer"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None: os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (run / "metrics.json").exists()
    killed_at = torch.load(last, map_location="cpu", weights_only=True)
    steps_per_epoch = 20 * len(CLASSES) // 4
    assert killed_at["global_step"] < 3 * steps_per_epoch  # last.ckpt is whole and loads (atomic writes)
    manifest = json.loads((run / "run_manifest.json").read_text())
    assert manifest["status"] == "running"  # what a killed run leaves: the manifest says it never finished

    proc = run_cli([*args, "resume=auto"], tmp_path)
    assert proc.returncode == 0, explain(proc)
    assert "Resuming from" in proc.stdout and str(last) in proc.stdout
    metrics, manifest = assert_run_folder(run)  # also: no temporary file of the killed run is left
    assert manifest["resumed_from"] == str(last)
    final = torch.load(last, map_location="cpu", weights_only=True)
    assert final["global_step"] == 3 * steps_per_epoch
    # EMA state came back from the checkpoint: its update count covers the steps before the kill too
    assert "current_model_state" in final and "averaging_state" in final
    every = inspect.signature(EMACallback).parameters["update_every_n_steps"].default  # the CLI's default
    assert int(final["averaging_state"]["n_averaged"]) == (final["global_step"] + every - 1) // every  # steps 1, 1+n...


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_writes_each_artifact_once(tmp_path, four_classes):
    run = tmp_path / "run"
    proc = run_cli([f"data.root={four_classes}", f"hydra.run.dir={run}", *TINY,
                    "trainer.accelerator=cpu",
                    "trainer.devices=2", "trainer.strategy=ddp"], tmp_path, cmd=MODULE)
    assert proc.returncode == 0, explain(proc)
    metrics, manifest = assert_run_folder(run)
    assert manifest["world_size"] == 2
    assert proc.stdout.count("classifier-train summary") == 1  # one summary, from rank zero
    names = [p.name for p in run.rglob("*")]
    assert not [n for n in names if "-v1" in n or "version_1" in n], names  # nothing written twice
    assert len(list(run.glob("*.onnx"))) == 1


@pytest.mark.slow
def test_dry_run_on_the_embedded_sample(tmp_path):
    proc = run_cli(["dry_run=true", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode == 0, explain(proc)
    assert "image_size: 32" in proc.stdout and "crop_pct: 1.0" in proc.stdout and "T-shirt_top" in proc.stdout
