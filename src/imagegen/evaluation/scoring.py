"""Scoring: generated uint8 images (+ the requested labels) against the reference split, every generative
metric with its protocol (:func:`evaluate_images`), and a model's likelihood of the split (:func:`score_nll`).

A result is a dict (and a JSON file)::

    {"summary": {"fid": 3.1, "kid": 0.0021, ...},                 # the numbers, flat, for scripts
     "metrics": {"fid": {"value": 3.1, "protocol": {...}}, ...},    # each number with its full protocol
     "protocol": {...}}                                             # the fields every metric shares
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import torch

from .. import likelihood, registry
from ..checkpoint import partial_rows
from ..device import pick_device
from ..errors import ImagegenError
from ..metrics import fid as fidm
from ..metrics import prdc
from ..metrics.cas import augmentation_gain, classification_accuracy_score
from ..metrics.classifier import ClassifierTrainConfig, class_accuracy, classifier_dataset, classifier_score
from ..provenance import software_protocol
from . import reference
from .metrics_table import CLASSIFIER_SUFFIX, FEATURE_METRICS, GENERATIVE, METRICS
from .options import EvalOptions
from .reference import load_reference, reference_features, reference_subset, sha256_tensor


def _suffix(kind: str) -> str:
    return "" if kind == "inception" else CLASSIFIER_SUFFIX


def evaluate_images(gen_u8: torch.Tensor, gen_labels: torch.Tensor | None, dataset: str, opts: EvalOptions,
                    extra_protocol: dict | None = None, base_data_cfg=None) -> dict:
    """Compare generated uint8 images (N, C, H, W) with the reference split; every generative metric."""
    metrics = [m for m in opts.metrics if m in GENERATIVE]
    device = pick_device(opts.device)
    n_gen = int(gen_u8.shape[0])
    if n_gen < 2:
        raise ImagegenError(f"need at least 2 generated images, got {n_gen}")
    # the whole split, then the subset: n_ref, or by default min(n_gen, split size) - equal set sizes, the
    # usual "FID-10k against the 10k test set"
    split_u8, _, _, split_desc = load_reference(
        dataset, opts.ref, None, opts.data_root, int(gen_u8.shape[-1]), int(gen_u8.shape[1]), opts.ref_seed,
        base_data_cfg)
    total = int(split_u8.shape[0])
    idx, subset = reference_subset(total, min(n_gen, total) if opts.n_ref is None else opts.n_ref, opts.ref_seed,
                                   f"{dataset} '{opts.ref}'")
    ref_u8, ref_desc = split_u8[idx], dict(split_desc, ref_subset=subset)
    common = {"dataset": dataset, "ref_split": opts.ref, "n_gen": n_gen, "n_ref": int(ref_u8.shape[0]),
              **ref_desc, "image_size": int(gen_u8.shape[-1]), "channels": int(gen_u8.shape[1]),
              "quantisation": "generated: imagegen.data.to_uint8 (round half up); real: stored uint8",
              "grey_to_rgb": "repeat to 3 channels (Inception only)", **(extra_protocol or {}),
              **software_protocol(device)}
    ctx = _Context(gen_u8, gen_labels, ref_u8, dataset, opts, device, base_data_cfg, common)

    spaces = list(opts.features) if any(m in metrics for m in FEATURE_METRICS) else []
    if "cfd" in metrics and "classifier" not in spaces:
        spaces.append("classifier")
    partials = []  # the generated images' features so far, kept until every metric is computed
    gen_sha = sha256_tensor(gen_u8) if spaces else None
    for kind in spaces:
        t0 = time.time()
        net = reference.feature_net(kind, dataset, opts, device)
        ref_f, mu_r, sigma_r, cache_info = reference_features(net, dataset, opts.ref, ref_u8, ref_desc, opts,
                                                              whole=(split_u8, split_desc, idx))
        partials.append(partial_rows(json.dumps({"rows": "features of generated images", "images_sha256": gen_sha,
                                                 **net.protocol()}, sort_keys=True, default=str), "feature rows"))
        gen_f = net.features(gen_u8, opts.batch_size, desc=f"generated ({net.name})", progress=opts.progress,
                             resume=partials[-1])
        proto = dict(net.protocol(), **cache_info, feature_runtime=net.runtime,
                     feature_seconds=round(time.time() - t0, 1))
        space = _Space(_suffix(kind), gen_f, ref_f, (mu_r, sigma_r), proto)
        for m in FEATURE_METRICS:  # cfd is fid in the classifier's space
            if m in metrics or (m == "fid" and kind == "classifier" and "cfd" in metrics):
                SCORERS[m](ctx, space)
    for m in METRICS:  # the others, in the table's order
        if m in metrics and m in GENERATIVE and m not in FEATURE_METRICS and m in SCORERS:
            SCORERS[m](ctx, None)
    for partial in partials:
        partial.discard()
    return {"summary": ctx.summary, "metrics": ctx.metrics, "protocol": common}


# ---------------------------------------------------------------------------------------------- the metrics
# One function per metric of metrics_table.TABLE, registered under its name. A features metric (fid, kid, pr,
# dc) is called once per feature space with that space's features; the others once, with space None.


@dataclass
class _Space:
    """One feature network's features of the generated and the reference images."""

    suffix: str  # "" (Inception) or "_clf" (the dataset classifier) on every key it records
    gen_f: torch.Tensor  # (N_gen, D)
    ref_f: torch.Tensor  # (N_ref, D)
    ref_stats: tuple  # (mu, sigma) of ref_f, from the reference cache
    protocol: dict


@dataclass
class _Context:
    """What every metric function reads, and :meth:`record` to write its numbers."""

    gen_u8: torch.Tensor
    gen_labels: torch.Tensor | None
    ref_u8: torch.Tensor
    dataset: str
    opts: EvalOptions
    device: torch.device
    base_data_cfg: object
    common: dict
    metrics: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    _classifier: tuple | None = None  # (net, logits of the generated images), made on first use

    def record(self, key: str, value, proto: dict, **extra):
        self.metrics[key] = {"value": value, **extra, "protocol": dict(self.common, **proto)}
        self.summary[key] = value
        for k, v in extra.items():
            self.summary[f"{key}_{k}"] = v

    def classifier(self):
        """The dataset classifier and its logits on the generated images (computed once, for cscore and cacc)."""
        if self._classifier is None:
            net = reference.feature_net("classifier", self.dataset, self.opts, self.device)
            _, logits = net.features_and_logits(self.gen_u8, progress=self.opts.progress)
            self._classifier = (net, logits)
        return self._classifier

    def on_device(self, t: torch.Tensor) -> torch.Tensor:
        """Features for the k-NN metrics: on the GPU when there is one (the pairwise distances), else as they are."""
        return t.to(self.device) if self.device.type == "cuda" else t


SCORERS: dict = {}


def scorer(name: str):
    """Register the function that computes metric ``name`` (a row of metrics_table.TABLE)."""

    def register(fn):
        SCORERS[name] = fn
        return fn

    return register


@scorer("fid")
def _fid(ctx: _Context, space: _Space) -> None:
    mu_g, sigma_g = fidm.feature_stats(space.gen_f)
    ctx.record("fid" + space.suffix, fidm.frechet_distance(mu_g, sigma_g, *space.ref_stats), space.protocol)


@scorer("kid")
def _kid(ctx: _Context, space: _Space) -> None:
    opts = ctx.opts
    mean, std = fidm.kid(space.gen_f, space.ref_f, opts.kid_subsets, opts.kid_subset_size, opts.seed)
    m = min(opts.kid_subset_size, space.gen_f.shape[0], space.ref_f.shape[0])
    ctx.record("kid" + space.suffix, mean, dict(space.protocol, kid_subsets=opts.kid_subsets, kid_subset_size=m,
                                               kid_kernel="(x.y/d + 1)^3", kid_estimator="unbiased"), std=std)


@scorer("pr")
def _pr(ctx: _Context, space: _Space) -> None:
    p, r = prdc.precision_recall(ctx.on_device(space.ref_f), ctx.on_device(space.gen_f), prdc.PR_K)
    ctx.record("precision" + space.suffix, p, dict(space.protocol, k=prdc.PR_K))
    ctx.record("recall" + space.suffix, r, dict(space.protocol, k=prdc.PR_K))


@scorer("dc")
def _dc(ctx: _Context, space: _Space) -> None:
    d, c = prdc.density_coverage(ctx.on_device(space.ref_f), ctx.on_device(space.gen_f), prdc.DC_K)
    ctx.record("density" + space.suffix, d, dict(space.protocol, k=prdc.DC_K))
    ctx.record("coverage" + space.suffix, c, dict(space.protocol, k=prdc.DC_K))


@scorer("cscore")
def _cscore(ctx: _Context, space: None) -> None:
    net, logits = ctx.classifier()
    _, real_logits = net.features_and_logits(ctx.ref_u8)
    ctx.record("classifier_score", classifier_score(logits), net.protocol(), real=classifier_score(real_logits))


@scorer("cacc")
def _cacc(ctx: _Context, space: None) -> None:
    net, logits = ctx.classifier()
    if ctx.gen_labels is None:
        raise ImagegenError("cacc needs the requested labels: evaluate a class-conditional model, or a "
                            "folder with one sub-folder per class")
    ctx.record("class_accuracy", class_accuracy(logits, ctx.gen_labels), net.protocol())


@scorer("cas")
def _cas(ctx: _Context, space: None) -> None:
    gen_u8, gen_labels, dataset, opts, device = ctx.gen_u8, ctx.gen_labels, ctx.dataset, ctx.opts, ctx.device
    base_data_cfg, record = ctx.base_data_cfg, ctx.record
    if gen_labels is None:
        raise ImagegenError("cas needs labelled samples: evaluate a class-conditional model, or a folder with "
                            "one sub-folder per class")
    classifier_dataset(dataset)  # CAS uses the dataset SmallCNN: MNIST-like data only
    train_u8, train_y, info, _ = load_reference(dataset, "train", None, opts.data_root, None, None,
                                                opts.ref_seed, base_data_cfg)
    test_u8, test_y, _, _ = load_reference(dataset, "test", None, opts.data_root, None, None, opts.ref_seed,
                                           base_data_cfg)
    cfg = ClassifierTrainConfig(epochs=opts.cas_epochs, hflip=dataset == "fashion-mnist", seed=opts.seed)
    proto = {"cas_classifier": "SmallCNN from scratch", "cas_epochs": opts.cas_epochs, "cas_test_split": "test",
             "cas_test_images": int(test_u8.shape[0])}
    res = classification_accuracy_score(gen_u8, gen_labels, train_u8, train_y, test_u8, test_y,
                                        info.num_classes, cfg, device, opts.seed, opts.progress)
    record("cas", res["cas"], proto, real_baseline=res["cas_real_baseline"], ratio=res["cas_ratio"])
    aug = augmentation_gain(gen_u8, gen_labels, train_u8, train_y, test_u8, test_y, info.num_classes,
                            opts.aug_real, cfg, device, opts.seed, opts.progress)
    record("aug_gain", aug["aug_gain"], dict(proto, aug_real_images=aug["aug_real_images"],
                                             aug_generated_images=aug["aug_generated_images"],
                                             aug_steps=aug["aug_steps"]),
           real_only=aug["aug_real_only"], real_plus_generated=aug["aug_real_plus_generated"])


def has_nll(name: str) -> bool:
    try:
        return "nll" in registry.capabilities(name)
    except Exception:  # a family that fails to import is not worth a crash here
        return False


def score_nll(model, opts: EvalOptions, run_proto: dict, result: dict) -> None:
    """``--metrics nll``: the model's likelihood of the reference split, added to ``result`` in place.

    The same computation as ``imagegen eval-nll`` (:func:`imagegen.likelihood.split_nll`): the first
    ``--n-ref`` (else ``--n``) images of ``--ref``, seeded with ``--ref-seed`` as eval-nll is with ``--seed``."""
    if "nll" not in registry.capabilities(model.family):
        raise ImagegenError(f"the {model.family} family has no likelihood; 'nll' works for families that "
                            f"offer it ({', '.join(f for f in registry.FAMILIES if has_nll(f))})")
    res, proto = likelihood.split_nll(model, opts.ref, opts.n_ref or opts.n, opts.data_root, opts.batch_size,
                                      opts.ref_seed, progress=opts.progress)
    proto = dict(proto, **run_proto, **software_protocol(pick_device(opts.device)))
    for key in ("nll_nats", "bits_per_dim"):
        result["metrics"][key] = {"value": res[key], "sem": res[f"{key}_sem"], "protocol": proto}
    result["summary"].update(likelihood.nll_summary(res))
    if not result["protocol"]:
        result["protocol"] = proto
