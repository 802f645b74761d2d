"""A run folder belongs to one run (issue "Runs that protect their records"; chapter nbs/41a_run_folder.ipynb).

One finished tiny run, made by the real CLI (so its folder holds `.hydra/` and `train.log` too), is copied for each
case. Refused cases must leave it byte for byte as it was: a new run into it, a resume on other classes or another
backbone, a second run while the folder is locked, a dry run. In-process `train(compose_config(...))` wherever a
subprocess adds nothing; the CLI where Hydra's own writes matter. Unit tests of each piece live in the chapter.
Slow (`-m slow`): two real runs into one folder at the same time.
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from classifier_training.config import compose_config
from classifier_training.core import ConfigError
from classifier_training.run_folder import LOCK_FILE, RunFolderError, RunFolderWriteError
from classifier_training.test_utils import tiny_dataset
import classifier_training.training as train_module
from classifier_training.training import main, train

TINY = ["model.backbone=test_resnet", "data.image_size=32", "data.batch_size=4", "trainer.max_epochs=1",
        "trainer.limit_train_batches=2", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2",
        "callbacks=minimal", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
OTHER_CLASSES = ("Coat", "Dress", "Shirt")


def snapshot(root: Path) -> dict[str, str]:
    "Every file (sha256) and folder under root."
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def cli(args, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CLASSIFIER_TRAINING_CACHE": str(cwd / "cache")}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.Popen([sys.executable, "-m", "classifier_training.training", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: int = 600) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def explain(rc, out, err) -> str:
    return f"exit {rc}\n--- stdout ---\n{out[-4000:]}\n--- stderr ---\n{err[-4000:]}"


def run_in_process(overrides, run_dir, **kw):
    "train() as the CLI would run it; returns (result, what it printed)."
    out = io.StringIO()
    result = train(compose_config(list(overrides), run_dir=run_dir), console=Console(file=out, width=200), **kw)
    return result, out.getvalue()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("run_folder")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLASSIFIER_TRAINING_CACHE", str(path / "cache"))
        yield path


@pytest.fixture(scope="module")
def data(work) -> Path: return tiny_dataset(work / "data")


@pytest.fixture(scope="module")
def other_data(work) -> Path: return tiny_dataset(work / "other", classes=OTHER_CLASSES)


@pytest.fixture(scope="module")
def finished(work, data) -> Path:
    "A finished tiny run of the real CLI: checkpoints, model.onnx, logs/metrics.csv, .hydra/, train.log."
    run = work / "finished"
    rc, out, err = finish(cli([f"data.root={data}", *TINY, f"hydra.run.dir={run}"], work))
    assert rc == 0, explain(rc, out, err)
    assert json.loads((run / "run_manifest.json").read_text())["status"] == "completed"
    for name in ("model.onnx", "logs/metrics.csv", "checkpoints/last.ckpt", "train.log", ".hydra/config.yaml",
                 ".hydra/hydra.yaml", ".hydra/overrides.yaml"):
        assert (run / name).is_file(), name
    assert f"data.root={data}" in (run / ".hydra" / "overrides.yaml").read_text()
    assert "classifier-train summary" in (run / "train.log").read_text()
    assert not (run / LOCK_FILE).exists()  # released at the end
    return run


@pytest.fixture
def run_copy(finished, tmp_path) -> Path:
    "A copy of the finished run's folder for one test."
    return Path(shutil.copytree(finished, tmp_path / "run"))


@pytest.fixture
def live_pid():
    "The pid of a process that runs on this host for the test's duration."
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc.pid
    proc.kill(); proc.wait()


# ---------------------------------------------------------------- refused: the finished run's folder is unchanged

def test_refused_cases_leave_the_finished_run_folder_unchanged(run_copy, data, other_data, live_pid):
    before = snapshot(run_copy)
    # a new run into the folder (case 4), and its dry run
    for extra in ([], ["dry_run=true"]):
        with pytest.raises(RunFolderError, match="holds another run.*overwrite=true"):
            run_in_process([f"data.root={data}", *TINY, *extra], run_copy)
        assert snapshot(run_copy) == before
    # resume=auto on other classes (case 2)
    with pytest.raises(RunFolderError, match=r"classes \['Bag', 'Sneaker', 'Trouser'\] then"):
        run_in_process([f"data.root={other_data}", *TINY, "resume=auto"], run_copy)
    assert snapshot(run_copy) == before
    # a second run while another process holds the folder (case 6)
    owner = {"pid": live_pid, "host": socket.gethostname(), "started_at": "2026-01-01T00:00:00+00:00",
             "command": ["classifier-train", "resume=auto"]}
    (run_copy / LOCK_FILE).write_text(json.dumps(owner))
    with pytest.raises(RunFolderError, match=f"in use by another run \\(pid {live_pid} on host"):
        run_in_process([f"data.root={data}", *TINY, "resume=auto"], run_copy)
    assert json.loads((run_copy / LOCK_FILE).read_text()) == owner
    (run_copy / LOCK_FILE).unlink()
    assert snapshot(run_copy) == before


def test_resume_after_a_backbone_change_is_refused_before_anything_is_written(run_copy, data):
    "Case 5: before, config.yaml was rewritten, the manifest marked failed and logs/metrics.csv deleted first."
    before = snapshot(run_copy)
    with pytest.raises(RunFolderError) as refused:
        run_in_process([f"data.root={data}", *TINY, "resume=auto", "model.backbone=resnet10t"], run_copy)
    message = str(refused.value)
    assert "model.backbone test_resnet then, resnet10t now" in message and "\n" not in message
    assert "config.yaml" in message and "hydra.run.dir=NEW" in message
    assert snapshot(run_copy) == before


@pytest.fixture(scope="module")
def cli_refusals(finished, data, other_data, work):
    "The real CLI, side by side, each into a copy of the finished run: what it printed, the folder before and after."
    cases = {"new": [f"data.root={data}"],
             "other_classes": [f"data.root={other_data}", "resume=auto"],
             "missing_checkpoint": [f"data.root={data}", f"resume={work / 'nope.ckpt'}"],
             "dry_run": [f"data.root={data}", "resume=auto", "dry_run=true"]}
    copies = {name: Path(shutil.copytree(finished, work / f"cli_{name}")) for name in cases}
    before = {name: snapshot(path) for name, path in copies.items()}
    procs = {name: cli([*args, *TINY, f"hydra.run.dir={copies[name]}"], work) for name, args in cases.items()}
    done = {name: finish(proc) for name, proc in procs.items()}
    return {name: (done[name], before[name], snapshot(copies[name])) for name in cases}


def test_cli_new_run_into_a_finished_run_folder_is_refused(cli_refusals):
    "Case 4 through Hydra: .hydra/ and train.log of the finished run are untouched too."
    (rc, out, err), before, after = cli_refusals["new"]
    assert rc == 2, explain(rc, out, err)
    assert "holds another run" in err and "overwrite=true" in err and "Traceback" not in out + err
    assert after == before


def test_cli_resume_on_other_classes_is_refused(cli_refusals):
    "Case 2 through Hydra: before, it resumed the old weights, rewrote the records and exited 0."
    (rc, out, err), before, after = cli_refusals["other_classes"]
    assert rc == 2, explain(rc, out, err)
    assert "does not fit this run" in err and "'Coat', 'Dress', 'Shirt'" in err, explain(rc, out, err)
    assert "Traceback" not in out + err
    assert after == before


def test_cli_runs_that_never_start_leave_the_finished_run_folder_unchanged(cli_refusals):
    "An error before the first record (a missing resume checkpoint) and a dry run write no line into its train.log."
    (rc, out, err), before, after = cli_refusals["missing_checkpoint"]
    assert rc == 2 and "nope.ckpt" in err and "does not exist" in err, explain(rc, out, err)
    assert after == before
    (rc, out, err), before, after = cli_refusals["dry_run"]
    assert rc == 0 and "Resume" in out and "last.ckpt" in out, explain(rc, out, err)
    assert after == before


# ---------------------------------------------------------------- the ways on: overwrite=true, a matching resume

def test_overwrite_moves_the_old_run_aside_and_takes_over_a_stale_lock(run_copy, data):
    before = snapshot(run_copy)
    dead = subprocess.Popen([sys.executable, "-c", "pass"]); dead.wait()  # a killed run's pid
    (run_copy / LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(),
                                                  "started_at": "2026-01-01T00:00:00+00:00", "command": []}))
    result, printed = run_in_process([f"data.root={data}", *TINY, "overwrite=true", "seed=7"], run_copy)
    assert "took over the stale lock" in printed and str(dead.pid) in printed
    previous = [p for p in run_copy.iterdir() if p.name.startswith("previous_")]
    assert len(previous) == 1 and f"overwrite=true: the replaced run's files are in {previous[0]}" in printed
    assert snapshot(previous[0]) == before  # the old run, whole, byte for byte
    manifest = json.loads((run_copy / "run_manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["seed"] == 7
    # nothing of the old run is left beside the new records: the folder holds what a fresh run writes
    fresh = {p.name for p in result.run_dir.iterdir()} - {previous[0].name}
    assert ".hydra" not in fresh and "train.log" not in fresh  # in-process: Hydra's and the CLI's are not written
    assert {"model.onnx", "config.yaml", "checkpoints", "logs", "metrics.json"} <= fresh
    assert not (run_copy / LOCK_FILE).exists()


def test_resume_of_the_same_run_goes_on_and_warns_about_a_changed_file_list(run_copy, work):
    more = tiny_dataset(work / "more", per_class=5)  # the same classes, more files
    result, printed = run_in_process([f"data.root={more}", *TINY, "resume=auto", "trainer.max_epochs=2"], run_copy)
    assert "the dataset's file list differs" in printed and "(36 images then)" in printed, printed
    assert f"Resuming from {run_copy / 'checkpoints' / 'last.ckpt'}" in printed
    manifest = json.loads((run_copy / "run_manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["resumed_from"].endswith("last.ckpt")


# ---------------------------------------------------------------- clear messages before any work

@pytest.mark.parametrize("override,expected", [
    ("trainer.max_epochs=0", "trainer.max_epochs=0 trains nothing"),
    ("trainer.devices=0", "use trainer.devices=1"),
    ("trainer.accelerator=gpu", "trainer.accelerator=cpu"),
    ("trainer.accelerator=mps", "no Apple MPS GPU"),
])
def test_settings_this_machine_cannot_run_fail_before_the_data_is_read(tmp_path, override, expected):
    import torch
    if "accelerator" in override and (torch.cuda.is_available() or torch.backends.mps.is_available()):
        pytest.skip("this machine has a GPU")
    missing = tmp_path / "no_such_dataset"  # a run that read the data would fail with a dataset error instead
    for extra in ([], ["dry_run=true"]):
        with pytest.raises(ConfigError, match=expected):
            run_in_process([f"data.root={missing}", *TINY, override, *extra], tmp_path / "run")
    assert not (tmp_path / "run").exists()


def cli_in_process(monkeypatch, capsys, args) -> tuple[int, str]:
    "main() as the console script runs it; the checks before Hydra exit, so no subprocess is needed."
    monkeypatch.setattr(sys, "argv", ["classifier-train", *map(str, args)])
    with pytest.raises(SystemExit) as exited: main()
    return exited.value.code, capsys.readouterr().err


def test_cli_checks_the_trainer_before_hydra_makes_the_folder(tmp_path, data, monkeypatch, capsys):
    code, err = cli_in_process(monkeypatch, capsys, [f"data.root={data}", *TINY, "trainer.max_epochs=0",
                                                     f"hydra.run.dir={tmp_path / 'run'}"])
    assert code == 2 and "trains nothing" in err
    assert not (tmp_path / "run").exists()


def test_cli_run_folder_that_cannot_be_made_is_one_line(data, monkeypatch, capsys):
    "/sys refuses new folders even to root: a real EPERM (Hydra's own mkdir printed a traceback)."
    if not Path("/sys/kernel").is_dir(): pytest.skip("no sysfs here")
    code, err = cli_in_process(monkeypatch, capsys, [f"data.root={data}", *TINY, "hydra.run.dir=/sys/ct_runs/run1"])
    assert code == 2 and "cannot make the run folder /sys/ct_runs/run1" in err and "Traceback" not in err
    assert err.count("\n") <= 2, err


def test_read_only_run_folder_is_one_line_naming_it(tmp_path, data, monkeypatch):
    "Root ignores chmod, so the lock's O_EXCL create fails as on a read-only file system (errno 30)."
    real_open = os.open
    def read_only(path, flags, *args, **kw):
        if str(path).endswith(LOCK_FILE): raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kw)
    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(RunFolderError) as refused:
        run_in_process([f"data.root={data}", *TINY], tmp_path / "run")
    message = str(refused.value)
    assert f"cannot write into the run folder {tmp_path / 'run'}" in message and "errno 30" in message
    assert "\n" not in message


def test_full_disk_while_writing_records_is_one_line_naming_the_folder(tmp_path, data, monkeypatch):
    "A full disk (errno 28) while config.yaml is written: simulated, as no test can fill a real disk quickly."
    def no_space(path, text): raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(train_module, "atomic_write_text", no_space)
    with pytest.raises(RunFolderWriteError) as failed:
        run_in_process([f"data.root={data}", *TINY], tmp_path / "run")
    message = str(failed.value)
    assert f"cannot write into the run folder {tmp_path / 'run'}" in message and "No space left" in message
    assert "\n" not in message
    assert not (tmp_path / "run" / LOCK_FILE).exists()  # released on the way out


# ---------------------------------------------------------------- slow: two real runs at once

@pytest.mark.slow
def test_second_run_into_a_running_folder_stops_at_once_naming_the_owner(tmp_path, data):
    "Case 6: the first run is the real CLI; the second starts in-process (no import time) while it trains."
    run = tmp_path / "run"
    first = cli([f"data.root={data}", *TINY, "trainer.max_epochs=4", "trainer.limit_train_batches=null",
                 f"hydra.run.dir={run}"], tmp_path)
    try:
        deadline = time.monotonic() + 300
        while not (run / LOCK_FILE).exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (run / LOCK_FILE).exists(), explain(*finish(first))
        with pytest.raises(RunFolderError, match=f"in use by another run \\(pid {first.pid} on host"):
            run_in_process([f"data.root={data}", *TINY, "resume=auto"], run)
        assert first.poll() is None, "the first run ended before the second one was refused; make it longer"
    finally:
        rc, out, err = finish(first)
    assert rc == 0, explain(rc, out, err)
    manifest = json.loads((run / "run_manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["resumed_from"] is None
    assert not (run / LOCK_FILE).exists()
