"""Run independent subprocesses (labelling trajectories, training runs) a few at a time."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from experiments.layout import ROOT


def run_parallel(commands: list[tuple[list[str], Path]], workers: int) -> None:
    """Run (command, log file) pairs, at most ``workers`` at a time, one OpenMP thread each; raise
    RuntimeError naming the log of the first failure."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "MKL_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    pending, running = list(commands), []
    while pending or running:
        while pending and len(running) < workers:
            command, log = pending.pop(0)
            log.parent.mkdir(parents=True, exist_ok=True)
            handle = log.open("w")
            running.append((subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env), log, handle))
        time.sleep(1.0)
        for item in list(running):
            process, log, handle = item
            if process.poll() is None:
                continue
            handle.close()
            running.remove(item)
            if process.returncode != 0:
                for other, _, other_handle in running:
                    other.terminate()
                    other.wait()
                    other_handle.close()
                tail = log.read_text()[-2000:]
                raise RuntimeError(
                    f"{' '.join(process.args[:4])} failed (exit {process.returncode}); see {log}:\n{tail}"
                )
