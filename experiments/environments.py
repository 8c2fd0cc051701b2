"""Subprocess environments and the venvs of the foreign tools (sgdml 1.0.3, MACE), whose
pins conflict with ours.

    python -m experiments.environments wheels FOLDER   # wheels for an offline GPU machine"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from experiments import layout

#: Wheel folder for installing the foreign tools' venvs offline (see ensure_venv).
WHEELS_ENV = "GEOPATRA_BENCH_WHEELS"


def thread_env(threads: int) -> dict[str, str]:
    """Environment of a benchmark subprocess: ``threads`` everywhere, passive OpenMP waiting (on a
    shared machine spinning OpenMP threads stall small operations), the ``experiments`` package importable."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
        OMP_WAIT_POLICY="PASSIVE", PYTHONPATH=os.pathsep.join(filter(None, [str(layout.ROOT), env.get("PYTHONPATH")])),
    )
    return env


def run_checked(cmd: list[str], env: dict[str, str], log: Path) -> float:
    """Run ``cmd`` with stdout+stderr to ``log``; raise with the log's tail on failure. Returns wall [s]."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with log.open("w") as handle:
        code = subprocess.run(cmd, env=env, cwd=layout.ROOT, stdout=handle, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - start
    if code != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-25:])
        raise RuntimeError(f"command failed (exit {code}): {' '.join(map(str, cmd))}\n--- {log} ---\n{tail}")
    return wall


def foreign(label: str, notes: list[str], fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, or None with a note in ``notes`` when a foreign tool (its venv or its
    run) fails: a machine without that tool still gets the rest of the study."""
    try:
        return fn(*args, **kwargs)
    except (RuntimeError, OSError, subprocess.CalledProcessError) as err:
        text = str(err).strip().splitlines()
        notes.append(f"{label} failed and is missing from the tables: {text[0] if text else type(err).__name__}")
        print(f"WARNING: {notes[-1]}\n" + "\n".join(text[-15:]), file=sys.stderr, flush=True)
        return None


def ensure_venv(venv: Path, requirements: list[str], first: list[str] | None = None) -> Path:
    """Create ``venv`` for a tool whose pins conflict with ours (again when ``requirements``
    change: pip then installs only what is missing); returns its python.

    ``first`` is installed before ``requirements`` (torch pinned to the CPU wheel, so that a bare
    requirement cannot pull a multi-GB CUDA build). With ``$GEOPATRA_BENCH_WHEELS`` set (a folder of
    wheels, for a machine without a package index) the venv sees the packages of the interpreter
    that creates it (its CUDA torch; through a ``.pth`` file, as that interpreter may be a venv
    itself) and installs ``requirements`` from that folder only, skipping ``first``.
    """
    python = venv / "bin" / "python"
    stamp = venv / ".bench-installed"
    wanted = " ".join((first or []) + requirements) + "\n"
    if stamp.exists() and stamp.read_text() == wanted:
        return python
    wheels = os.environ.get(WHEELS_ENV)
    if not python.exists():
        flags = ["--system-site-packages"] if wheels else []
        subprocess.run([sys.executable, "-m", "venv", *flags, str(venv)], check=True)
        if wheels:  # also see the packages of the interpreter running this (itself perhaps a venv)
            import site

            purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                     check=True, capture_output=True, text=True).stdout.strip()
            Path(purelib, "_bench_parent.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    pip = [str(python), "-m", "pip", "install", "-q"]
    if wheels:
        subprocess.run([*pip, "--no-index", "--find-links", wheels, *requirements], check=True)
    else:
        if first:
            subprocess.run([*pip, *first], check=True)
        subprocess.run([*pip, *requirements], check=True)
    stamp.write_text(wanted)
    return python


#: What the two venvs need beyond a GPU machine's own torch, numpy, scipy, matplotlib and ASE, pinned
#: to the versions measured here (``download_wheels`` fetches them for an offline machine).
OFFLINE_WHEELS = [
    "mace-torch==0.3.16", "e3nn==0.4.4", "matscipy==1.3.1", "torch-ema==0.3", "torchmetrics==1.9.0",
    "lightning-utilities==0.15.3", "ConfigArgParse==1.9.0", "GitPython==3.2.1", "gitdb==4.0.12",
    "smmap==5.0.3", "h5py==3.16.0", "lmdb==3.0.0", "orjson==3.13.0", "opt-einsum==3.4.0",
    "opt-einsum-fx==0.1.4", "prettytable==3.18.0", "wcwidth==0.9.4", "python-hostlist==2.3.0",
    "pandas==3.1.1", "python-dateutil==4.0.0", "tzdata==2026.6", "PyYAML==6.0.4", "tqdm==4.70.1",
    "sgdml==1.0.3", "future==1.0.0", "psutil==7.2.2", "numpy==1.26.4", "ase==3.29.0", "setuptools==84.2.1",
]


def download_wheels(folder: Path) -> None:
    """Fetch :data:`OFFLINE_WHEELS` (no dependencies, no torch) for this Python into ``folder``; on the
    offline machine set ``$GEOPATRA_BENCH_WHEELS`` to it (same Python minor version required)."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(folder), *OFFLINE_WHEELS],
                   check=True)  # wheel, not download: sgdml and a few others are published as sdists only


def mace_python() -> Path:
    """The MACE venv's python (created on first use: torch 2.13.0 CPU wheel first, then mace-torch)."""
    return ensure_venv(layout.EXPERIMENTS / ".venv-mace", ["mace-torch==0.3.16"], first=["torch==2.13.0"])


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "wheels":
        sys.exit("usage: python -m experiments.environments wheels FOLDER")
    download_wheels(Path(sys.argv[2]))
