"""Negative log-likelihood of a named data split under a model that has one (``nll`` in the contract).

Families return nats per image (an exact NLL or a bound, as the family documents). Bits per dimension,
the unit of the likelihood literature (e.g. PixelCNN++ 2.92 on CIFAR-10), is nats / (D ln 2) with D = C*H*W.
Binarised MNIST is evaluated on one fixed binarisation of the split (seeded), as is conventional, so
numbers are comparable across runs.
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from ..errors import ImagegenError


def bits_per_dim(nats_per_image: float, num_dims: int) -> float:
    return nats_per_image / (num_dims * math.log(2.0))


def evaluate_nll(nll_fn, images_u8: torch.Tensor, labels: torch.Tensor | None, num_dims: int,
                 batch_size: int = 256, progress: bool = True, **options) -> dict:
    """Mean NLL of uint8 images through ``nll_fn(x in [-1, 1], labels) -> (B,) nats``.

    Returns nats per image, bits/dim and the standard error of the mean (both units)."""
    from ..data import to_float

    if images_u8.shape[0] == 0:
        raise ImagegenError("no images to evaluate the likelihood on")
    vals = []
    for start in tqdm(range(0, images_u8.shape[0], batch_size), desc="nll", disable=not progress, leave=False):
        x = to_float(images_u8[start:start + batch_size])
        y = None if labels is None else labels[start:start + batch_size]
        v = torch.as_tensor(nll_fn(x, y, **options)).double().flatten().cpu()
        if v.shape[0] != x.shape[0]:
            raise ValueError(f"nll returned {v.shape[0]} values for {x.shape[0]} images; it must return (B,)")
        vals.append(v)
    nats = torch.cat(vals)
    if not torch.isfinite(nats).all():
        raise ImagegenError("the model's NLL is not finite on some images; the checkpoint may be diverged")
    mean = float(nats.mean())
    sem = float(nats.std() / math.sqrt(nats.shape[0])) if nats.shape[0] > 1 else 0.0
    return {"nll_nats": mean, "nll_nats_sem": sem, "bits_per_dim": bits_per_dim(mean, num_dims),
            "bits_per_dim_sem": bits_per_dim(sem, num_dims), "n": int(nats.shape[0])}


__all__ = ["bits_per_dim", "evaluate_nll"]
