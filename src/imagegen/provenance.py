"""What produced a number: the package version, the git commit, the hardware and the software versions.

A light module (torch and the standard library only) so that benchmarks and result writers can label their
tables without importing the evaluator.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from .device import pick_device

__version__ = "0.1.0"  # re-exported as imagegen.__version__; keep equal to pyproject.toml's version


@functools.lru_cache(maxsize=1)
def git_commit() -> dict:
    """The checkout's commit (+ dirty flag), read once per process: the entry points call it before any work,
    so a long evaluation records the code it started with, not a HEAD that moved while it ran."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10)
        if commit.returncode != 0:
            return {"git_commit": None}
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10)
        return {"git_commit": commit.stdout.strip(), "git_dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None}


def commit_label() -> str:
    """Short commit id for benchmark tables, '+dirty' when tracked files differ from it."""
    c = git_commit()
    if not c.get("git_commit"):
        return "unknown"
    return c["git_commit"][:9] + ("+dirty" if c.get("git_dirty") else "")


def hardware_label(device: str | torch.device = "auto") -> str:
    """What ran a computation, for result files and benchmark tables: the GPU's name, or the CPU's
    architecture with the cores visible and torch's thread count (timings depend on both). ``device`` as
    ``--device`` takes it (auto, cpu, cuda, cuda:N) or a torch.device."""
    device = pick_device(device) if isinstance(device, str) else device
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    return f"CPU {cpu} ({os.cpu_count()} cores visible, {torch.get_num_threads()} torch threads)"


def software_protocol(device: torch.device) -> dict:
    """The software and hardware fields every result's protocol carries."""
    try:
        cleanfid_version = version("clean-fid")
    except PackageNotFoundError:
        cleanfid_version = None
    return {"imagegen_version": __version__, **git_commit(), "torch": torch.__version__,
            "clean_fid": cleanfid_version, "python": platform.python_version(), "device": str(device),
            "hardware": hardware_label(device)}
