"""Small shared harness for the scripts in bench/: timing with warm-up and repeats, a machine description,
a `Figure` record per measured number, and one function that appends a section to bench/RESULTS.md.

    from _harness import Figure, time_it, append_results
    t = time_it(lambda: work(items), repeats=5, warmup=1)
    fig = Figure.at_least("decode+augment", len(items) / t.median, "img/s", 470)
    append_results("Data pipeline", [fig], notes="...")
"""
from __future__ import annotations

import atexit
import dataclasses
import datetime
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Callable, Sequence

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_PATH = BENCH_DIR / "RESULTS.md"


@dataclasses.dataclass(frozen=True)
class Timing:
    "Seconds per call over the timed repeats (warm-up calls excluded)."
    runs: tuple[float, ...]

    @property
    def median(self) -> float: return statistics.median(self.runs)

    @property
    def spread(self) -> float:
        "(max - min) / median: how noisy the repeats were (0.1 = 10 %)."
        return (max(self.runs) - min(self.runs)) / self.median if self.median else 0.0

    def rate(self, items: int) -> float:
        "Items per second at the median."
        return items / self.median

    def __str__(self) -> str:
        return f"median {self.median * 1e3:.1f} ms, spread {self.spread:.0%} over {len(self.runs)} runs"


def time_it(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> Timing:
    "Call `fn` `warmup` times untimed, then `repeats` times timed (perf_counter)."
    for _ in range(warmup): fn()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return Timing(tuple(runs))


def time_interleaved(fns: Sequence[Callable[[], object]], repeats: int = 5, warmup: int = 1) -> list[Timing]:
    "Time several functions in alternation (a, b, a, b, ...) so that load changes on a shared machine hit all alike."
    for _ in range(warmup):
        for fn in fns: fn()
    runs = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, runs):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return [Timing(tuple(r)) for r in runs]


@dataclasses.dataclass(frozen=True)
class Figure:
    "One reported number: what it is, its value and unit, the aim (text) and whether it was met (None: no aim)."
    name: str
    value: float
    unit: str
    aim: str | None = None
    met: bool | None = None

    @classmethod
    def at_least(cls, name: str, value: float, unit: str, minimum: float) -> "Figure":
        return cls(name, value, unit, f">= {minimum:g}", value >= minimum)

    @classmethod
    def at_most(cls, name: str, value: float, unit: str, maximum: float) -> "Figure":
        return cls(name, value, unit, f"<= {maximum:g}", value <= maximum)

    def row(self) -> str:
        met = {True: "yes", False: "**no**", None: ""}[self.met]
        return f"| {self.name} | {_fmt(self.value)} | {self.unit} | {self.aim or ''} | {met} |"


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _version(dist: str) -> str:
    try: return metadata.version(dist)
    except metadata.PackageNotFoundError: return "-"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"): return line.split(":", 1)[1].strip()
    except OSError: pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    "CPU count (usable and total), CPU model, torch threads and library versions."
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {"cpus_usable": usable, "cpus_total": os.cpu_count(), "cpu_model": _cpu_model(),
            "python": platform.python_version(), "platform": platform.platform(terse=True)}
    if "torch" in sys.modules:
        import torch
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    for dist in ("torch", "torchvision", "timm", "lightning", "pillow", "numpy", "onnxruntime"):
        info[dist] = _version(dist)
    return info


def append_results(title: str, figures: Sequence[Figure], notes: str = "", path: str | os.PathLike = RESULTS_PATH) -> Path:
    "Append a dated section (machine, table of figures, notes) to bench/RESULTS.md, atomically."
    from classifier_training.core import atomic_write_text
    path = Path(path)
    m = machine()
    lines = [f"## {title}", "",
             f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; script `{Path(sys.argv[0]).name}`; "
             + ", ".join(f"{k} {v}" for k, v in m.items()), "",
             "| figure | value | unit | aim | met |", "|---|---:|---|---|---|",
             *(f.row() for f in figures), ""]
    if notes: lines += [notes.strip(), ""]
    old = path.read_text() if path.exists() else "# Benchmark results\n\nEach section is appended by a script in bench/.\n\n"
    return atomic_write_text(path, old.rstrip("\n") + "\n\n" + "\n".join(lines))


def scratch_dir(prefix: str) -> Path:
    "A new temp folder, removed when the script exits: bench runs write run folders and ~80 MB checkpoints."
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, True)
    return path
