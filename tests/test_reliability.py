"""Reliability (issue 10) through the real `classifier-train` CLI: bad data, interrupted saves,
atomic artifacts, non-finite loss, crash + resume, reproducibility and safe checkpoint loading.

Every run is the real CLI on tiny real data (Fashion-MNIST sample images, scikit-learn's sample
photo for JPEG cases), 32 px, one epoch. Component-level cases live elsewhere and are not repeated
here: tests/test_bad_inputs.py (every bad input through scan + check, all three policies),
tests/test_cli.py (kill -9 in the middle of an epoch then resume; DDP), tests/test_callbacks_ema.py
(EMA state across a crash, in-process), tests/test_predict_cli.py (the predictor skips unreadable or
missing images and goes on with the batch: `test_cli_outputs_and_skips_unreadable_files`).

Fast (default suite): the session's finished run (`finished_run` in tests/conftest.py, built by
tests/cli_runs.py: a subprocess running the default config on a dataset holding every damaged case
at once, skip policy, audited, in the folder of a checkpoint save killed half way) and what it left;
two runs that must stop before training (policy fail, a single class) and a non-finite loss, run by
`main()` in this process (`cli_runs.in_process`); the checkpoint loaders fed a checkpoint with
pickled code. Slow (`-m slow`), in subprocesses: the other stop cases (no train/, an annotation path
escaping the root), crash + resume equals an uninterrupted run, two runs with one seed are
identical, and `resume=` a checkpoint with pickled code.
"""
from __future__ import annotations

import csv
import hashlib
import inspect
import json
import os
import re
import stat
from pathlib import Path

import pytest
import torch
from PIL import Image

from classifier_training.callbacks.ema import EMACallback
from classifier_training.core import sha256_file
from classifier_training.data.sample import write_sample_subset
from cli_runs import (BAD_CASES, BOOT_CLASS, CANTA, IGNORED_CASES, PER_CLASS, TEMP_NAME, TINY,
                      VALID_CASES, Run, cli, in_process, jpeg_bytes, no_traceback, photo,
                      run_parallel, snapshot, tiny)

# `classifier-train` that SIGKILLs itself right after last.ckpt of epoch CT_CRASH_AFTER_EPOCH is in place
CRASHING_TRAIN = r"""
import os, signal, sys, torch
import classifier_training.training as T
from classifier_training.checkpoints import AtomicCheckpointIO
crash_epoch = int(os.environ["CT_CRASH_AFTER_EPOCH"])
save, link = AtomicCheckpointIO.save_checkpoint, AtomicCheckpointIO.copy_checkpoint
def die_after_last(path):
    if os.path.basename(str(path)) == "last.ckpt" and \
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)["epoch"] == crash_epoch:
        os.kill(os.getpid(), signal.SIGKILL)
def save_then_die(self, checkpoint, path, storage_options=None):
    save(self, checkpoint, path, storage_options); die_after_last(path)
def link_then_die(self, source, path):  # last.ckpt of an improving epoch: a link to best.ckpt
    link(self, source, path); die_after_last(path)
AtomicCheckpointIO.save_checkpoint = save_then_die  # the class the pipeline's Trainer writes with
AtomicCheckpointIO.copy_checkpoint = link_then_die
sys.argv = ["classifier-train", *sys.argv[1:]]
T.main()
"""



# ---------------------------------------------------------------- fixtures: every fast run of this module
@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("reliability")


def stop_case(work: Path, name: str) -> dict:
    "A dataset on which a run must stop before training, and the extra arguments of that run."
    folder = work / name
    if name == "policy_fail":
        root = write_sample_subset(folder / "data", per_class=3, classes=("Bag", "Coat"))
        (root / "train/Coat/cut.jpg").write_bytes(jpeg_bytes(photo(64, 48))[:1500])
        case = {"root": root, "args": ["data.check_policy=fail"]}
    elif name == "single_class":
        case = {"root": write_sample_subset(folder / "data", per_class=3, classes=("Bag",)), "args": []}
    elif name == "no_train":
        case = {"root": write_sample_subset(folder / "data", per_class=3, splits=("val", "test"), classes=("Bag", "Coat")),
                "args": []}
    elif name == "escape":
        root = write_sample_subset(folder / "data", per_class=3, format="jsonl", classes=("Bag", "Coat"))
        (folder / "outside.png").write_bytes(next(root.rglob("*.png")).read_bytes())
        ann = root / "train" / "annotations.jsonl"
        with open(ann, "a") as f: f.write(json.dumps({"image": "../../outside.png", "label": "Bag"}) + "\n")
        case = {"root": root, "args": [], "annotation": ann, "line": len(ann.read_text().splitlines())}
    case["before"] = snapshot(case["root"])
    case["job"] = dict(args=[f"data.root={case['root']}", *TINY, *case["args"]], run_dir=folder / "run")
    return case


@pytest.fixture(scope="module")
def damaged_run(finished_run):
    "The session's finished run (it must have finished) and its dataset report."
    run = finished_run.run
    assert run.returncode == 0, run.explain()
    report = json.loads((run.run_dir / "dataset_report.json").read_text(encoding="utf-8"))
    return run, report


# ---------------------------------------------------------------- 1. the damaged dataset through a real run (skip policy)
def test_damaged_dataset_run_finishes_with_a_verified_model(damaged_run):
    run, report = damaged_run
    assert (run.run_dir / "model.onnx").is_file(), run.explain()
    assert json.loads((run.run_dir / "export_report.json").read_text())["verification"]["passed"] is True
    assert json.loads((run.run_dir / "run_manifest.json").read_text())["status"] == "completed"
    assert no_traceback(run), run.explain()
    assert report["policy"] == "skip"


def test_damaged_dataset_user_files_untouched(damaged_run, finished_run):
    assert snapshot(finished_run.data_root) == finished_run.data_before, \
        "the run modified, moved, added or deleted user files"


@pytest.mark.parametrize("case,rel,reason", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_file_is_named_with_its_reason_and_left_out(damaged_run, case, rel, reason):
    run, report = damaged_run
    entries = [b for b in report["bad_files"] if b["path"] == rel]
    assert len(entries) == 1, (rel, report["bad_files"])
    assert entries[0]["reason"] == reason and Path(rel).name in entries[0]["message"]
    split = rel.split("/")[0]
    assert entries[0]["splits"] == [split]
    # the run's check summary names the file and the reason, one line each
    assert f"{rel}: {reason.replace('_', ' ')}" in run.stdout, run.stdout[-4000:]
    if reason == "too_large": assert "decompression-bomb guard" in entries[0]["message"]


def test_bad_files_are_counted_out_of_training(damaged_run):
    _, report = damaged_run
    assert report["bad_images"] == len(BAD_CASES)
    assert report["bad_by_reason"] == {"truncated": 2, "empty": 1, "not_an_image": 1, "too_large": 1}
    assert report["counts_before_check"]["train"]["Coat"] == PER_CLASS + 4 and report["counts"]["train"]["Coat"] == PER_CLASS
    assert report["counts_before_check"]["val"][BOOT_CLASS] == PER_CLASS + 1 and report["counts"]["val"][BOOT_CLASS] == PER_CLASS


@pytest.mark.parametrize("case,rel", IGNORED_CASES, ids=[c[0] for c in IGNORED_CASES])
def test_stray_non_image_file_is_ignored_and_listed(damaged_run, case, rel):
    _, report = damaged_run
    assert rel in report["ignored_files"], report["ignored_files"]
    assert rel not in [b["path"] for b in report["bad_files"]]


@pytest.mark.parametrize("case,name", VALID_CASES, ids=[c[0] for c in VALID_CASES])
def test_unusual_valid_image_is_trained_on(damaged_run, case, name):
    _, report = damaged_run
    rel = f"train/{CANTA}/{name}"
    assert rel not in [b["path"] for b in report["bad_files"]] and rel not in report["ignored_files"]
    # the class keeps its sample images plus every unusual valid image: none was dropped or silently skipped
    assert report["counts"]["train"][CANTA] == PER_CLASS + len(VALID_CASES), report["counts"]["train"]
    size_range = report["image_size_range"]
    if case == "exif_rotated_photo":  # stored 90x30; only with EXIF applied is the tallest image 90 high
        assert size_range["max"] == [64, 90], size_range
    if case == "1x1_image":
        assert size_range["min"] == [1, 1], size_range


def test_class_names_with_spaces_and_non_ascii_letters(damaged_run):
    run, report = damaged_run
    assert sorted(report["class_names"]) == sorted([CANTA, BOOT_CLASS, "Coat", "Sneaker"])
    assert report["counts"]["val"][CANTA] == PER_CLASS  # val/ spells it in NFD: still the same class
    mapping = json.loads((run.run_dir / "labels_mapping.json").read_text(encoding="utf-8"))
    assert CANTA in mapping["class_names"] and mapping["class_names"] == report["class_names"]
    assert CANTA in (run.run_dir / "classification_report.csv").read_text(encoding="utf-8")


def test_empty_class_folder_is_left_out_and_reported(damaged_run):
    run, report = damaged_run
    assert report["empty_classes"] == ["Dress"] and "Dress" not in report["class_names"]
    assert json.loads((run.run_dir / "labels_mapping.json").read_text())["num_classes"] == 4
    assert "Dress" in run.output


def test_class_missing_from_val_is_reported(damaged_run):
    _, report = damaged_run
    assert report["missing_classes"] == {"val": ["Coat"], "test": []}


def test_val_label_unknown_to_train_is_excluded_and_reported(damaged_run):
    run, report = damaged_run
    assert report["unknown_labels"] == {"val": {"Shirt": 1}}
    assert "Shirt" not in report["class_names"] and "Shirt" not in report["counts"]["val"]
    assert "Shirt" in run.output


def test_symlink_loop_is_followed_once(damaged_run):
    _, report = damaged_run  # the run finished (a loop followed forever would have hit the timeout)
    assert report["counts_before_check"]["train"]["Sneaker"] == PER_CLASS
    assert report["duplicates_within_split"]["train"] == 0


# ---------------------------------------------------------------- 1b. runs that must stop before training
def _assert_stopped_before_training(run: Run, case: dict):
    assert run.returncode != 0, run.explain()
    assert no_traceback(run), run.explain()
    assert "classifier-train: error:" in run.stderr, run.explain()
    assert not (run.run_dir / "checkpoints").exists() and not (run.run_dir / "model.onnx").exists()
    assert snapshot(case["root"]) == case["before"], "user files changed"


def test_policy_fail_stops_and_names_the_bad_file(tmp_path, monkeypatch, capsys):
    case = stop_case(tmp_path, "policy_fail")
    run = in_process(**case["job"], monkeypatch=monkeypatch, capsys=capsys)
    _assert_stopped_before_training(run, case)
    bad = case["root"] / "train" / "Coat" / "cut.jpg"
    assert f"{bad}: truncated" in run.stderr and "policy 'fail'" in run.stderr, run.explain()
    assert "data.check_policy=skip" in run.stderr  # says what to do


def test_single_class_cannot_train_a_classifier(tmp_path, monkeypatch, capsys):
    case = stop_case(tmp_path, "single_class")
    run = in_process(**case["job"], monkeypatch=monkeypatch, capsys=capsys)
    _assert_stopped_before_training(run, case)
    assert "cannot train a classifier" in run.stderr and str(case["root"]) in run.stderr, run.explain()


@pytest.fixture(scope="module")
def slow_stop_runs(work):
    "The stop cases whose message the component tests (test_bad_inputs.py) already pin down; here through the CLI."
    cases = {name: stop_case(work, name) for name in ("no_train", "escape")}
    return {**run_parallel({name: c["job"] for name, c in cases.items()}), "stop_cases": cases}


@pytest.mark.slow
def test_missing_train_folder_names_data_root(slow_stop_runs):
    run, case = slow_stop_runs["no_train"], slow_stop_runs["stop_cases"]["no_train"]
    _assert_stopped_before_training(run, case)
    assert f"data.root '{case['root']}' has no train/ folder" in run.stderr, run.explain()


@pytest.mark.slow
def test_annotation_path_escaping_the_root_is_refused(slow_stop_runs):
    run, case = slow_stop_runs["escape"], slow_stop_runs["stop_cases"]["escape"]
    _assert_stopped_before_training(run, case)
    assert f"{case['annotation']}, line {case['line']}" in run.stderr, run.explain()
    assert "../../outside.png" in run.stderr and "outside the dataset root" in run.stderr


# ---------------------------------------------------------------- 3. atomic artifacts
def test_checkpoint_save_killed_half_way_keeps_the_previous_last_ckpt(finished_run):
    r = finished_run.killed_save  # recorded before the finished run reused the folder
    assert r["returncode"] == -9, r["stderr"]  # SIGKILL, in the middle of writing B
    assert len(r["temps"]) == 1 and r["temp_sizes"][0] > 1_000_000, (r["temps"], r["temp_sizes"])  # half of B's 8 MB
    assert isinstance(r["loaded"], dict), f"the previous last.ckpt does not load: {r['loaded']}"
    assert r["loaded"]["global_step"] == 1 and torch.equal(r["loaded"]["state_dict"]["w"], torch.arange(1000.0))


def test_next_start_sweeps_the_temp_file_of_the_killed_save(finished_run, damaged_run):
    run, _ = damaged_run  # the finished run reused the folder of the killed save
    temps = finished_run.killed_save["temps"]
    assert temps and not [t for t in temps if t.exists()], "the killed save's temp file is left"
    assert not list((run.run_dir / "checkpoints").glob(".*.tmp"))


def test_finished_run_has_only_complete_artifacts_and_no_temp_files(damaged_run):
    run, _ = damaged_run
    files = [p for p in run.run_dir.rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.endswith(".tmp") or TEMP_NAME.match(p.name)], "temporary files left behind"
    by_suffix = {s: [p for p in files if p.suffix == s] for s in (".json", ".csv", ".png", ".ckpt", ".onnx")}
    assert all(by_suffix.values()), {s: len(v) for s, v in by_suffix.items()}
    for p in by_suffix[".json"]: json.loads(p.read_text(encoding="utf-8"))
    for p in by_suffix[".csv"]: assert len(list(csv.reader(p.open(encoding="utf-8")))) >= 2, p
    for p in by_suffix[".png"]: Image.open(p).verify()
    for p in by_suffix[".ckpt"]: assert "state_dict" in torch.load(p, map_location="cpu", weights_only=True, mmap=True)


# writers that write in place: train.log (appended), Lightning's CSVLogger (rewrites logs/metrics.csv and
# logs/hparams.yaml); classifier-train writes Hydra's .hydra/ record itself, atomically
IN_PLACE_WRITERS = {"train.log", "logs/metrics.csv", "logs/hparams.yaml"}


def test_every_artifact_is_written_to_a_temp_file_and_renamed(damaged_run, finished_run):
    """Every file the run leaves (checkpoints, JSON, CSV, PNG, ONNX, Markdown, YAML), as the audit hook saw it: created
    as `.<name>.<random>.tmp` in the same folder and renamed over its name; never opened for writing under its name."""
    run, _ = damaged_run
    lines = [l.split("\t") for l in finished_run.audit_log.read_text(encoding="utf-8").splitlines()]
    opened = {Path(l[1]) for l in lines if l[0] == "open"}
    renamed = {Path(l[2]): Path(l[1]) for l in lines if l[0] == "rename"}
    assert renamed, "the audit hook saw no rename: it did not run"
    in_place, not_renamed = set(), set()
    for path in sorted(p for p in run.run_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(run.run_dir).as_posix()
        if path in opened: in_place.add(rel)
        src = renamed.get(path)
        if src is None or src.parent != path.parent or not (src.name.startswith(f".{path.name}.") and TEMP_NAME.match(src.name)):
            not_renamed.add(rel)
    assert in_place == IN_PLACE_WRITERS, f"written in place: {sorted(in_place - IN_PLACE_WRITERS)}"
    assert not_renamed - IN_PLACE_WRITERS == set(), f"not written by temp file + rename: {sorted(not_renamed - IN_PLACE_WRITERS)}"


def test_artifacts_keep_the_permissions_of_a_normal_write(damaged_run):
    """mkstemp creates its temp file with mode 0600; renamed into place, every artifact would be unreadable to other
    users (a serving account reading model.onnx). They must get what open() would give: 0666 minus the umask."""
    run, _ = damaged_run
    umask = os.umask(0); os.umask(umask)
    expected = 0o666 & ~umask
    modes = {p.relative_to(run.run_dir).as_posix(): stat.S_IMODE(p.stat().st_mode)
             for p in run.run_dir.rglob("*") if p.is_file() and p.relative_to(run.run_dir).as_posix() not in IN_PLACE_WRITERS}
    wrong = {k: oct(v) for k, v in modes.items() if v != expected}
    assert not wrong, f"expected {oct(expected)}: {wrong}"


# ---------------------------------------------------------------- 4. non-finite loss
def test_non_finite_loss_stops_at_once_with_a_diagnostic(tmp_path, monkeypatch, capsys):
    data = write_sample_subset(tmp_path / "data", per_class=8, classes=("Bag", "Coat", "Sandal"))
    # SGD at lr 1e6 without warm-up: the loss overflows within a few steps (NaN at step 3 when
    # measured); no loader worker process (a fork of the test process)
    run = in_process([f"data.root={data}", *tiny(data__batch_size=2, trainer__max_epochs=3),
                      "model.optimizer=sgd", "model.lr=1e6", "model.warmup_epochs=0",
                      "data.num_workers=0"], tmp_path / "run", monkeypatch, capsys)
    assert run.returncode != 0, "a run whose loss became NaN/inf finished normally\n" + run.explain()
    assert no_traceback(run) and "classifier-train: error:" in run.stderr, run.explain()
    err = run.stderr
    assert re.search(r"nan|inf|non-finite", err, re.I), err
    assert re.search(r"\bstep\D{0,4}\d+", err, re.I), "the message does not name the step\n" + err
    assert re.search(r"(\blr\b|learning rate)\D{0,4}\d", err, re.I), "the message does not name the learning rate\n" + err
    names = {p.name for p in (data / "train").rglob("*.png")}
    assert any(n in err for n in names), "the message names no file of the batch\n" + err
    # it stopped at once: inside the first epoch (checkpoints are written at the end of each epoch), nothing exported
    assert not list(run.run_dir.glob("checkpoints/*.ckpt")) and not (run.run_dir / "model.onnx").exists()
    assert json.loads((run.run_dir / "run_manifest.json").read_text())["status"] == "failed"


# ---------------------------------------------------------------- 6. safety: checkpoints with pickled code are refused
class _Payload:
    "Unpickling this calls os.mkdir(marker): if the folder appears, code from the checkpoint ran."
    def __init__(self, marker: str): self.marker = marker
    def __reduce__(self): return (os.mkdir, (self.marker,))


@pytest.fixture(scope="module")
def evil_checkpoint(work) -> tuple[Path, Path]:
    "A checkpoint that looks like ours (an ImageClassifier's state_dict and hyper-parameters) plus pickled code."
    from classifier_training.model import ImageClassifier
    model = ImageClassifier(num_classes=2, backbone="test_resnet", image_size=32)
    marker = work / "payload_ran"
    ckpt = {"state_dict": model.state_dict(), "current_model_state": model.state_dict(),
            "hyper_parameters": dict(model.hparams), "global_step": 0, "epoch": 0,
            "pytorch-lightning_version": "2.6.0", "payload": _Payload(str(marker))}
    path = work / "evil" / "evil.ckpt"
    path.parent.mkdir()
    torch.save(ckpt, path)
    return path, marker


def test_ema_loaders_refuse_a_checkpoint_with_pickled_code(evil_checkpoint):
    from classifier_training.checkpoints import load_ema_weights, load_raw_weights
    from classifier_training.core import CheckpointError
    path, marker = evil_checkpoint
    for load in (load_ema_weights, load_raw_weights):
        with pytest.raises(CheckpointError, match="weights_only"): load(path)
    assert not marker.exists()


def test_export_refuses_a_checkpoint_with_pickled_code(evil_checkpoint, tmp_path, capsys):
    from classifier_training.checkpoints import load_checkpoint_model
    from classifier_training.core import CheckpointError
    from classifier_training.export import main
    path, marker = evil_checkpoint
    with pytest.raises(CheckpointError, match="weights_only"): load_checkpoint_model(path)
    assert main([str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("classifier-export: error: ") and str(path) in err and "Traceback" not in err
    assert not marker.exists() and not (tmp_path / "out" / "model.onnx").exists()


def test_resume_and_lightning_loading_refuse_a_checkpoint_with_pickled_code(evil_checkpoint):
    import pickle
    from classifier_training.model import ImageClassifier
    from classifier_training.checkpoints import AtomicCheckpointIO
    path, marker = evil_checkpoint
    for weights_only in (True, None):  # None is what a caller that does not say gets
        with pytest.raises(pickle.UnpicklingError): AtomicCheckpointIO().load_checkpoint(path, weights_only=weights_only)
    with pytest.raises(pickle.UnpicklingError): ImageClassifier.load_from_checkpoint(path, map_location="cpu")
    assert not marker.exists()


def test_the_payload_is_live_without_weights_only(evil_checkpoint):
    "Control: the refusals above are real; a plain torch.load(weights_only=False) runs the checkpoint's code."
    path, marker = evil_checkpoint
    assert not marker.exists()
    torch.load(path, map_location="cpu", weights_only=False)
    assert marker.is_dir()
    marker.rmdir()


@pytest.mark.slow
def test_cli_resume_from_a_checkpoint_with_pickled_code_is_refused(evil_checkpoint, tmp_path):
    path, marker = evil_checkpoint
    data = write_sample_subset(tmp_path / "data", per_class=3, classes=("Bag", "Coat"))
    run = cli([f"data.root={data}", *TINY, f"resume={path}"], tmp_path / "run")
    assert run.returncode != 0, run.explain()
    assert not marker.exists(), "code from the checkpoint ran"
    assert not (tmp_path / "run" / "model.onnx").exists()
    # a user error: one clear line naming the file, no traceback
    assert no_traceback(run) and "classifier-train: error:" in run.stderr and str(path) in run.stderr, run.explain()


# ---------------------------------------------------------------- 2. crash and resume (slow)
def _state_hash(ckpt: dict, key: str) -> str:
    h = hashlib.sha256()
    for name in sorted(ckpt[key]):
        t = ckpt[key][name]
        h.update(name.encode()); h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


EMA_EVERY = inspect.signature(EMACallback).parameters["update_every_n_steps"].default  # as the CLI runs


def _assert_same_training_state(a: dict, b: dict):
    assert a["global_step"] == b["global_step"] and a["epoch"] == b["epoch"]
    for key in ("state_dict", "current_model_state"):  # EMA weights, raw weights
        assert sorted(a[key]) == sorted(b[key]), key
        diff = [n for n in a[key] if not torch.equal(a[key][n], b[key][n])]
        assert not diff, f"{key} differs in {len(diff)} tensors, e.g. {diff[:3]}"
        assert _state_hash(a, key) == _state_hash(b, key)
    assert (int(a["averaging_state"]["n_averaged"]) == int(b["averaging_state"]["n_averaged"])
            == (a["global_step"] + EMA_EVERY - 1) // EMA_EVERY)  # after steps 1, 1 + n, 1 + 2n ...
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        for k in sa:
            if torch.is_tensor(sa[k]): assert torch.equal(sa[k], sb[k]), f"optimizer state {k} differs"


# the default random augmentation (random resized crop, flip) and a shuffled loader: checkpoints carry the global random
# state (ImageClassifier, model.RNG_STATES_KEY), so the resumed run continues the interrupted run's stream. Loader
# workers must not persist across epochs for that (their random state is not in the checkpoint): num_workers=0.
RESUMABLE = ["data.num_workers=0", "trainer.deterministic=true", "trainer.accelerator=cpu", "seed=7"]


@pytest.mark.slow
def test_crash_after_an_epoch_then_resume_equals_an_uninterrupted_run(tmp_path):
    data = write_sample_subset(tmp_path / "data", per_class=6, classes=("Bag", "Coat", "Sandal"))
    args = [f"data.root={data}", *tiny(data__batch_size=4, trainer__max_epochs=3), *RESUMABLE]
    assert not [a for a in args if a.startswith("transforms.")]  # the default, random, training augmentation
    done = run_parallel({"straight": dict(args=args, run_dir=tmp_path / "straight"),
                         "crashed": dict(args=args, run_dir=tmp_path / "crashed", boot=CRASHING_TRAIN,
                                         env={"CT_CRASH_AFTER_EPOCH": "0"})})
    straight, crashed = done["straight"], done["crashed"]
    assert straight.returncode == 0, straight.explain()
    assert crashed.returncode == -9, crashed.explain()  # killed right after last.ckpt of the first epoch
    last = crashed.run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 0
    resumed = cli([*args, "resume=auto"], crashed.run_dir)
    assert resumed.returncode == 0, resumed.explain()
    assert f"Resuming from {last}" in resumed.stdout
    a = torch.load(straight.run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    b = torch.load(last, map_location="cpu", weights_only=True)
    assert a["epoch"] == 2 and "rng_states" in a and "rng_states" in b
    _assert_same_training_state(a, b)
    metrics = [json.loads((r.run_dir / "metrics.json").read_text()) for r in (straight, resumed)]
    assert metrics[0] == metrics[1]
    assert sha256_file(straight.run_dir / "model.onnx") == sha256_file(resumed.run_dir / "model.onnx")


# ---------------------------------------------------------------- 5. reproducibility (slow)
@pytest.mark.slow
def test_two_runs_with_the_same_seed_are_identical(tmp_path):
    data = write_sample_subset(tmp_path / "data", per_class=6, classes=("Bag", "Coat", "Sandal"))
    # the default augmentation (random crop, flip, colour jitter) and a shuffled loader: all seeded by `seed`
    args = [f"data.root={data}", *tiny(data__batch_size=4, trainer__max_epochs=2), "trainer.deterministic=true",
            "trainer.accelerator=cpu", "seed=3"]
    done = run_parallel({n: dict(args=args, run_dir=tmp_path / n) for n in ("first", "second")})
    for r in done.values(): assert r.returncode == 0, r.explain()
    first, second = done["first"], done["second"]
    assert (first.run_dir / "metrics.json").read_text() == (second.run_dir / "metrics.json").read_text()
    a, b = (torch.load(r.run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True) for r in (first, second))
    _assert_same_training_state(a, b)
    assert sha256_file(first.run_dir / "model.onnx") == sha256_file(second.run_dir / "model.onnx")
    # and a different seed really gives different weights (the comparison above can fail)
    other = cli([*args[:-1], "seed=4"], tmp_path / "other")
    assert other.returncode == 0, other.explain()
    c = torch.load(other.run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert _state_hash(a, "current_model_state") != _state_hash(c, "current_model_state")


# ---------------------------------------------------------------- decompression-bomb limit from the config
@pytest.mark.slow
def test_data_max_pixels_names_the_file_the_limit_and_the_key(tmp_path):
    "data.max_pixels=100000: a real 640x427 photo is left out with a message naming it, the limit and the key."
    from sklearn.datasets import load_sample_images
    data = write_sample_subset(tmp_path / "data", per_class=3, classes=("Bag", "Coat", "Sandal"))
    big = data / "train" / "Bag" / "china.jpg"
    Image.fromarray(load_sample_images().images[0]).save(big, quality=90)
    before = snapshot(data)
    run = cli([f"data.root={data}", *TINY, "data.max_pixels=100000", "dry_run=true"], tmp_path / "run")
    assert run.returncode == 0, run.explain()
    for part in ("china.jpg: too large", "640x427 = 273,280 pixels", "limit of 100,000 pixels", "data.max_pixels"):
        assert part in run.output, (part, run.explain())
    assert snapshot(data) == before
    stop = cli([f"data.root={data}", *TINY, "data.max_pixels=100000", "data.check_policy=fail"], tmp_path / "stop")
    assert stop.returncode != 0 and no_traceback(stop) and str(big) in stop.stderr, stop.explain()
