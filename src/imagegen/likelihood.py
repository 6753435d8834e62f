"""Negative log-likelihood of a trained model on a dataset split, through the family's ``nll``.

The one implementation behind ``imagegen eval-nll`` and ``imagegen eval --metrics nll``. Binary data
(binarized MNIST) is scored on one fixed binarisation drawn with ``seed`` (the convention of the
likelihood literature); 8-bit data on its integer levels. Reported in nats per image and bits per
dimension (sub-pixel), with the protocol that produced the number.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from .errors import ImagegenError


def images_nll(model, images_u8: torch.Tensor, labels: torch.Tensor | None, batch_size: int = 100,
               conditional: bool = False, progress: bool = True, **options) -> torch.Tensor:
    """(N,) nats per image of uint8 images under a ``LoadedModel``.

    For a class-conditional model the default is the marginal -log p(x) under uniform labels,
    -log (1/K) sum_y p(x|y) (comparable with unconditional models and the literature);
    ``conditional=True`` scores -log p(x|y) with the given labels instead. With a family whose ``nll``
    is an upper bound (IWAE), the marginal of the per-class bounds is again an upper bound."""
    from tqdm.auto import tqdm

    from .data import to_float

    if not hasattr(model.fam, "nll"):
        from . import registry

        raise ImagegenError(f"the {model.family} family has no likelihood; families with one: "
                            f"{', '.join(f for f in registry.FAMILIES if 'nll' in registry.capabilities(f))}")
    if images_u8.shape[0] == 0:
        raise ImagegenError("no images to evaluate the likelihood on")
    class_cond = model.class_conditional
    if class_cond and conditional and labels is None:
        raise ImagegenError("--conditional needs a labelled split; this one has no labels")
    values = []
    for start in tqdm(range(0, images_u8.shape[0], batch_size), disable=not progress, desc="nll", mininterval=1.0):
        x = to_float(images_u8[start:start + batch_size])
        if not class_cond:
            values.append(model.nll(x, batch_size=batch_size, **options))
        elif conditional:
            values.append(model.nll(x, labels=labels[start:start + batch_size], batch_size=batch_size, **options))
        else:
            k = model.info.num_classes
            per_class = torch.stack([model.nll(x, labels=torch.full((x.shape[0],), c, dtype=torch.long),
                                               batch_size=batch_size, **options) for c in range(k)])  # (K, B)
            values.append(-(torch.logsumexp(-per_class, 0) - math.log(k)))
    nats = torch.cat(values).double()
    if not torch.isfinite(nats).all():
        raise ImagegenError("the model's NLL is not finite on some images; the checkpoint may have diverged")
    return nats


def summarize(nats: torch.Tensor, num_dims: int) -> dict:
    mean = nats.mean().item()
    sem = nats.std().item() / math.sqrt(len(nats)) if len(nats) > 1 else float("nan")
    to_bpd = 1.0 / (num_dims * math.log(2))
    return {"n": len(nats), "nats": mean, "nats_sem": sem, "bits_per_dim": mean * to_bpd,
            "bits_per_dim_sem": sem * to_bpd}


def conditioning(model, conditional: bool) -> str:
    if not model.class_conditional:
        return "none"
    return "-log p(x|y), true labels" if conditional else "marginal over uniform labels"


def evaluate_nll(run: str | Path, split: str = "test", data_root: str | None = None, n: int | None = None,
                 batch_size: int = 100, seed: int = 0, device: str = "auto", progress: bool = True,
                 conditional: bool = False, **options) -> dict:
    """NLL of a run on the first ``n`` images of a split of its own dataset (see ``images_nll``)."""
    from . import __version__
    from .api import load
    from .config import check_range, replace
    from .data import load_dataset

    check_range(n, "[1,inf)", "--n")
    check_range(batch_size, "[1,inf)", "--batch-size")
    model = load(run, device=device)
    data_cfg = model.config.data if data_root is None else replace(model.config.data, root=data_root)
    ds = load_dataset(replace(data_cfg, limit=n), split).fixed_binarization(seed)
    torch.manual_seed(seed)  # the importance samples of a bound
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    t0 = time.perf_counter()
    nats = images_nll(model, ds.images, ds.labels, batch_size, conditional, progress, **options)
    return {
        "family": model.family, "dataset": model.info.name, "split": split, **summarize(nats, model.info.num_dims),
        "bound": getattr(model.fam, "NLL_KIND", "exact"), "conditioning": conditioning(model, conditional),
        "options": options, "seed": seed, "checkpoint": str(model.path), "step": model.step,
        "images_seen": model.meta.get("images_seen"), "seconds": round(time.perf_counter() - t0, 2),
        "imagegen_version": __version__,
    }
