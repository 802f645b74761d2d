"""Session fixtures: what several test files need, built once per pytest run, not once per file.

- `tiny_data`: real sample images, the three `TINY_CLASSES`, 8 per class in train, val and test.
- `tiny_export`: `tiny_trained_export` (a tiny model trained three steps on sample images of all
  ten classes, its checkpoints, its verified ONNX export), with the sample's whole test split
  (1000 images) in its data root.
- `default_config`: the config a bare `classifier-train` runs with (`compose_config()`).
- `finished_run`: the one real `classifier-train` training run of the fast suite (see
  tests/cli_runs.py).
- `docs_site`: the offline docs site in _docs/, built by tools/build_docs.py --no-execute.

The tests only read them; a test that changes files or objects builds its own (copy
`default_config` before changing it). The last two are subprocesses that take a while: when a
collected test needs them, they start with the first test, one after the other in a background
thread, and so run on the second core while the first tests run in this process. Imports sit
inside the fixtures: a pytest run that needs none of them (tests/test_install.py starts one in a
subprocess) pays nothing for them.
"""
import concurrent.futures
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def build_docs_site() -> Path:
    """tools/build_docs.py --no-execute: the pages without demo outputs (`make docs` adds them).
    With DOCS_SITE_BUILT=1: the _docs/ already built (e.g. by `make docs`)."""
    if os.environ.get("DOCS_SITE_BUILT") != "1":
        p = subprocess.run([sys.executable, str(ROOT / "tools" / "build_docs.py"), "--no-execute"],
                           cwd=ROOT, capture_output=True, text=True)
        assert p.returncode == 0, (f"tools/build_docs.py --no-execute failed:\n{p.stdout[-3000:]}\n"
                                   f"{p.stderr[-3000:]}")
    return ROOT / "_docs"


@pytest.fixture(scope="session", autouse=True)
def background(request, tmp_path_factory) -> dict:
    """The long subprocess jobs a collected test needs, started with the first test in a
    background thread, one at a time: {fixture name: Future}. The docs site is built early only
    when Chromium is there: without it the browser tests fail (or skip) before any build."""
    needed = {name for item in request.session.items for name in item.fixturenames}
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="background")
    jobs = {}
    if "finished_run" in needed:
        from cli_runs import finished_run
        jobs["finished_run"] = pool.submit(finished_run, tmp_path_factory.mktemp("finished_run"))
    if "docs_site" in needed and (shutil.which("chromium") or shutil.which("chromium-browser")):
        jobs["docs_site"] = pool.submit(build_docs_site)
    yield jobs
    pool.shutdown(wait=True, cancel_futures=True)  # a job not yet started (after -x) never will


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
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
def finished_run(background, tmp_path_factory):
    if "finished_run" in background: return background["finished_run"].result()
    from cli_runs import finished_run
    return finished_run(tmp_path_factory.mktemp("finished_run"))


@pytest.fixture(scope="module")  # not session: a session fixture would be set up before the
def docs_site(background) -> Path:  # module's browser, and so build the site before Chromium fails
    site = background["docs_site"].result() if "docs_site" in background else build_docs_site()
    assert (site / "index.html").is_file(), "no _docs/index.html: run `make docs`"
    return site
