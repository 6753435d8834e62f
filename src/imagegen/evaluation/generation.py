"""Generating the images an evaluation scores: balanced labels, per-image seeds (imagegen.rng), chunks
quantised to uint8 at once, resumable after a stop, and the sampling options actually in force (recorded in
every protocol)."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import torch

from ..checkpoint import compute_rows, partial_rows
from ..data import to_uint8
from ..metrics.fid import file_sha256
from .options import EvalOptions


def balanced_labels(n: int, num_classes: int) -> torch.Tensor:
    """0, 1, ..., K-1, 0, 1, ...: every class equally often (up to one)."""
    return torch.arange(n) % num_classes


def generate_uint8(model, n: int, labels: torch.Tensor | None, seed: int, batch_size: int, options: dict,
                   progress: bool = True, resume=None) -> torch.Tensor:
    """Sample ``n`` images in chunks of ``batch_size`` and quantise each chunk with to_uint8 at once, so only
    uint8 images are held. Image i is drawn from its own generator, seeded ``imagegen.rng.image_seed(seed, i)``
    (``LoadedModel.sample``'s ``first_index``), so the images do not depend on ``batch_size``, and with
    ``resume`` (a :class:`imagegen.checkpoint.PartialRows`) a stopped call continues with the same images,
    at any chunk size."""

    def chunk(start: int) -> torch.Tensor:
        m = min(batch_size, n - start)
        yb = None if labels is None else labels[start:start + m]
        x = model.sample(m, labels=yb, seed=seed, first_index=start, batch_size=m, **options)
        if x.shape[0] != m:
            raise ValueError(f"sample returned {x.shape[0]} images for {m}")
        return to_uint8(x.cpu())

    return compute_rows(n, batch_size, chunk, resume, "generating", progress, any_start=True)


def generation_partial(model, opts: EvalOptions, sample_options: dict, cond: bool):
    """Where an evaluation keeps the images generated so far: tagged with everything they depend on (the
    checkpoint's bytes, N, seed and its per-image scheme, labels, sampling options, device, torch), so only the
    same evaluation, re-run after a stop, resumes from them, at any ``--batch-size``. No chunk size: images are
    seeded one by one; ``"seeds": "per-image"`` keeps rows of a run stopped under the old per-chunk seeds
    (tagged with ``"chunk"``) from being mixed with these."""
    ckpt = getattr(model, "path", None)
    if ckpt is None or not Path(ckpt).is_file():
        return None  # nothing pins the weights: never resume from images of some other model
    tag = {"rows": "generated uint8 images", "checkpoint_sha256": file_sha256(ckpt),
           "step": model.step, "n": opts.n, "seed": opts.seed, "seeds": "per-image",
           "labels": "balanced (i mod K)" if cond else None, "sample_options": sample_options,
           "device": str(getattr(model, "device", "")), "torch": torch.__version__}
    return partial_rows(json.dumps(tag, sort_keys=True, default=str), "generated images")


def takes(fam, key: str, value) -> bool:
    """Whether a family's ``sample`` takes option ``key`` with this value (``SAMPLE_CHOICES`` lists the values
    of options that are a choice: --sampler dpmpp-2m goes to diffusion, not to PixelCNN's naive/cached)."""
    if key not in inspect.signature(fam.sample).parameters:
        return False
    choices = getattr(fam, "SAMPLE_CHOICES", {}).get(key)
    return choices is None or value in choices


def sample_options_protocol(model, options: dict) -> dict:
    """The sampling options actually in force: the family's defaults overlaid with the run's own (its
    sampling.json, ``LoadedModel.sample_defaults``), then with the user's."""
    fam = getattr(model, "fam", None)
    resolved = {}
    if fam is not None and hasattr(fam, "sample"):
        for name, p in inspect.signature(fam.sample).parameters.items():
            if name in ("model", "n", "labels", "generator") or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            if p.default is not inspect.Parameter.empty:
                resolved[name] = p.default
    resolved.update(getattr(model, "sample_defaults", None) or {})
    resolved.update(options)
    return {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v)) for k, v in resolved.items()}
