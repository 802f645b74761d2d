"""Packaging: the library imports from anywhere, and its wheel carries the sample data and the Hydra configs."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_imports_from_another_directory(tmp_path):
    out = subprocess.run([sys.executable, "-c", "import classifier_training, classifier_training.core as c; "
                          "print(classifier_training.__version__, c.__file__)"],
                         cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert out.split()[0] == "0.1.0"
    assert str(ROOT / "classifier_training") in out


def test_core_does_not_import_torch(tmp_path):
    code = "import sys, classifier_training.core; assert 'torch' not in sys.modules, 'core pulled in torch'"
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
                   check=True)
    (whl,) = out.glob("classifier_training-*.whl")
    return whl


def test_wheel_contains_sample_data_and_configs(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "classifier_training/assets/fashion_mnist_sample.npz" in names
    assert "classifier_training/assets/FASHION_MNIST_LICENSE.txt" in names
    yamls = [n for n in names if n.startswith("classifier_training/conf/") and n.endswith(".yaml")]
    expected = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "classifier_training" / "conf").rglob("*.yaml"))
    assert sorted(yamls) == expected


@pytest.mark.slow
def test_wheel_installs_and_imports_in_a_clean_venv(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel)], check=True)
    code = ("from classifier_training.data.sample import materialize_sample; import tempfile; "
            "r = materialize_sample(tempfile.mkdtemp()); print(len(list(r.rglob('*.png'))))")
    out = subprocess.run([str(py), "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "8000"
