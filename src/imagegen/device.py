"""``--device`` as a torch.device: the one choice of machine every layer shares (model loading, evaluation,
provenance), kept below them all so none has to import the public API for it."""

from __future__ import annotations

import torch

from .errors import ImagegenError


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ImagegenError("--device cuda but no CUDA device is visible; use --device cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ImagegenError(f"unknown device '{device}'; use auto, cpu, cuda or cuda:N") from None
