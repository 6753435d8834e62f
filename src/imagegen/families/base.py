"""Helpers shared by the family modules (not part of the contract itself), and :class:`Batch`, what a
family's ``train_step`` is given (``imagegen.data`` makes it and re-exports it; it lives here, below both
``data`` and ``memory``, so that memory's step estimate can build one without importing ``data``, which
imports memory)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ImagegenError


@dataclass
class Batch:
    x: torch.Tensor  # (B, C, H, W) float in [-1, 1]
    y: torch.Tensor | None  # (B,) long, or None for unlabelled data


def default_optimizers(model: nn.Module, model_cfg, train_cfg) -> dict[str, torch.optim.Optimizer]:
    """AdamW over every trainable parameter, fused on CUDA where the PyTorch build has it."""
    params = [p for p in model.parameters() if p.requires_grad]
    kwargs = dict(lr=train_cfg.lr, betas=tuple(train_cfg.adam_betas), weight_decay=train_cfg.weight_decay)
    if params and params[0].is_cuda:
        kwargs["fused"] = True
    return {"main": torch.optim.AdamW(params, **kwargs)}


def optimizer_step(accel, opt: torch.optim.Optimizer, params, grad_clip: float) -> None:
    """Clip the global gradient norm to ``grad_clip`` (the ``grad_clip`` a family's ``train_step`` is given:
    the run's ``train.grad_clip``; 0 disables) when the accumulated gradient is complete, then step and zero
    one optimiser."""
    if grad_clip and grad_clip > 0 and accel.sync_gradients:
        accel.clip_grad_norm_(params, grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)


def bits_per_dim(nats_per_image: torch.Tensor, num_dims: int) -> torch.Tensor:
    """nats per image -> bits per sub-pixel (the likelihood literature's unit)."""
    return nats_per_image / (num_dims * math.log(2.0))


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """Spherical interpolation between two batches of vectors, flattened per item (Shoemake 1985)."""
    a_flat, b_flat = a.flatten(1), b.flatten(1)
    cos = (a_flat * b_flat).sum(1) / (a_flat.norm(dim=1) * b_flat.norm(dim=1)).clamp_min(1e-12)
    omega = torch.acos(cos.clamp(-1 + 1e-7, 1 - 1e-7))  # (B,)
    t = torch.as_tensor(t, dtype=a.dtype, device=a.device)
    so = torch.sin(omega)
    wa = torch.sin((1 - t) * omega) / so
    wb = torch.sin(t * omega) / so
    shape = (-1,) + (1,) * (a.dim() - 1)
    return wa.view(shape) * a + wb.view(shape) * b


def check_labels(labels, n: int, num_classes: int, device) -> torch.Tensor | None:
    """Normalise ``labels`` (None, int, list or tensor) to a (n,) long tensor, validating the range."""
    if labels is None:
        return None
    if num_classes <= 0:
        raise ImagegenError("this model is not class-conditional; drop --labels "
                            "(train with --set model.class_cond=true for labelled data)")
    y = torch.as_tensor(labels, dtype=torch.long, device=device).flatten()
    if y.numel() == 1:
        y = y.expand(n).clone()
    if y.numel() != n:
        raise ImagegenError(f"got {y.numel()} labels for {n} images; give one label or one per image")
    if (y < 0).any() or (y >= num_classes).any():
        raise ImagegenError(f"labels must lie in 0..{num_classes - 1}, got {sorted(set(y.tolist()))}")
    return y


def strip_label(labels, family: str) -> int | None:
    """The one class an interpolation strip is drawn in, for families whose path cannot change class
    (GANs blend two, start and end, and do not use this). None stays None."""
    if labels is None:
        return None
    vals = torch.as_tensor(labels).flatten()
    if vals.numel() != 1:
        raise ImagegenError(f"{family} interpolation takes one label for the whole strip, got {vals.numel()} "
                            "(only GANs blend two classes, start and end)")
    return int(vals.item())
