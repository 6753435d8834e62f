"""The public Python API: ``train`` a run, ``load`` a checkpoint, and a ``LoadedModel`` wrapper that
speaks the family contract (sample, nll, complete, denoise, interpolate, reconstruct)."""

from __future__ import annotations

from pathlib import Path

from . import config, trainer
from .device import pick_device
from .model import LoadedModel, check_options, load


def train(family: str | None = None, *, out: str | Path, preset: str | None = None, data: str | None = None,
          data_root: str | Path | None = None, steps: int | None = None, kimg: float | None = None,
          budget: str | float | None = None, overrides: dict | list[str] | None = None, fresh: bool = False,
          progress: bool = True, latent: str | Path | None = None) -> Path:
    """Train a model; returns the run directory. ``overrides`` is a nested dict or ``["a.b=c", ...]``;
    ``data_root`` is the CLI's ``--data-root`` (the folder holding MNIST/raw/, cifar-10-batches-py/, ...);
    ``latent`` a trained autoencoder run whose codes the model learns (``data.latent``, imagegen.latent)."""
    if isinstance(overrides, list):
        overrides = config.parse_overrides(overrides)
    ov: dict = {"data": {}, "train": {}}
    config._deep_update(ov, overrides or {})
    if data is not None:
        ov["data"]["name"] = data
    if data_root is not None:
        ov["data"]["root"] = str(data_root)
    if latent is not None:
        ov["data"]["latent"] = str(latent)
    if steps is not None:
        ov["train"]["steps"] = steps
    if kimg is not None:
        ov["train"]["kimg"] = kimg
    if budget is not None:
        ov["train"]["budget_minutes"] = config.parse_budget(budget) if isinstance(budget, str) else float(budget)
    cfg = config.resolve(family, preset, ov)
    return trainer.train(cfg, out, fresh=fresh, progress=progress)


__all__ = ["LoadedModel", "check_options", "load", "pick_device", "train"]
