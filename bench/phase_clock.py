"""A callback for bench_fixed_costs.py: wall-clock marks (time.time) at the Trainer hooks, written as JSON.

Added to a run with `+callbacks.phase_clock._target_=phase_clock.PhaseClock +callbacks.phase_clock.path=FILE`
(bench/ on PYTHONPATH). Not part of the library.
"""
import json
import time
from pathlib import Path

import lightning.pytorch as pl


class PhaseClock(pl.Callback):
    def __init__(self, path: str):
        self.path, self.marks = Path(path), {"epoch_starts": []}

    def _mark(self, key):
        self.marks[key] = time.time()
        self.path.write_text(json.dumps(self.marks))

    def setup(self, trainer, pl_module, stage):
        if stage == "fit": self._mark("setup")
    def on_sanity_check_start(self, trainer, pl_module): self._mark("sanity_start")
    def on_sanity_check_end(self, trainer, pl_module): self._mark("sanity_end")
    def on_train_epoch_start(self, trainer, pl_module):
        self.marks["epoch_starts"].append(time.time())
    def on_train_end(self, trainer, pl_module): self._mark("train_end")
    def on_fit_end(self, trainer, pl_module): self._mark("fit_end")
    def on_test_start(self, trainer, pl_module): self._mark("test_start")
    def on_test_end(self, trainer, pl_module): self._mark("test_end")
