"""Negative log-likelihood of a trained model on a dataset split, through the family's ``nll``.

Binary data (binarized MNIST) is scored on one fixed binarisation drawn with ``seed`` (the convention
of the likelihood literature); 8-bit data on its integer levels. Reported in nats per image and bits
per dimension (sub-pixel), with the protocol that produced the number.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from .errors import ImagegenError


def evaluate_nll(run: str | Path, split: str = "test", data_root: str | None = None, n: int | None = None,
                 batch_size: int = 100, seed: int = 0, device: str = "auto", progress: bool = True,
                 conditional: bool = False, **options) -> dict:
    """For a class-conditional model the default is the marginal -log p(x) under uniform labels,
    -log (1/K) sum_y p(x|y) (comparable with unconditional models and the literature);
    ``conditional=True`` reports -log p(x|y) with the true labels instead. With a family whose ``nll``
    is an upper bound (IWAE), the marginal of the per-class bounds is again an upper bound."""
    from . import __version__, registry
    from .api import load
    from .config import replace
    from .data import load_dataset

    model = load(run, device=device)
    if not hasattr(model.fam, "nll"):
        raise ImagegenError(f"the {model.family} family has no likelihood; families with one: "
                            f"{', '.join(f for f in registry.FAMILIES if 'nll' in registry.capabilities(f))}")
    data_cfg = model.config.data if data_root is None else replace(model.config.data, root=data_root)
    data_cfg = replace(data_cfg, limit=None)
    ds = load_dataset(data_cfg, split).fixed_binarization(seed)
    if n is not None:
        ds.images, ds.labels = ds.images[:n], None if ds.labels is None else ds.labels[:n]
    class_cond = bool(getattr(model.config.model, "class_cond", False))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    from tqdm.auto import tqdm

    total = len(ds)
    values = []
    t0 = time.perf_counter()
    for start in tqdm(range(0, total, batch_size), disable=not progress, desc="nll", mininterval=1.0):
        idx = torch.arange(start, min(total, start + batch_size))
        batch = ds.batch(idx)
        if not class_cond:
            values.append(model.nll(batch.x, batch_size=batch_size, **options))
        elif conditional:
            values.append(model.nll(batch.x, labels=batch.y, batch_size=batch_size, **options))
        else:
            k = model.info.num_classes
            per_class = torch.stack([model.nll(batch.x, labels=torch.full_like(idx, c), batch_size=batch_size,
                                               **options) for c in range(k)])  # (K, B) nats
            values.append(-(torch.logsumexp(-per_class, 0) - math.log(k)))
    nats = torch.cat(values)  # (N,) float64
    dims = model.info.num_dims
    mean = nats.mean().item()
    sem = (nats.std().item() / math.sqrt(len(nats))) if len(nats) > 1 else float("nan")
    return {
        "family": model.family, "dataset": model.info.name, "split": split, "n": len(nats),
        "nats": mean, "nats_sem": sem, "bits_per_dim": mean / (dims * math.log(2)),
        "bound": getattr(model.fam, "NLL_KIND", "exact"), "options": options, "seed": seed,
        "conditioning": ("none" if not class_cond else "-log p(x|y), true labels" if conditional
                         else "marginal over uniform labels"),
        "checkpoint": str(model.path), "step": model.step, "images_seen": model.meta.get("images_seen"),
        "seconds": round(time.perf_counter() - t0, 2), "imagegen_version": __version__,
    }
