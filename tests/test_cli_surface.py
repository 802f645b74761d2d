"""The user's surface of `classifier-train`: what people type, and what the terminal shows them.

- the README's own `classifier-train` lines, as written (`~` included), run as dry runs with HOME
  pointed at a folder that holds a real tiny dataset in `~/photos`;
- `name=NAME` puts the run in `runs/NAME`, `resume=auto` with the name finds it, and the best
  checkpoint is `checkpoints/best.ckpt`;
- `train(**keywords)` composes the config the command line composes (dry runs of both, compared);
- `--help` imports neither torch nor Lightning nor timm;
- the terminal of a default run: our tables, the progress bar and the layer table, and none of
  Lightning's advert, its `_pytree` deprecation, metric rows or `Total FLOPs: 0`;
- presets compose and dry-run; pretrained weights load from a warm cache or a local file with the
  hub off (`HF_HUB_OFFLINE=1`), and without them the error says what to do.
"""
import gc
import json
import logging
import os
import re
import shlex
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from classifier_training.config import compose_config, config_group_options
from classifier_training.test_utils import tiny_dataset
from classifier_training.training import train

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.backbone=test_resnet", "data.image_size=32", "data.batch_size=8",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "logger=none"]


def readme_train_lines() -> list[list[str]]:
    "The `classifier-train` command lines of README.md (continuations joined, comments dropped)."
    text = (ROOT / "README.md").read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("classifier-train ")]
    return [shlex.split(line, comments=True)[1:] for line in lines]


def run_main(args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    """`classifier-train ARGS` by `main()` in this process, in the current directory, exactly as
    typed (no hydra.run.dir added); what it changes in the process is undone afterwards."""
    import classifier_training.training as train_module
    monkeypatch.setattr(sys, "argv", ["classifier-train", *args])
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    root, environ, collecting = logging.getLogger(), dict(os.environ), gc.isenabled()
    handlers, level = root.handlers[:], root.level
    capsys.readouterr()
    try:
        train_module.main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else int(e.code is not None)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        os.environ.clear()
        os.environ.update(environ)
        gc.unfreeze()  # main() freezes the collector's objects and pauses it at start-up
        if collecting: gc.enable()
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    "A HOME holding a real tiny dataset in ~/photos; the working directory is a fresh folder."
    home = tmp_path / "home"
    tiny_dataset(home / "photos", per_class=4)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("CLASSIFIER_TRAINING_CACHE", str(tmp_path / "cache"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return home


# ---------------------------------------------------------------- paths and names
def test_readme_train_lines_run_as_written(home, monkeypatch, capsys):
    lines = readme_train_lines()
    assert lines and any(a.startswith("data.root=~") for args in lines for a in args), lines
    for args in lines:
        code, out, err = run_main([*args, "dry_run=true"], monkeypatch, capsys)
        gpu_line = any(a in ("trainer=ddp", "trainer=gpu") for a in args)
        if gpu_line and code == 2 and "has no GPU" in err: continue  # this machine has none
        assert code == 0, (args, out[-3000:], err[-3000:])
        assert f"root: {home / 'photos'}" in out, (args, out[-3000:])  # ~ expanded
        assert "Traceback" not in out + err


def test_environment_variables_and_tilde_in_path_values(home, monkeypatch):
    monkeypatch.setenv("CT_TEST_DATA", str(home))
    cfg = compose_config(["data.root='$CT_TEST_DATA/photos'", "data.cache_dir=~/cache", *TINY],
                         run_dir="~/runs/x")
    assert cfg.data.cache_dir == str(home / "cache") and cfg.paths.run_dir == str(home / "runs/x")
    result = train(["data.root='$CT_TEST_DATA/photos'", *TINY], dry_run=True,
                   console=_null_console())
    assert result.config.data.root == str(home / "photos")
    assert result.data_summary["num_classes"] == 3


def _null_console():
    from rich.console import Console
    return Console(file=open(os.devnull, "w"), width=200)


@pytest.fixture(scope="module")
def named_run(tmp_path_factory, tiny_data):
    """`classifier-train name=first` as a user starts it: a subprocess in a fresh working directory, the
    progress bar and the layer table on (the defaults), one epoch of test_resnet at 32 px."""
    work = tmp_path_factory.mktemp("named")
    env = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1",
           "CLASSIFIER_TRAINING_CACHE": str(work / "cache")}
    env.pop("HYDRA_FULL_ERROR", None)
    args = [f"data.root={tiny_data}", "name=first", "model.backbone=test_resnet", "data.image_size=32",
            "data.batch_size=8", "trainer.max_epochs=1"]
    p = subprocess.run([sys.executable, "-m", "classifier_training.training", *args], cwd=work, env=env,
                       capture_output=True, text=True, encoding="utf-8", timeout=900)
    return SimpleNamespace(work=work, run=work / "runs" / "first", proc=p, terminal=p.stdout + p.stderr)


def test_name_puts_the_run_in_runs_name_with_a_stable_best_ckpt(named_run):
    assert named_run.proc.returncode == 0, named_run.terminal[-5000:]
    ckpts = named_run.run / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["best.ckpt", "last.ckpt"]
    manifest = json.loads((named_run.run / "run_manifest.json").read_text())
    assert manifest["best_checkpoint"] == str(ckpts / "best.ckpt")
    # without a name the folder stays dated
    assert re.fullmatch(r".*/outputs/\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d", compose_config().paths.run_dir)


NOISE = ["💡 Tip", "litlogger", "_pytree", "LeafSpec", "Total FLOPs: 0", "MulticlassAccuracy",
         "MetricCollection", "Trainer already configured with model summary"]


def test_default_run_terminal_informs_without_noise(named_run):
    "What the terminal showed: none of Lightning's noise; our tables, the layer table, the bar."
    terminal = named_run.terminal
    assert named_run.proc.returncode == 0, terminal[-5000:]
    for line in NOISE: assert line not in terminal, (line, terminal[-5000:])
    # what informs stays: our tables, Lightning's layer table (the layers), the bar, a real warning
    for line in ("Images per class", "Model: ImageClassifier", "backbone", "ResNet",
                 "Trainable params", "Epoch", "classifier-train summary",
                 "smaller than the logging interval"):
        assert line in terminal, (line, terminal[-5000:])


def test_resume_auto_with_the_name_finds_the_run(named_run, tiny_data, monkeypatch, capsys):
    assert named_run.proc.returncode == 0, named_run.terminal[-5000:]
    monkeypatch.chdir(named_run.work)
    monkeypatch.setenv("CLASSIFIER_TRAINING_CACHE", str(named_run.work / "cache"))
    data = f"data.root={tiny_data}"
    # the same name again without resume: refused (the folder holds a finished run)
    code, out, err = run_main([data, "name=first", *TINY], monkeypatch, capsys)
    assert code != 0 and "runs/first" in err, out[-2000:] + err[-2000:]
    code, out, err = run_main([data, "name=first", "resume=auto", "trainer.max_epochs=2", *TINY],
                              monkeypatch, capsys)
    assert code == 0, out[-3000:] + err[-3000:]
    manifest = json.loads((named_run.run / "run_manifest.json").read_text())
    assert manifest["resumed_from"] == str(named_run.run / "checkpoints" / "last.ckpt"), manifest
    assert sorted(p.name for p in (named_run.run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]


# ---------------------------------------------------------------- Python keywords = the CLI
def test_keyword_train_composes_what_the_command_line_composes(home, monkeypatch, capsys):
    run_dir = home / "runs" / "same"
    cli = ["data.root=~/photos", "model.backbone=test_resnet", "trainer.max_epochs=2",
           "trainer=cpu", "experiment=imbalanced", "callbacks.early_stopping.patience=3",
           f"hydra.run.dir={run_dir}", "dry_run=true"]
    code, out, err = run_main(cli, monkeypatch, capsys)
    assert code == 0, out[-3000:] + err[-3000:]
    printed = out.split("Resolved config\n", 1)[1].split("\nData\n", 1)[0]
    result = train(data_root="~/photos", backbone="test_resnet", max_epochs=2, trainer="cpu",
                   experiment="imbalanced", callbacks__early_stopping__patience=3, dry_run=True,
                   run_dir=run_dir, console=_null_console())
    from omegaconf import OmegaConf
    assert OmegaConf.to_yaml(result.config).strip() == printed.strip()


# ---------------------------------------------------------------- --help
HELP_PROBE = """
import atexit, sys
atexit.register(lambda: print("HEAVY", sorted(m for m in ("torch", "lightning", "timm") if m in sys.modules)))
sys.argv = ["classifier-train", "--help"]
import classifier_training.training as T
T.main()
"""


def test_help_needs_no_torch_lightning_or_timm():
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", HELP_PROBE], capture_output=True, text=True, timeout=120,
                       cwd=ROOT)
    seconds = time.perf_counter() - t0
    assert p.returncode == 0, p.stderr[-3000:]
    assert "HEAVY []" in p.stdout, p.stdout[-500:]
    assert "experiment: finetune, imbalanced, scratch" in p.stdout
    assert "== Config ==" in p.stdout and "backbone: resnet10t" in p.stdout
    assert seconds < 10, seconds  # about 1 s here; bench/help_time.py measures it


def test_help_and_cfg_take_the_tilde_and_a_name(home, monkeypatch, capsys):
    code, out, err = run_main(["--help", "data.root=~/photos"], monkeypatch, capsys)
    assert code == 0 and f"root: {home / 'photos'}" in out, out[-2000:] + err[-2000:]
    code, out, err = run_main(["--cfg", "job", "--resolve", "name=x", "data.root=~/photos"],
                              monkeypatch, capsys)
    assert code == 0 and f"root: {home / 'photos'}" in out, out[-2000:] + err[-2000:]
    assert "\nname: x\n" in out, out[-2000:]
    code, out, err = run_main(["--cfg", "hydra", "--resolve", "name=x"], monkeypatch, capsys)
    assert code == 0 and "Traceback" not in out + err, out[-2000:] + err[-2000:]


# ---------------------------------------------------------------- presets and pretrained weights
@pytest.mark.parametrize("preset", [*(f"experiment={p}" for p in ("finetune", "scratch", "imbalanced")),
                                    "trainer=cpu", "trainer=mps"])
def test_each_preset_composes_and_dry_runs(preset, tiny_data, tmp_path):
    assert preset.split("=")[1] in config_group_options(preset.split("=")[0])
    overrides = [preset, f"data.root={tiny_data}", *TINY, "dry_run=true"]
    if preset == "trainer=mps":
        import torch
        if not torch.backends.mps.is_available():
            with pytest.raises(Exception, match="no Apple MPS GPU"):
                train(overrides, run_dir=tmp_path / "run", console=_null_console())
            return
    result = train(overrides, run_dir=tmp_path / "run", console=_null_console())
    assert result.dry_run and result.data_summary["num_classes"] == 3


PRETRAINED_PROBE = """
import os, sys, torch, timm
from safetensors.torch import save_file
home = sys.argv[1]
torch.manual_seed(1)
sd = {k: v.contiguous() for k, v in timm.create_model("test_resnet").state_dict().items()}
repo = os.path.join(home, "hub", "models--timm--test_resnet.r160_in1k")
os.makedirs(os.path.join(repo, "snapshots", "0" * 40)); os.makedirs(os.path.join(repo, "refs"))
open(os.path.join(repo, "refs", "main"), "w").write("0" * 40)
save_file(sd, os.path.join(repo, "snapshots", "0" * 40, "model.safetensors"))  # a warm HF cache
save_file(sd, os.path.join(home, "w.safetensors")); torch.save(sd, os.path.join(home, "w.pth"))
from classifier_training.model import build_backbone
from classifier_training.core import ConfigError
torch.manual_seed(2)  # a different random start: equal weights prove the weights were loaded
for source in (True, os.path.join(home, "w.safetensors"), os.path.join(home, "w.pth")):
    m = build_backbone("test_resnet", 3, pretrained=source)
    print("LOADED", source is True and "cache" or source[-4:], torch.equal(m.conv1[0].weight, sd["conv1.0.weight"]))
os.environ["HF_HOME"] = os.path.join(home, "empty")
import huggingface_hub.constants as c; c.HF_HUB_CACHE = os.path.join(home, "empty", "hub")
try: build_backbone("test_resnet", 3, pretrained=True)
except ConfigError as e: print("ERROR", e)
"""


def test_pretrained_weights_load_with_the_hub_off(tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([sys.executable, "-c", PRETRAINED_PROBE, str(tmp_path)], capture_output=True,
                       text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("LOADED") == 3 and "False" not in p.stdout.split("ERROR")[0], p.stdout
    error = p.stdout.split("ERROR", 1)[1]
    for part in ("HF_HUB_OFFLINE=1", "timm/test_resnet.r160_in1k", "model.pretrained=/path/to/",
                 "model.pretrained=false", "timm.create_model('test_resnet', pretrained=True)"):
        assert part in error, (part, error)


@pytest.mark.slow
def test_finetune_preset_trains_offline_from_a_local_weights_file(tmp_path, tiny_data):
    "experiment=finetune end to end with the hub off and the weights in a local file."
    import timm, torch
    torch.save(timm.create_model("test_resnet").state_dict(), tmp_path / "w.pth")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "CLASSIFIER_TRAINING_CACHE": str(tmp_path / "cache")}
    args = ["experiment=finetune", f"model.pretrained={tmp_path / 'w.pth'}", f"data.root={tiny_data}",
            "trainer.max_epochs=2", *TINY[:-1], f"hydra.run.dir={tmp_path / 'run'}"]
    p = subprocess.run([sys.executable, "-m", "classifier_training.training", *args], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, (p.stdout + p.stderr)[-5000:]
    assert (tmp_path / "run" / "checkpoints" / "best.ckpt").is_file()
