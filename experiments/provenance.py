"""The header every experiment report starts with: command, machine or device, versions, date.

    from experiments.provenance import provenance_lines
    lines = provenance_lines(device)           # markdown lines, one fact each

Every number in ``experiments/results/`` must be readable next to the conditions it was measured
under, so the scripts share this one function instead of each writing its own.
"""

from __future__ import annotations

import datetime
import importlib.metadata as md
import os
import platform
import shlex
import sys

import torch

#: Packages whose versions matter for the numbers (reported when installed).
PACKAGES = ("torch", "e3nn", "lightning", "numpy", "scipy", "ase", "geopatra", "mace-torch", "sgdml")


def device_description(device: str | torch.device = "cpu") -> str:
    """'NVIDIA H100 80GB HBM3 (CUDA 13.0)' or 'CPU x86_64, 2 cores, 2 torch threads'."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return (
        f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} torch threads"
    )


def versions(packages: tuple[str, ...] = PACKAGES) -> str:
    """'torch 2.13.0, e3nn 0.6.0, ...' for the packages that are installed."""
    found = []
    for name in packages:
        try:
            found.append(f"{name} {md.version(name)}")
        except md.PackageNotFoundError:
            continue
    return f"Python {platform.python_version()}, " + ", ".join(found)


def provenance_lines(device: str | torch.device = "cpu", command: str | None = None) -> list[str]:
    """Markdown lines (two trailing spaces = line break) stating command, device, versions, date."""
    if command is None:
        spec = getattr(sys.modules["__main__"], "__spec__", None)  # set under python -m
        script = ["-m", spec.name] if spec is not None else sys.argv[:1]
        command = "python " + shlex.join([*script, *sys.argv[1:]])
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return [
        f"Command: `{command}`  ",
        f"Device: {device_description(device)}; host {platform.node() or '?'}; "
        f"load average {load} (1, 5, 15 min) when written  ",
        f"Versions: {versions()}  ",
        f"Date: {now}  ",
    ]
