"""Negative log-likelihood of a trained model on a dataset split, through the family's ``nll``.

The one implementation behind ``imagegen eval-nll`` and ``imagegen eval --metrics nll``: both call
:func:`split_nll`, so both give the same number for the same images and seed. Its rule:

- the images: the first ``n`` of the split in its stored order (all of it when ``n`` is None or at least the
  split's size), at the model's image size and channels;
- binary data (binarized MNIST) is scored on one fixed binarisation of those images drawn with ``seed`` (the
  convention of the likelihood literature); 8-bit data on its integer levels;
- the random draws of a bound (IWAE's importance samples, the diffusion bound's time steps) come from torch's
  generator seeded with ``seed`` (forked, so the caller's random state is left as it was).

``eval-nll`` takes ``--n`` and ``--seed``; ``eval --metrics nll`` takes ``--n-ref`` (else ``--n``) and
``--ref-seed``. Reported in nats per image and bits per dimension (sub-pixel), with the protocol that produced
the number.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import registry
from .config import check_range, replace
from .data import ImageDataset, load_dataset, to_float
from .errors import ImagegenError
from .model import load
from .provenance import __version__

UNIT = "nats per image; bits/dim = nats / (D ln 2)"


def images_nll(model, images_u8: torch.Tensor, labels: torch.Tensor | None, batch_size: int = 100,
               conditional: bool = False, progress: bool = True, **options) -> torch.Tensor:
    """(N,) nats per image of uint8 images under a ``LoadedModel``.

    For a class-conditional model the default is the marginal -log p(x) under uniform labels,
    -log (1/K) sum_y p(x|y) (comparable with unconditional models and the literature);
    ``conditional=True`` scores -log p(x|y) with the given labels instead. With a family whose ``nll``
    is an upper bound (IWAE), the marginal of the per-class bounds is again an upper bound."""
    if not hasattr(model.fam, "nll"):
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


def nll_summary(res: dict) -> dict:
    """The summary keys of an NLL, as ``imagegen eval`` names them (``summarize``'s ``nats`` is ``nll_nats``)."""
    return {"nll_nats": res["nats"], "nll_nats_sem": res["nats_sem"], "bits_per_dim": res["bits_per_dim"],
            "bits_per_dim_sem": res["bits_per_dim_sem"]}


def conditioning(model, conditional: bool) -> str:
    if not model.class_conditional:
        return "none"
    return "-log p(x|y), true labels" if conditional else "marginal over uniform labels"


def split_nll(model, split: str, n: int | None, data_root: str | None, batch_size: int, seed: int,
              conditional: bool = False, progress: bool = True, **options) -> tuple[dict, dict]:
    """The model's NLL of the first ``n`` images of ``split`` of its own dataset, by the rule in the module
    docstring. Returns (``summarize``'s numbers with ``nll_summary``'s keys added, the protocol)."""
    data_cfg = model.config.data if data_root is None else replace(model.config.data, root=data_root)
    ds = load_dataset(replace(data_cfg, limit=None), split)
    total = len(ds)
    n = total if n is None else min(n, total)
    binary = ds.binarize
    first = ImageDataset(ds.images[:n], None if ds.labels is None else ds.labels[:n], ds.info, binarize=binary)
    images, labels = first.fixed_binarization(seed).images, first.labels
    with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_available() else []):
        torch.manual_seed(seed)  # the random draws of a bound; seeds every CUDA device too
        nats = images_nll(model, images, labels, batch_size, conditional, progress, **options)
    res = summarize(nats, model.info.num_dims)
    res.update(nll_summary(res))
    proto = {"dataset": model.config.data.name, "ref_split": split, "n_ref": res["n"],
             **({"binarization_seed": seed} if binary else {}),
             "ref_subset": "all" if n == total else f"first {n} of {total}", "nll_seed": seed,
             "num_dims": model.info.num_dims, "bits": model.info.bits,
             "nll_kind": getattr(getattr(model, "fam", None), "NLL_KIND", "as the family documents"),
             "conditioning": conditioning(model, conditional), "unit": UNIT}
    return res, proto


def evaluate_nll(run: str | Path, split: str = "test", data_root: str | None = None, n: int | None = None,
                 batch_size: int = 100, seed: int = 0, device: str = "auto", progress: bool = True,
                 conditional: bool = False, **options) -> dict:
    """``imagegen eval-nll``: the NLL of a run on the first ``n`` images of a split (see :func:`split_nll`).

    The result keeps eval-nll's flat keys (family, n, nats, bits_per_dim, bound, ...) and also carries the
    ``summary`` and ``protocol`` of an ``imagegen eval`` result, so the readers of result files
    (``imagegen info``, the report, the web app) need one format."""
    check_range(n, "[1,inf)", "--n")
    check_range(batch_size, "[1,inf)", "--batch-size")
    model = load(run, device=device)
    t0 = time.perf_counter()
    res, proto = split_nll(model, split, n, data_root, batch_size, seed, conditional, progress, **options)
    return {
        "family": model.family, "dataset": model.info.name, "split": split,
        **{k: res[k] for k in ("n", "nats", "nats_sem", "bits_per_dim", "bits_per_dim_sem")},
        "bound": getattr(model.fam, "NLL_KIND", "exact"), "conditioning": proto["conditioning"],
        "options": options, "seed": seed, "checkpoint": str(model.path), "step": model.step,
        "images_seen": model.meta.get("images_seen"), "seconds": round(time.perf_counter() - t0, 2),
        "imagegen_version": __version__,
        "summary": nll_summary(res),
        "protocol": dict(proto, checkpoint=str(model.path), checkpoint_step=model.step, family=model.family,
                         options=options),
    }
