"""Shared fixtures: tiny data infos, a CPU accelerator, an isolated cache."""

from __future__ import annotations

import os

import pytest
import torch

# honour OMP_NUM_THREADS=1: on a busy shared CPU two threads can make small ops 40x slower
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 0) or max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # never touch the user's ~/.cache/imagegen or a real IMAGEGEN_DATA from a test
    monkeypatch.setenv("IMAGEGEN_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.delenv("IMAGEGEN_DATA", raising=False)


@pytest.fixture
def interactive_signals():
    """SIGINT as in a terminal (Python's KeyboardInterrupt handler) for tests that send it: a test run started
    in the background by a script (``make test &``) inherits SIGINT ignored, which imagegen respects."""
    import signal

    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.fixture(scope="session")
def accel():
    from accelerate import Accelerator

    return Accelerator(cpu=True)
