"""The real images an evaluation compares with: the reference split, its seeded subset, the feature networks
and the cached reference features (``imagegen ref-stats`` computes and caches them ahead of time)."""

from __future__ import annotations

import hashlib
import time

import torch

from ..config import DataConfig, replace
from ..data import load_dataset
from ..device import pick_device
from ..errors import ImagegenError
from ..metrics.classifier import load_classifier
from ..metrics.fid import InceptionFeatures, cached_reference, feature_stats, peek_reference
from ..provenance import git_commit
from .options import FEATURES, EvalOptions, eval_options, parse_list


def sha256_tensor(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().cpu().numpy().tobytes()).hexdigest()


def load_reference(dataset: str, split: str, n: int | None, data_root: str | None, image_size: int | None,
                   channels: int | None, seed: int = 0, base_cfg=None):
    """The reference split shaped like the generated images: (uint8 images, labels, info, description)."""
    cfg = DataConfig(name=dataset) if base_cfg is None else replace(base_cfg, limit=None, split=split)
    cfg = replace(cfg, name=dataset, image_size=image_size, channels=channels,
                  root=data_root if data_root is not None else cfg.root)
    ds = load_dataset(cfg, split)
    desc: dict = {}
    if ds.binarize:  # dynamically binarised data: one fixed, seeded binarisation is the reference
        ds = ds.fixed_binarization(seed)
        desc["binarization_seed"] = seed
    idx, desc["ref_subset"] = reference_subset(len(ds), n, seed, f"{dataset} '{split}'")
    images = ds.images[idx]
    labels = None if ds.labels is None else ds.labels[idx]
    return images, labels, ds.info, desc


def reference_subset(total: int, n: int | None, seed: int = 0, where: str = "the split"
                     ) -> tuple[torch.Tensor, str]:
    """Which reference images an evaluation with ``n`` of them uses: all when n is None or == total, else a
    seeded random subset in index order. Returns (indices, description for the protocol)."""
    if n is not None and n > total:
        raise ImagegenError(f"asked for {n} reference images but {where} has {total}; lower --n-ref (or --n)")
    if n is None or n == total:
        return torch.arange(total), "all"
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(total, generator=g)[:n].sort().values, f"random {n} of {total}, seed {seed}"


def feature_net(kind: str, dataset: str, opts: EvalOptions, device: torch.device):
    """The feature network of ``--features`` kind (tests replace this with a tiny one)."""
    if kind == "inception":
        return InceptionFeatures(opts.inception_weights, device=device)
    return load_classifier(dataset, opts.classifier_weights, device=device)


def _reference_fields(net, dataset: str, split: str, ref_u8: torch.Tensor, ref_desc: dict) -> dict:
    return {"format": 1, "dataset": dataset, "split": split, "n": int(ref_u8.shape[0]),
            "image_size": int(ref_u8.shape[-1]), "channels": int(ref_u8.shape[1]),
            "images_sha256": sha256_tensor(ref_u8), "quantisation": "uint8", **ref_desc, **net.protocol()}


def reference_features(net, dataset: str, split: str, ref_u8: torch.Tensor, ref_desc: dict, opts: EvalOptions,
                       whole: tuple[torch.Tensor, dict, torch.Tensor] | None = None,
                       ) -> tuple[torch.Tensor, object, object, dict]:
    """Features of the reference images, cached per (dataset, split, n, network hash, protocol).

    ``whole = (split_u8, split_desc, idx)``: ``ref_u8`` is ``split_u8[idx]``. When the whole split's features
    are already cached (say by an earlier FID-10k against the 10k test set), the subset's features are those
    rows - the same per-image features, without running the network again (Inception at 5-15 img/s on a CPU)."""
    if whole is not None and not opts.refresh_cache and len(whole[2]) < whole[0].shape[0]:
        split_u8, split_desc, idx = whole
        hit = peek_reference(_reference_fields(net, dataset, split, split_u8, split_desc))
        if hit is not None:
            feats = hit[0][idx]
            mu, sigma = feature_stats(feats)
            return feats, mu, sigma, {"ref_cache": str(hit[1]), "ref_cache_hit": True,
                                      "ref_features": "rows of the whole split's cached features"}
    used = []

    def compute(partial):  # resumable: a stopped extraction continues from the rows it kept
        used.append(partial)
        return net.features(ref_u8, opts.batch_size, desc=f"reference {split} ({net.name})",
                            progress=opts.progress, resume=partial)

    feats, mu, sigma, path, hit = cached_reference(_reference_fields(net, dataset, split, ref_u8, ref_desc),
                                                   compute, refresh=opts.refresh_cache)
    info = {"ref_cache": str(path), "ref_cache_hit": hit}
    if used and used[0].resumed_rows:
        info["ref_resumed_rows"] = used[0].resumed_rows  # computed by an earlier, stopped call
    return feats, mu, sigma, info


def reference_stats(dataset: str, split: str = "train", n: int | None = None, features: str | list[str] = "inception",
                    opts: EvalOptions | None = None, image_size: int | None = None, channels: int | None = None,
                    **options) -> list[dict]:
    """Compute and cache the reference features/statistics of a split (what ``ref-stats`` runs)."""
    git_commit()  # fixed now, before the long part (see git_commit)

    opts = eval_options(opts, options)
    kinds = parse_list(features, FEATURES, "feature network") or ["inception"]
    device = pick_device(opts.device)
    images, _, _, desc = load_reference(dataset, split, n, opts.data_root, image_size, channels, opts.ref_seed)
    rows = []
    for kind in kinds:
        net = feature_net(kind, dataset, opts, device)
        t0 = time.time()
        feats, mu, sigma, info = reference_features(net, dataset, split, images, desc, opts)
        rows.append({"dataset": dataset, "split": split, "n": int(feats.shape[0]), "feature_net": net.name,
                     "feature_net_sha256": net.sha256, "cache": info["ref_cache"], "cached": info["ref_cache_hit"],
                     "seconds": round(time.time() - t0, 1)})
    return rows
