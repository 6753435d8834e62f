"""The public Python API: ``train`` a run, ``load`` a checkpoint, and a ``LoadedModel`` wrapper that
speaks the family contract (sample, nll, complete, denoise, interpolate, reconstruct)."""

from __future__ import annotations

from pathlib import Path

from . import config, trainer
from .device import pick_device
from .model import LoadedModel, check_choices, check_options, load


def train(family: str | None = None, *, out: str | Path | None = None, preset: str | None = None,
          data: str | None = None, data_root: str | Path | None = None, steps: int | None = None,
          kimg: float | None = None, budget: str | float | None = None, overrides: dict | list[str] | None = None,
          fresh: bool = False, progress: bool = True, latent: str | Path | None = None, image_size: int | None = None,
          channels: int | None = None, seed: int | None = None, deterministic: bool = False) -> Path:
    """Train a model; returns the run directory (``out``, default ``runs/<family>-<data>``, see
    ``default_run_dir``). The arguments are those of :func:`train_config`; ``fresh`` starts over instead of
    resuming the run in ``out``."""
    cfg = train_config(family, preset=preset, data=data, data_root=data_root, steps=steps, kimg=kimg, budget=budget,
                       overrides=overrides, latent=latent, image_size=image_size, channels=channels, seed=seed,
                       deterministic=deterministic)
    return trainer.train(cfg, default_run_dir(cfg) if out is None else out, fresh=fresh, progress=progress)


def train_config(family: str | None = None, *, preset: str | None = None, data: str | None = None,
                 data_root: str | Path | None = None, steps: int | None = None, kimg: float | None = None,
                 budget: str | float | None = None, overrides: dict | list[str] | None = None,
                 latent: str | Path | None = None, image_size: int | None = None, channels: int | None = None,
                 seed: int | None = None, deterministic: bool = False) -> config.RunConfig:
    """The resolved config ``train`` runs (what ``imagegen train --dry-run`` prints). ``overrides`` is a nested
    dict or ``["a.b=c", ...]``; the other arguments override it: ``data_root`` is the CLI's ``--data-root``
    (the folder holding MNIST/raw/, cifar-10-batches-py/, ...); ``latent`` a trained autoencoder run whose codes
    the model learns (``data.latent``, imagegen.latent); ``budget`` minutes or a string such as ``90s``/``5m``."""
    if isinstance(overrides, list):
        overrides = config.parse_overrides(overrides)
    ov: dict = {"data": {}, "train": {}}
    config._deep_update(ov, overrides or {})
    for key, val in (("name", data), ("root", None if data_root is None else str(data_root)),
                     ("image_size", image_size), ("channels", channels),
                     ("latent", None if latent is None else str(latent))):
        if val is not None:
            ov["data"][key] = val
    for key, val in (("steps", steps), ("kimg", kimg), ("seed", seed)):
        if val is not None:
            ov["train"][key] = val
    if budget is not None:
        ov["train"]["budget_minutes"] = config.parse_budget(budget) if isinstance(budget, str) else float(budget)
    if deterministic:
        ov["train"]["deterministic"] = True
    return config.resolve(family, preset, ov)


def default_run_dir(cfg: config.RunConfig) -> Path:
    """``runs/<family>-<data>`` (``runs/latent-<family>-<data>`` for a latent model)."""
    kind = f"latent-{cfg.family}" if cfg.data.latent else cfg.family
    return Path("runs") / f"{kind}-{cfg.data.name.replace('folder:', '').strip('/').replace('/', '_')}"


__all__ = ["LoadedModel", "check_choices", "check_options", "default_run_dir", "load", "pick_device", "train",
           "train_config"]
