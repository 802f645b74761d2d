"""Session fixtures: what several test files need, built once per pytest run instead of once per file.

- `tiny_data`: real sample images, the three `TINY_CLASSES`, 8 per class in train, val and test.
- `tiny_export`: `tiny_trained_export` (a tiny model trained three steps on sample images of all ten classes, its
  checkpoints and its verified ONNX export), with the sample's whole test split (1000 images) in its data root.
- `default_config`: the config a bare `classifier-train` runs with (`compose_config()`).
- `finished_run`: the one real `classifier-train` training run of the fast suite (tests/cli_runs.py says what it is).

The tests only read them; a test that changes files or objects builds its own (copy `default_config` before changing
it). Imports sit inside the fixtures, so a pytest run that needs none of them (tests/test_install.py starts one in a
subprocess) pays nothing for them.
"""
import pytest


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    from classifier_training.test_utils import tiny_dataset
    return tiny_dataset(tmp_path_factory.mktemp("tiny_data") / "tiny", per_class=8)


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    from classifier_training.test_utils import tiny_trained_export
    return tiny_trained_export(tmp_path_factory.mktemp("tiny_export"), test_per_class=100)


@pytest.fixture(scope="session")
def default_config(tmp_path_factory):
    from classifier_training.config import compose_config
    return compose_config(run_dir=tmp_path_factory.mktemp("default_config") / "run")


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    from cli_runs import finished_run
    return finished_run(tmp_path_factory.mktemp("finished_run"))
