"""Tiny trained runs of every family on the embedded digits set, for the serve tests (API and browser)."""

from __future__ import annotations

from pathlib import Path

from imagegen import registry
from imagegen.api import train

TINY_TRAIN = {"batch_size": 16, "log_every": 1, "sample_every": 1, "ckpt_every": 1, "sample_n": 16}
_TRAINED: dict = {}


def tiny_runs(tmp_path_factory) -> list[Path]:
    """The runs of :func:`train_tiny_runs`, trained once per test session (the API and browser tests share
    them)."""
    if "runs" not in _TRAINED:
        _TRAINED["runs"] = train_tiny_runs(tmp_path_factory.mktemp("serve-runs"))
    return _TRAINED["runs"]


def train_tiny_runs(root: Path, families=("vae", "gan", "pixelcnn", "diffusion"), steps: int = 1) -> list[Path]:
    """One run per family, one optimiser step each (seconds on a CPU): the server's tests need trained
    checkpoints of every family, not good ones. The VAE is class-conditional so the label paths are
    exercised."""
    out = []
    for fam in families:
        model = dict(getattr(registry.get_family(fam), "TEST_CONFIG", {}))
        if fam == "vae":
            model["class_cond"] = True
        out.append(train(fam, out=root / f"{fam}-digits", data="digits", steps=steps, progress=False,
                         overrides={"model": model, "train": dict(TINY_TRAIN), "data": {"limit": 64}}))
    return out

