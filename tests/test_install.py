"""The install routes: version ranges against the tested pins, the Makefile's two install stamps
and its Chromium check, and (slow) the torch-free predictor installed from the wheel with --no-deps
into a fresh venv.

Fast tests read settings.ini, constraints.txt and the Makefile, and run `make` only against a fake
venv whose `python` just records its arguments, so nothing is installed. The slow test installs
numpy, Pillow and onnxruntime from the package registry into a throwaway venv.
"""
import configparser
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
MAKE = shutil.which("make")
SKIP_BROWSER = "CLASSIFIER_TRAINING_SKIP_BROWSER"
_cfg = configparser.ConfigParser(delimiters=["="])
_cfg.read(ROOT / "settings.ini", encoding="utf-8")
REQUIREMENTS = [Requirement(r) for r in _cfg["DEFAULT"]["requirements"].split()]
DEV_REQUIREMENTS = [Requirement(r) for r in _cfg["DEFAULT"]["dev_requirements"].split()]


def read_constraints(path: Path = ROOT / "constraints.txt") -> dict[str, Version]:
    "The pins of a constraints file, canonical name -> version; anything but `name==version` fails."
    pins = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"): continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)", line)
        assert m, f"constraints.txt:{n}: {line!r} is not a plain `name==version` pin"
        name = canonicalize_name(m.group(1))
        assert name not in pins, f"constraints.txt:{n}: {name} is pinned twice"
        pins[name] = Version(m.group(2))
    return pins


PINS = read_constraints()


# ---------------------------------------------------------------- version ranges and the pins

@pytest.mark.parametrize("req", REQUIREMENTS + DEV_REQUIREMENTS, ids=str)
def test_every_requirement_has_a_tested_pin_inside_its_range(req):
    name = canonicalize_name(req.name)
    assert name in PINS, f"{req} (settings.ini) has no pin in constraints.txt (see its header)"
    assert req.specifier.contains(PINS[name], prereleases=True), \
        f"constraints.txt pins {name}=={PINS[name]}, outside settings.ini's {req}"


@pytest.mark.parametrize("req", REQUIREMENTS, ids=str)
def test_runtime_requirements_have_a_lower_bound_and_cap_only_majors(req):
    ops = {s.operator: s.version for s in req.specifier}
    assert ">=" in ops, f"{req}: give the lowest version whose features we use (>=)"
    assert set(ops) <= {">=", "<"}, f"{req}: a range is >= and at most a < cap, nothing else"
    if "<" in ops:
        assert re.fullmatch(r"\d+", ops["<"]), f"{req}: cap a major version only (e.g. <3)"
        assert Version(ops["<"]).major > Version(ops[">="]).major, f"{req}: the cap leaves no room"


def test_constraints_hold_the_library_stack_and_not_the_project_itself():
    for name in ("torch", "torchvision", "lightning", "timm", "onnxruntime", "nbdev", "pytest"):
        assert name in PINS, f"{name} is not pinned in constraints.txt"
    assert "classifier-training" not in PINS, "constraints.txt pins the project itself"


def test_the_pin_check_catches_a_pin_outside_the_range(tmp_path):
    (tmp_path / "c.txt").write_text("# header\ntorch==2.5.1\nlightning==2.6.6\n")
    pins = read_constraints(tmp_path / "c.txt")
    assert not Requirement("torch>=2.6,<3").specifier.contains(pins["torch"])
    (tmp_path / "bad.txt").write_text("torch>=2.6\n")
    with pytest.raises(AssertionError, match="not a plain"): read_constraints(tmp_path / "bad.txt")


# ---------------------------------------------------------------- the Makefile, on a fake venv

def _fake_venv(tmp_path: Path) -> tuple[Path, Path]:
    "A venv folder whose python and classifier-train only append their arguments to a log."
    venv, log = tmp_path / "venv", tmp_path / "calls.log"
    (venv / "bin").mkdir(parents=True)
    for name in ("python", "classifier-train"):
        script = venv / "bin" / name
        script.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\n')
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    log.write_text("")
    return venv, log


def _make(*args, env=None):
    return subprocess.run([MAKE, "--no-print-directory", "-C", str(ROOT), *args],
                          capture_output=True, text=True, env=env, timeout=60)


def _new_calls(log: Path, seen: list[str]) -> list[str]:
    lines = log.read_text().splitlines()
    new = lines[len(seen):]
    seen[:] = lines
    return new


@pytest.mark.skipif(MAKE is None, reason="needs GNU make")
def test_make_train_installs_the_training_stack_and_make_test_adds_the_dev_extras_once(tmp_path):
    venv, log = _fake_venv(tmp_path)
    seen: list[str] = []
    proc = _make("train", f"VENV={venv}", "ARGS=trainer.max_epochs=1")
    assert proc.returncode == 0, proc.stderr
    calls = _new_calls(log, seen)
    installs = [c for c in calls if " pip install " in c and "--upgrade pip" not in c]
    assert installs == ["python -m pip install --quiet -c constraints.txt -e ."], calls
    assert calls[-1] == "classifier-train trainer.max_epochs=1", calls
    proc = _make("install-dev", f"VENV={venv}")
    assert proc.returncode == 0, proc.stderr
    installs = [c for c in _new_calls(log, seen) if " pip install " in c]
    assert installs == ["python -m pip install --quiet -c constraints.txt -e .[dev]"], installs
    for target in ("install-dev", "install", "train"):  # both stamps are fresh: no install again
        assert _make(target, f"VENV={venv}").returncode == 0
    assert not [c for c in _new_calls(log, seen) if " pip " in c]


def test_every_pip_install_in_the_makefile_uses_the_constraints():
    makefile = (ROOT / "Makefile").read_text()
    lines = [l.strip() for l in makefile.splitlines()
             if "pip install" in l or "$(PIP_INSTALL)" in l]
    assert "PIP_INSTALL := $(PY) -m pip install --quiet -c constraints.txt" in lines
    unconstrained = [l for l in lines if "-e " in l and not l.startswith("$(PIP_INSTALL)")]
    assert not unconstrained, f"installs of the project without -c constraints.txt: {unconstrained}"


def _bare_path(tmp_path: Path, *tools: str) -> str:
    "A PATH holding only fakes of `tools` (`id` says a normal user; others do nothing): no apt-get."
    bin_dir = tmp_path / "bare_bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in tools:
        (bin_dir / tool).write_text("#!/bin/sh\n" + ("echo 1000\n" if tool == "id" else "exit 0\n"))
        (bin_dir / tool).chmod(0o755)
    return str(bin_dir)


@pytest.mark.skipif(MAKE is None or sys.platform == "win32", reason="needs GNU make and a shell")
def test_make_test_stops_with_the_fix_when_chromium_is_missing(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != SKIP_BROWSER}
    proc = _make("browser", env={**env, "PATH": _bare_path(tmp_path, "id")})
    assert proc.returncode != 0
    assert "Chromium is missing" in proc.stderr, proc.stderr
    assert "sudo apt-get install -y chromium" in proc.stderr, proc.stderr
    proc = _make("browser", env={**env, "PATH": _bare_path(tmp_path, "id"), SKIP_BROWSER: "1"})
    assert proc.returncode == 0, proc.stderr
    proc = _make("browser", env={**env, "PATH": _bare_path(tmp_path, "id", "chromium")})
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr
    test_target = re.search(r"^test:(.*)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert "browser" in test_target.split()


@pytest.mark.skipif(sys.platform == "win32", reason="PATH games need a POSIX system")
def test_the_docs_site_browser_tests_fail_without_chromium_unless_opted_out(tmp_path):
    # a PATH without chromium; the browser fixture runs before the site build, so this is quick
    env = {k: v for k, v in os.environ.items() if k != SKIP_BROWSER}
    env["PATH"] = _bare_path(tmp_path)
    cmd = [sys.executable, "-m", "pytest", "tests/test_docs_site.py", "-k", "sidebar", "-q"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "apt-get install -y chromium" in proc.stdout, proc.stdout[-3000:]
    assert "1 error" in proc.stdout, proc.stdout[-3000:]
    proc = subprocess.run(cmd, cwd=ROOT, env={**env, SKIP_BROWSER: "1"}, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "1 skipped" in proc.stdout, proc.stdout[-3000:]


# ---------------------------------------------------------------- slow: the predictor without torch

@pytest.mark.slow
def test_predictor_installs_from_the_wheel_without_torch(tmp_path):
    from classifier_training.test_utils import tiny_trained_export
    tiny = tiny_trained_export(tmp_path / "tiny")
    image = sorted((tiny.data_root / "test").rglob("*.png"))[0]
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    str(ROOT), "-w", str(wheels)], check=True, timeout=600)
    (wheel,) = wheels.glob("classifier_training-*.whl")
    venv = tmp_path / "venv"
    # the fresh venv sees only itself: no PYTHONPATH, not started in a checkout (python -m adds cwd)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_REQUIRE_VIRTUALENV")}
    def in_venv(*cmd, **kw):
        return subprocess.run(list(map(str, cmd)), cwd=tmp_path, env=env, timeout=900, **kw)
    in_venv(sys.executable, "-m", "venv", venv, check=True)
    py = venv / ("Scripts" if sys.platform == "win32" else "bin") / "python"
    # the README's torch-free route: the package without its dependencies, then the three it needs
    in_venv(py, "-m", "pip", "install", "-q", "--no-deps", wheel, check=True)
    in_venv(py, "-m", "pip", "install", "-q", "-c", ROOT / "constraints.txt", "numpy", "pillow",
            "onnxruntime", check=True)
    cli = shutil.which("classifier-predict", path=str(py.parent))
    assert cli, f"classifier-predict is not installed in {py.parent}"
    proc = in_venv(cli, tiny.model_path, image, "--top-k", "2", capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert image.name in proc.stdout, proc.stdout
    assert any(c in proc.stdout for c in tiny.class_names), proc.stdout
    no_torch = "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is not None)"
    assert in_venv(py, "-c", no_torch).returncode == 0, "torch is installed in the venv"
    check = ("import classifier_training.predict as p, sys; print(p.__file__); "
             "assert 'torch' not in sys.modules")
    out = in_venv(py, "-c", check, capture_output=True, text=True, check=True).stdout
    assert str(venv) in out, f"the predictor was not imported from the fresh venv: {out}"
    # classifier-evaluate scores a model.onnx in the same torch-free environment (issue §3); its figures need matplotlib
    in_venv(py, "-m", "pip", "install", "-q", "-c", ROOT / "constraints.txt", "matplotlib", check=True)
    evaluate = shutil.which("classifier-evaluate", path=str(py.parent))
    assert evaluate, f"classifier-evaluate is not installed in {py.parent}"
    proc = in_venv(evaluate, tiny.model_path, tiny.data_root, "--out", tmp_path / "ev", capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "top-1" in proc.stdout and (tmp_path / "ev" / "confusion_matrix.png").exists()
