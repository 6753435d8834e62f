"""Name -> family module. The CLI, the trainer, the tests and the demo all read this table.

A new family is one module under ``imagegen.families`` that follows the contract documented in
``imagegen/families/__init__.py``, plus one line here.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import ImagegenError

FAMILIES: dict[str, str] = {
    "vae": "imagegen.families.vae",
    "gan": "imagegen.families.gan",
    "pixelcnn": "imagegen.families.pixelcnn",
    "diffusion": "imagegen.families.diffusion",
    "autoencoder": "imagegen.families.autoencoder",  # the first stage of latent models (imagegen.latent)
}

_REQUIRED = ("Config", "build", "train_step", "sample")


def get_family(name: str) -> ModuleType:
    if name not in FAMILIES:
        raise ImagegenError(f"unknown family '{name}'; available families: {', '.join(FAMILIES)}")
    module = importlib.import_module(FAMILIES[name])
    missing = [a for a in _REQUIRED if not hasattr(module, a)]
    if missing:  # a programming error in the family module, not a user error
        raise TypeError(f"family module {module.__name__} lacks {', '.join(missing)}")
    return module


def capabilities(name: str) -> list[str]:
    """Optional contract functions a family offers (nll, complete, denoise, interpolate, restore, ...)."""
    module = get_family(name)
    return [f for f in ("nll", "complete", "denoise", "interpolate", "reconstruct", "restore") if hasattr(module, f)]


def restore_tasks(name: str) -> tuple[str, ...]:
    """The restoration tasks (imagegen.restoration.TASKS: inpaint, sr, colourise, denoise) a family's
    ``restore`` solves, from its ``RESTORE_TASKS``; () when it has no ``restore``."""
    module = get_family(name)
    return tuple(getattr(module, "RESTORE_TASKS", ())) if hasattr(module, "restore") else ()


def generative(name: str) -> bool:
    """Whether a family draws samples (every one but the autoencoder, a first stage for latent models)."""
    return bool(getattr(get_family(name), "GENERATIVE", True))
