"""Lightning callback of the benchmarks (its own module: ``bench_common`` must import without Lightning).

    geopatra fit ... --trainer.callbacks+=bench_callbacks.ElapsedTime   # with experiments/ on PYTHONPATH
"""

from __future__ import annotations

import time

import lightning as L


class ElapsedTime(L.Callback):
    """Logs ``bench/elapsed_s``, wall time since fit start [s], at the end of each validation epoch,
    so that the time to reach a validation force MAE can be read from ``metrics.csv``."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            pl_module.log("bench/elapsed_s", time.perf_counter() - self.start)
