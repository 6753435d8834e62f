"""High-level evaluation: what ``imagegen eval``, ``eval-folder``, ``ref-stats`` and ``train-classifier`` call.

Every path meets in :func:`evaluate_images`: generated uint8 images (+ requested labels) against a named
reference split, with the metric's protocol written next to every number. The result is a dict (and a
JSON file)::

    {"summary": {"fid": 3.1, "kid": 0.0021, ...},                 # the numbers, flat, for scripts
     "metrics": {"fid": {"value": 3.1, "protocol": {...}}, ...},    # each number with its full protocol
     "protocol": {...}}                                             # the fields every metric shares
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from .errors import ImagegenError

METRICS = ("fid", "kid", "pr", "dc", "cfd", "cscore", "cacc", "cas", "nll")
METRIC_HELP = {
    "fid": "Frechet distance in --features space (Inception by default)",
    "kid": "kernel (MMD^2) distance, unbiased, cubic kernel; mean and std over subsets",
    "pr": "precision and recall, k=3 (Kynkaanniemi et al. 2019)",
    "dc": "density and coverage, k=5 (Naeem et al. 2020)",
    "cfd": "Frechet distance in the dataset classifier's features (MNIST / Fashion-MNIST)",
    "cscore": "classifier score: the Inception Score formula with the dataset classifier",
    "cacc": "class-conditional models: how often the classifier sees the requested class",
    "cas": "Classification Accuracy Score + augmentation gain (class-conditional models)",
    "nll": "negative log-likelihood of the reference split, nats/image and bits/dim",
}
FEATURES = ("inception", "classifier")
GENERATIVE = {"fid", "kid", "pr", "dc", "cfd", "cscore", "cacc", "cas"}


@dataclass
class EvalOptions:
    metrics: list[str] = field(default_factory=lambda: ["fid", "kid", "pr", "dc"])
    n: int = 10000  # generated images
    ref: str = "test"  # reference split
    n_ref: int | None = None  # reference images; None: min(n, size of the split)
    features: list[str] = field(default_factory=lambda: ["inception"])  # for fid, kid, pr, dc
    batch_size: int = 128
    seed: int = 0
    ref_seed: int = 0  # which random subset of the split when n_ref is smaller than it
    data_root: str | None = None
    inception_weights: str | None = None
    classifier_weights: str | None = None
    device: str = "auto"
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    cas_epochs: int = 3
    aug_real: int = 1000
    refresh_cache: bool = False
    progress: bool = True


# ---------------------------------------------------------------------------------------------- parsing


def eval_options(opts: EvalOptions | None, options: dict) -> EvalOptions:
    """The entry points take an EvalOptions or its fields as keywords (``metrics="fid,kid", n=2000``);
    an unknown keyword is a one-line error that lists the valid ones."""
    if opts is not None and options:
        raise ImagegenError(f"pass an EvalOptions or keyword options ({', '.join(options)}), not both")
    if opts is not None:
        return opts
    valid = [f.name for f in fields(EvalOptions)]
    unknown = [k for k in options if k not in valid]
    if unknown:
        raise ImagegenError(f"unknown evaluation option(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    return EvalOptions(**options)


def check_counts(opts: EvalOptions, n_min: int) -> None:
    """The counts a user passes (--n, --n-ref, --batch-size, ...) as one-line errors, before any work."""
    from .config import check_range

    for name, value, spec in (("n", opts.n, f"[{n_min},inf)"), ("n-ref", opts.n_ref, "[2,inf)"),
                              ("batch-size", opts.batch_size, "[1,inf)"), ("kid-subsets", opts.kid_subsets, "[1,inf)"),
                              ("kid-subset-size", opts.kid_subset_size, "[2,inf)"),
                              ("cas-epochs", opts.cas_epochs, "[1,inf)"), ("aug-real", opts.aug_real, "[1,inf)")):
        check_range(value, spec, f"--{name}")


def parse_list(text: str | list[str] | None, valid: tuple[str, ...], what: str) -> list[str]:
    if text is None:
        return []
    items = text if isinstance(text, list) else [t.strip().lower() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in valid]
    if bad:
        raise ImagegenError(f"unknown {what} '{bad[0]}'; choose from: {', '.join(valid)}")
    return list(dict.fromkeys(items))


# ---------------------------------------------------------------------------------------------- provenance


@functools.lru_cache(maxsize=1)
def git_commit() -> dict:
    """The checkout's commit (+ dirty flag), read once per process: the entry points call it before any work,
    so a long evaluation records the code it started with, not a HEAD that moved while it ran."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10)
        if commit.returncode != 0:
            return {"git_commit": None}
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10)
        return {"git_commit": commit.stdout.strip(), "git_dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None}


def commit_label() -> str:
    """Short commit id for benchmark tables, '+dirty' when tracked files differ from it."""
    c = git_commit()
    if not c.get("git_commit"):
        return "unknown"
    return c["git_commit"][:9] + ("+dirty" if c.get("git_dirty") else "")


def hardware_label(device: str | torch.device = "auto") -> str:
    """What ran a computation, for result files and benchmark tables: the GPU's name, or the CPU's
    architecture with the cores visible and torch's thread count (timings depend on both). ``device`` as
    ``--device`` takes it (auto, cpu, cuda, cuda:N) or a torch.device."""
    from .api import pick_device

    device = pick_device(device) if isinstance(device, str) else device
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    return f"CPU {cpu} ({os.cpu_count()} cores visible, {torch.get_num_threads()} torch threads)"


def software_protocol(device: torch.device) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__

    try:
        cleanfid_version = version("clean-fid")
    except PackageNotFoundError:
        cleanfid_version = None
    return {"imagegen_version": __version__, **git_commit(), "torch": torch.__version__,
            "clean_fid": cleanfid_version, "python": platform.python_version(), "device": str(device),
            "hardware": hardware_label(device)}


def _sha256_tensor(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().cpu().numpy().tobytes()).hexdigest()


# ---------------------------------------------------------------------------------------------- reference data


def load_reference(dataset: str, split: str, n: int | None, data_root: str | None, image_size: int | None,
                   channels: int | None, seed: int = 0, base_cfg=None):
    """The reference split shaped like the generated images: (uint8 images, labels, info, description)."""
    from .config import DataConfig, replace
    from .data import load_dataset

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
    if kind == "inception":
        from .metrics.fid import InceptionFeatures

        return InceptionFeatures(opts.inception_weights, device=device)
    from .metrics.classifier import load_classifier

    return load_classifier(dataset, opts.classifier_weights, device=device)


def _reference_fields(net, dataset: str, split: str, ref_u8: torch.Tensor, ref_desc: dict) -> dict:
    return {"format": 1, "dataset": dataset, "split": split, "n": int(ref_u8.shape[0]),
            "image_size": int(ref_u8.shape[-1]), "channels": int(ref_u8.shape[1]),
            "images_sha256": _sha256_tensor(ref_u8), "quantisation": "uint8", **ref_desc, **net.protocol()}


def reference_features(net, dataset: str, split: str, ref_u8: torch.Tensor, ref_desc: dict, opts: EvalOptions,
                       whole: tuple[torch.Tensor, dict, torch.Tensor] | None = None,
                       ) -> tuple[torch.Tensor, object, object, dict]:
    """Features of the reference images, cached per (dataset, split, n, network hash, protocol).

    ``whole = (split_u8, split_desc, idx)``: ``ref_u8`` is ``split_u8[idx]``. When the whole split's features
    are already cached (say by an earlier FID-10k against the 10k test set), the subset's features are those
    rows - the same per-image features, without running the network again (Inception at 5-15 img/s on a CPU)."""
    from .metrics.fid import cached_reference, feature_stats, peek_reference

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


# ---------------------------------------------------------------------------------------------- core


def _suffix(kind: str) -> str:
    return "" if kind == "inception" else "_clf"


def evaluate_images(gen_u8: torch.Tensor, gen_labels: torch.Tensor | None, dataset: str, opts: EvalOptions,
                    extra_protocol: dict | None = None, base_data_cfg=None) -> dict:
    """Compare generated uint8 images (N, C, H, W) with the reference split; every generative metric."""
    from .api import pick_device
    from .checkpoint import partial_rows
    from .metrics import fid as fidm
    from .metrics import prdc

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
    out_metrics: dict = {}
    summary: dict = {}

    def record(key: str, value, proto: dict, **extra):
        out_metrics[key] = {"value": value, **extra, "protocol": dict(common, **proto)}
        summary[key] = value
        for k, v in extra.items():
            summary[f"{key}_{k}"] = v

    kinds = list(opts.features) if any(m in metrics for m in ("fid", "kid", "pr", "dc")) else []
    if "cfd" in metrics and "classifier" not in kinds:
        kinds.append("classifier")
    partials = []  # the generated images' features so far, kept until every metric is computed
    gen_sha = _sha256_tensor(gen_u8) if kinds else None
    for kind in kinds:
        t0 = time.time()
        net = feature_net(kind, dataset, opts, device)
        ref_f, mu_r, sigma_r, cache_info = reference_features(net, dataset, opts.ref, ref_u8, ref_desc, opts,
                                                              whole=(split_u8, split_desc, idx))
        partials.append(partial_rows(json.dumps({"rows": "features of generated images", "images_sha256": gen_sha,
                                                 **net.protocol()}, sort_keys=True, default=str), "feature rows"))
        gen_f = net.features(gen_u8, opts.batch_size, desc=f"generated ({net.name})", progress=opts.progress,
                             resume=partials[-1])
        proto = dict(net.protocol(), **cache_info, feature_runtime=net.runtime,
                     feature_seconds=round(time.time() - t0, 1))
        sfx = _suffix(kind)
        mu_g, sigma_g = fidm.feature_stats(gen_f)
        want_fid = "fid" in metrics or (kind == "classifier" and "cfd" in metrics)
        if want_fid:
            record("fid" + sfx, fidm.frechet_distance(mu_g, sigma_g, mu_r, sigma_r), proto)
        if "kid" in metrics:
            mean, std = fidm.kid(gen_f, ref_f, opts.kid_subsets, opts.kid_subset_size, opts.seed)
            m = min(opts.kid_subset_size, gen_f.shape[0], ref_f.shape[0])
            record("kid" + sfx, mean, dict(proto, kid_subsets=opts.kid_subsets, kid_subset_size=m,
                                           kid_kernel="(x.y/d + 1)^3", kid_estimator="unbiased"), std=std)
        dev_f = device if device.type == "cuda" else None
        if "pr" in metrics:
            p, r = prdc.precision_recall(_to(ref_f, dev_f), _to(gen_f, dev_f), prdc.PR_K)
            record("precision" + sfx, p, dict(proto, k=prdc.PR_K))
            record("recall" + sfx, r, dict(proto, k=prdc.PR_K))
        if "dc" in metrics:
            d, c = prdc.density_coverage(_to(ref_f, dev_f), _to(gen_f, dev_f), prdc.DC_K)
            record("density" + sfx, d, dict(proto, k=prdc.DC_K))
            record("coverage" + sfx, c, dict(proto, k=prdc.DC_K))

    if "cscore" in metrics or "cacc" in metrics:
        from .metrics.classifier import class_accuracy, classifier_score

        net = feature_net("classifier", dataset, opts, device)
        _, logits = net.features_and_logits(gen_u8, progress=opts.progress)
        proto = net.protocol()
        if "cscore" in metrics:
            _, real_logits = net.features_and_logits(ref_u8)
            record("classifier_score", classifier_score(logits), proto,
                   real=classifier_score(real_logits))
        if "cacc" in metrics:
            if gen_labels is None:
                raise ImagegenError("cacc needs the requested labels: evaluate a class-conditional model, or a "
                                    "folder with one sub-folder per class")
            record("class_accuracy", class_accuracy(logits, gen_labels), proto)

    if "cas" in metrics:
        _run_cas(gen_u8, gen_labels, dataset, opts, device, record, base_data_cfg)
    for partial in partials:
        partial.discard()
    return {"summary": summary, "metrics": out_metrics, "protocol": common}


def _to(t: torch.Tensor, device):
    return t if device is None else t.to(device)


def _run_cas(gen_u8, gen_labels, dataset, opts, device, record, base_data_cfg):
    from .metrics.cas import augmentation_gain, classification_accuracy_score
    from .metrics.classifier import ClassifierTrainConfig, classifier_dataset

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


# ---------------------------------------------------------------------------------------------- generating


def balanced_labels(n: int, num_classes: int) -> torch.Tensor:
    """0, 1, ..., K-1, 0, 1, ...: every class equally often (up to one)."""
    return torch.arange(n) % num_classes


def generate_uint8(model, n: int, labels: torch.Tensor | None, seed: int, batch_size: int, options: dict,
                   progress: bool = True, resume=None) -> torch.Tensor:
    """Sample ``n`` images in chunks of ``batch_size`` (chunk k uses seed ``seed * 1000003 + k``) and quantise
    each chunk with to_uint8 at once, so only uint8 images are held. Chunks are seeded one by one, so with
    ``resume`` (a :class:`imagegen.checkpoint.PartialRows`) a stopped call continues with the same images."""
    from .checkpoint import compute_rows
    from .data import to_uint8

    def chunk(start: int) -> torch.Tensor:
        m = min(batch_size, n - start)
        yb = None if labels is None else labels[start:start + m]
        x = model.sample(m, labels=yb, seed=seed * 1_000_003 + start // batch_size, batch_size=m, **options)
        if x.shape[0] != m:
            raise ValueError(f"sample returned {x.shape[0]} images for {m}")
        return to_uint8(x.cpu())

    return compute_rows(n, batch_size, chunk, resume, "generating", progress)


def training_eval_options(cfg, info) -> EvalOptions | None:
    """The evaluations ``train.eval_every`` asks for, checked before the first training step: one that cannot
    run (an unknown metric, nll for a family without a likelihood, classifier metrics without a classifier for
    the data, cacc/cas without labels, Inception weights missing offline) fails now, not after the first hour
    of training. None when they are off."""
    from . import registry

    t = cfg.train
    if not t.eval_every:
        if t.keep_best:
            raise ImagegenError("train.keep_best needs evaluations: set train.eval_every too (e.g. 500)")
        return None
    metrics = parse_list(t.eval_metrics, METRICS, "train.eval_metrics metric")
    if not metrics:
        raise ImagegenError(f"train.eval_metrics is empty; choose from {', '.join(METRICS)}")
    if not registry.generative(cfg.family):
        raise ImagegenError(f"train.eval_every scores samples, and the {cfg.family} family draws none; drop it")
    if "nll" in metrics and ("nll" not in registry.capabilities(cfg.family) or cfg.data.latent):
        why = ("a latent model's likelihood is over its codes, not pixels" if cfg.data.latent
               else f"the {cfg.family} family has no likelihood")
        raise ImagegenError(f"train.eval_metrics: nll does not apply ({why}); drop it")
    if any(m in ("cacc", "cas") for m in metrics) and not cfg.class_conditional(info.num_classes):
        raise ImagegenError("train.eval_metrics: cacc and cas need a class-conditional model "
                            "(model.class_cond=true)")
    if any(m in ("cfd", "cscore", "cacc", "cas") for m in metrics):
        from .metrics.classifier import CLASSIFIER_DATASETS

        if cfg.data.name not in CLASSIFIER_DATASETS:
            raise ImagegenError(f"train.eval_metrics={t.eval_metrics!r} needs the dataset classifier, and there is "
                                f"none for '{cfg.data.name}' (only {', '.join(CLASSIFIER_DATASETS)}); use "
                                f"--set train.eval_metrics=fid,kid (Inception) instead")
    if any(m in ("fid", "kid", "pr", "dc") for m in metrics):
        from .metrics.fid import resolve_inception_weights

        resolve_inception_weights(None)  # IMAGEGEN_INCEPTION, the cache, or the download: now, not later
    if t.keep_best and t.keep_best not in training_result_keys(metrics):
        raise ImagegenError(f"train.keep_best={t.keep_best!r} is not among what train.eval_metrics="
                            f"{t.eval_metrics!r} gives: {', '.join(training_result_keys(metrics))}")
    return EvalOptions(metrics=metrics, n=t.eval_n, ref="test", data_root=cfg.data.root, progress=False,
                       batch_size=min(t.eval_n, 250))


LOWER_IS_BETTER = ("fid", "kid", "fid_clf", "kid_clf", "nll_nats", "bits_per_dim")


def training_result_keys(metrics: list[str]) -> list[str]:
    """The summary keys an in-training evaluation with these metrics yields (Inception features, plus the
    classifier's when cfd is asked for: kid then also gives kid_clf)."""
    keys = {"fid": ["fid"], "kid": ["kid"], "pr": ["precision", "recall"], "dc": ["density", "coverage"],
            "cfd": ["fid_clf"], "cscore": ["classifier_score"], "cacc": ["class_accuracy"],
            "cas": ["cas", "aug_gain"], "nll": ["nll_nats", "bits_per_dim"]}
    out = [k for m in metrics for k in keys.get(m, [])]
    if "cfd" in metrics and "kid" in metrics:
        out.append("kid_clf")
    return out


def evaluate_during_training(net, cfg, info, step: int, opts: EvalOptions, device, run_dir,
                             first_stage=None) -> dict:
    """``imagegen eval`` of ``net`` (the EMA copy, in eval mode) at this step: the same code, metrics and
    reference (the test split; balanced labels for class-conditional models), sampled from a fixed seed with
    the family's preview options (diffusion: DPM-Solver++(2M), 10 steps), so one run's numbers are comparable
    across its steps."""
    from .api import LoadedModel

    model = LoadedModel(cfg.family, cfg, info, net, {"step": step}, None, device, first_stage=first_stage)
    opts.device = str(device)
    return _evaluate_model(model, run_dir, opts, dict(getattr(model.fam, "PREVIEW_OPTIONS", {})))


def _sample_options_protocol(model, options: dict) -> dict:
    """The sampling options actually in force: the family's defaults overlaid with the user's."""
    fam = getattr(model, "fam", None)
    resolved = {}
    if fam is not None and hasattr(fam, "sample"):
        for name, p in inspect.signature(fam.sample).parameters.items():
            if name in ("model", "n", "labels", "generator") or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            if p.default is not inspect.Parameter.empty:
                resolved[name] = p.default
    resolved.update(options)
    return {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v)) for k, v in resolved.items()}


def evaluate_run(path: str | Path, opts: EvalOptions | None = None, sample_options: dict | None = None,
                 out: str | Path | None = None, **options) -> dict:
    """Load a run (its newest checkpoint) or checkpoint file, generate, and evaluate. ``options`` are
    EvalOptions fields, e.g. ``evaluate_run("runs/x", metrics="fid,kid", n=2000, device="cpu")``."""
    from . import load

    git_commit()  # fixed now, before the long part (see git_commit)

    opts = eval_options(opts, options)
    sample_options = dict(sample_options or {})
    check_counts(opts, 1)
    metrics = parse_list(opts.metrics, METRICS, "metric")
    if not metrics:
        raise ImagegenError(f"no metrics requested; pass --metrics with some of: {', '.join(METRICS)}")
    opts.metrics = metrics
    opts.features = parse_list(opts.features, FEATURES, "feature network") or ["inception"]
    return _evaluate_model(load(path, device=opts.device), path, opts, sample_options, out)


def _evaluate_model(model, path, opts: EvalOptions, sample_options: dict, out=None) -> dict:
    """``evaluate_run`` on a model already loaded, with ``opts.metrics``/``opts.features`` already parsed."""
    from .api import check_options

    metrics = opts.metrics
    dataset = model.config.data.name
    if dataset.startswith("folder:") and any(m in metrics for m in ("cfd", "cscore", "cacc", "cas")):
        raise ImagegenError("classifier metrics (cfd, cscore, cacc, cas) need mnist, fashion-mnist or "
                            "binarized-mnist; this run was trained on a folder")
    if hasattr(model, "fam") and sample_options:
        check_options(model.fam.sample, sample_options, f"{model.family}.sample")
    base_cfg = model.config.data
    if opts.data_root is None:
        opts.data_root = base_cfg.root
    ckpt = getattr(model, "path", None)
    run_proto = {"run": str(path), "checkpoint": str(ckpt) if ckpt else "EMA weights in memory, during training",
                 "checkpoint_step": model.step, "family": model.family,
                 "sample_options": _sample_options_protocol(model, sample_options)}
    for k in ("sampler", "steps", "guidance", "temperature", "truncation", "eta"):
        if k in run_proto["sample_options"]:
            run_proto[k] = run_proto["sample_options"][k]

    result = {"summary": {}, "metrics": {}, "protocol": {}}
    partial = None  # where the generated images are kept until the numbers exist
    if any(m in GENERATIVE for m in metrics):
        cond = model.class_conditional
        labels = balanced_labels(opts.n, model.info.num_classes) if cond else None
        if not cond and any(m in metrics for m in ("cacc", "cas")):
            raise ImagegenError("cacc and cas need a class-conditional model (train with "
                                "--set model.class_cond=true); drop them from --metrics")
        t0 = time.time()
        partial = _generation_partial(model, opts, run_proto["sample_options"], cond)
        gen = generate_uint8(model, opts.n, labels, opts.seed, opts.batch_size, sample_options, opts.progress,
                             resume=partial)
        gen_seconds = time.time() - t0
        run_proto.update(seed=opts.seed, seed_scheme=f"chunk k of {opts.batch_size} images uses seed "
                                                     f"seed*1000003+k", labels="balanced (i mod K)" if cond
                         else None, generation_seconds=round(gen_seconds, 3))
        if partial is not None and partial.resumed_rows:  # generation_seconds then timed only the rest
            run_proto["generation_resumed_rows"] = partial.resumed_rows
        result = evaluate_images(gen, labels, dataset, opts, run_proto, base_cfg)
    if "nll" in metrics:
        _run_nll(model, dataset, opts, run_proto, result, base_cfg)
    if out is not None:
        write_result(result, out)
    if partial is not None:
        partial.discard()  # kept until here: a stop during feature extraction does not redo the sampling
    return result


def _generation_partial(model, opts: EvalOptions, sample_options: dict, cond: bool):
    """Where an evaluation keeps the images generated so far: tagged with everything they depend on (the
    checkpoint's bytes, N, seed, chunk size, labels, sampling options, device, torch), so only the same
    evaluation, re-run after a stop, resumes from them."""
    from .checkpoint import partial_rows
    from .metrics.fid import file_sha256

    ckpt = getattr(model, "path", None)
    if ckpt is None or not Path(ckpt).is_file():
        return None  # nothing pins the weights: never resume from images of some other model
    tag = {"rows": "generated uint8 images", "checkpoint_sha256": file_sha256(ckpt),
           "step": model.step, "n": opts.n, "seed": opts.seed, "chunk": opts.batch_size,
           "labels": "balanced (i mod K)" if cond else None, "sample_options": sample_options,
           "device": str(getattr(model, "device", "")), "torch": torch.__version__}
    return partial_rows(json.dumps(tag, sort_keys=True, default=str), "generated images")


def _run_nll(model, dataset, opts, run_proto, result, base_cfg):
    from . import registry
    from .api import pick_device
    from .likelihood import conditioning, images_nll, summarize

    if "nll" not in registry.capabilities(model.family):
        raise ImagegenError(f"the {model.family} family has no likelihood; 'nll' works for families that "
                            f"offer it ({', '.join(f for f in registry.FAMILIES if _has_nll(f))})")
    # the first min(n, split size) images of the split (as 'imagegen eval-nll' does); --n-ref wins over --n
    images, labels, info, desc = load_reference(dataset, opts.ref, None, opts.data_root, model.info.size,
                                                model.info.channels, opts.ref_seed, base_cfg)
    n = min(opts.n_ref or opts.n, images.shape[0])
    if n < images.shape[0]:
        desc = dict(desc, ref_subset=f"first {n} of {images.shape[0]}")
        images, labels = images[:n], None if labels is None else labels[:n]
    res = summarize(images_nll(model, images, labels, opts.batch_size, progress=opts.progress), model.info.num_dims)
    res["nll_nats"], res["nll_nats_sem"] = res["nats"], res["nats_sem"]
    device = pick_device(opts.device)
    proto = dict({"dataset": dataset, "ref_split": opts.ref, "n_ref": res["n"], **desc,
                  "num_dims": model.info.num_dims, "bits": model.info.bits,
                  "nll_kind": getattr(getattr(model, "fam", None), "NLL_KIND", "as the family documents"),
                  "conditioning": conditioning(model, False),
                  "unit": "nats per image; bits/dim = nats / (D ln 2)"}, **run_proto, **software_protocol(device))
    for key, sem_key in (("nll_nats", "nll_nats_sem"), ("bits_per_dim", "bits_per_dim_sem")):
        result["metrics"][key] = {"value": res[key], "sem": res[sem_key], "protocol": proto}
        result["summary"][key] = res[key]
        result["summary"][f"{key}_sem"] = res[sem_key]
    if not result["protocol"]:
        result["protocol"] = proto


def _has_nll(name: str) -> bool:
    from . import registry

    try:
        return "nll" in registry.capabilities(name)
    except Exception:  # a family that fails to import is not worth a crash here
        return False


# ---------------------------------------------------------------------------------------------- compare

# the summary keys a comparison table shows, in this order (each only when some run has it)
COMPARE_COLUMNS = tuple(f"{k}{sfx}" for sfx in ("", "_clf") for k in ("fid", "kid", "precision", "recall", "density",
                                                                   "coverage")) + (
    "classifier_score", "class_accuracy", "cas", "aug_gain", "nll_nats", "bits_per_dim")


def _applicable(model, metrics: list[str]) -> tuple[list[str], dict[str, str]]:
    """The requested metrics a run can be scored on, and why each of the others is left out."""
    cond = model.class_conditional
    skipped = {}
    for m in metrics:
        if m in ("cacc", "cas") and not cond:
            skipped[m] = "not class-conditional"
        elif m == "nll" and not _has_nll(model.family):
            skipped[m] = f"the {model.family} family has no likelihood"
    return [m for m in metrics if m not in skipped], skipped


def _takes(fam, key: str, value) -> bool:
    """Whether a family's ``sample`` takes option ``key`` with this value (``SAMPLE_CHOICES`` lists the values
    of options that are a choice: --sampler dpmpp-2m goes to diffusion, not to PixelCNN's naive/cached)."""
    if key not in inspect.signature(fam.sample).parameters:
        return False
    choices = getattr(fam, "SAMPLE_CHOICES", {}).get(key)
    return choices is None or value in choices


def compare_runs(paths: list, opts: EvalOptions | None = None, sample_options: dict | None = None,
                 out: str | Path | None = None, **options) -> dict:
    """Score several runs of one dataset with one protocol (same metrics, N, reference split and feature
    networks; the reference features are computed once and cached) and put them side by side with what
    each cost: training time and images, parameters, sampling speed.

    A metric a run cannot have (``nll`` for a GAN, ``cacc``/``cas`` for an unconditional model, ``nll`` for
    an EDM diffusion model) is left out of its row with the reason, not an error. ``sample_options`` go to
    the families whose ``sample`` takes them with that value (``steps`` to diffusion; ``sampler=dpmpp-2m`` to
    diffusion but not to PixelCNN, whose samplers are naive/cached) and are recorded per row."""
    from dataclasses import replace

    from . import load

    git_commit()  # fixed now, before the long part (see git_commit)

    opts = eval_options(opts, options)
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not paths:
        raise ImagegenError("give at least one run directory to compare")
    check_counts(opts, 1)
    metrics = parse_list(opts.metrics, METRICS, "metric")
    if not metrics:
        raise ImagegenError(f"no metrics requested; pass --metrics with some of: {', '.join(METRICS)}")
    features = parse_list(opts.features, FEATURES, "feature network") or ["inception"]
    models = [load(p, device=opts.device) for p in paths]
    data = [(m.config.data.name, m.info.channels, m.info.size) for m in models]
    for p, d in zip(paths[1:], data[1:]):
        if d != data[0]:
            raise ImagegenError(f"{paths[0]} was trained on {data[0][0]} ({data[0][1]}x{data[0][2]}x{data[0][2]}) "
                                f"but {p} on {d[0]} ({d[1]}x{d[2]}x{d[2]}); compare runs of one dataset and size")
    sample_options = dict(sample_options or {})
    unused = [k for k, v in sample_options.items() if not any(_takes(m.fam, k, v) for m in models)]
    if unused:
        k = unused[0]
        raise ImagegenError(f"--{k} {sample_options[k]} is taken by none of these runs' families "
                            f"({', '.join(sorted({m.family for m in models}))}); drop it or change it")
    rows, results = [], []
    for path, model in zip(paths, models):
        run_metrics, skipped = _applicable(model, metrics)
        run_options = {k: v for k, v in sample_options.items() if _takes(model.fam, k, v)}
        row = {"run": str(path), "family": model.family, "step": model.step,
               "kimg": round(model.meta.get("images_seen", 0) / 1000, 1),
               "train_s": round(float(model.meta.get("elapsed_s", 0.0)), 1),
               "params_m": round(sum(p.numel() for p in model.module.parameters()) / 1e6, 3),
               "sample_options": _sample_options_protocol(model, run_options), "skipped": dict(skipped)}
        result = {"summary": {}, "metrics": {}, "protocol": {}}
        generative = [m for m in run_metrics if m != "nll"]
        if generative:
            result = _evaluate_model(model, path, replace(opts, metrics=generative, features=list(features)),
                                     run_options)
        if "nll" in run_metrics:
            try:
                nll = _evaluate_model(model, path, replace(opts, metrics=["nll"], features=list(features)), {})
            except ImagegenError as e:  # e.g. an EDM diffusion model has no bound: say why, keep the rest
                row["skipped"]["nll"] = str(e)
            else:
                result["summary"].update(nll["summary"])
                result["metrics"].update(nll["metrics"])
                result["protocol"] = result["protocol"] or nll["protocol"]
        seconds = result["protocol"].get("generation_seconds")
        if seconds:  # sampling plus quantising to uint8, at --batch-size
            row["sample_img_per_s"] = round(opts.n / seconds, 1)
        row.update({k: result["summary"][k] for k in COMPARE_COLUMNS if k in result["summary"]})
        rows.append(row)
        results.append(result)
    times = [r["train_s"] for r in rows if r["train_s"] > 0]
    warning = None
    if len(times) > 1 and max(times) > 1.2 * min(times):
        warning = (f"training times differ ({min(times):.0f} s to {max(times):.0f} s); for an equal-compute "
                   "comparison train every run with the same --budget on the same machine")
    comparison = {"rows": rows, "warning": warning, "metrics": metrics, "n": opts.n, "ref": opts.ref,
                  "features": features, "dataset": data[0][0], "results": results}
    if out is not None:
        write_result(comparison, out)
    return comparison


def format_comparison(comparison: dict) -> str:
    """The comparison as a Markdown table (one row per run; '-' where a run has no such number)."""
    cols = [c for c in COMPARE_COLUMNS if any(c in r for r in comparison["rows"])]
    head = ["run", "family", "step", "kimg", "train s", "params (M)", "sample img/s", *cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in comparison["rows"]:
        cells = [r["run"], r["family"], str(r["step"]), f"{r['kimg']:g}", f"{r['train_s']:.0f}", f"{r['params_m']:g}",
                 f"{r['sample_img_per_s']:g}" if "sample_img_per_s" in r else "-"]
        cells += [f"{r[c]:.4g}" if c in r else "-" for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"{r['run']}: {m} left out ({why})" for r in comparison["rows"] for m, why in r["skipped"].items()]
    if comparison.get("warning"):
        notes.append(f"warning: {comparison['warning']}")
    return "\n".join(lines + notes)


# ---------------------------------------------------------------------------------------------- folders


def _folder_labels(class_names: tuple[str, ...], dataset_classes: tuple[str, ...]) -> list[int] | None:
    """Map a folder's class sub-folder names to the dataset's class indices ('3' or 'Trouser' style)."""
    mapping = []
    lower = [c.lower() for c in dataset_classes]
    for name in class_names:
        if name.isdigit() and int(name) < max(1, len(dataset_classes)):
            mapping.append(int(name))
        elif name.lower() in lower:
            mapping.append(lower.index(name.lower()))
        else:
            return None
    return mapping


def evaluate_folder(folder: str | Path, dataset: str, opts: EvalOptions | None = None,
                    out: str | Path | None = None, **options) -> dict:
    """Evaluate any folder of generated images (class sub-folders give labels for cacc/cas), or a NumPy
    ``.npz``/``.npy`` file of uint8 images (``imagegen.data.load_image_array``; labels, if stored, are
    the dataset's class indices). ``options``: EvalOptions fields, as for ``evaluate_run``."""
    from .data import ARRAY_EXTENSIONS, load_folder, load_image_array

    git_commit()  # fixed now, before the long part (see git_commit)

    opts = eval_options(opts, options)
    check_counts(opts, 0)  # 0: every image
    metrics = parse_list(opts.metrics, METRICS, "metric")
    if "nll" in metrics:
        raise ImagegenError("nll needs a model, not a folder of images; use 'imagegen eval RUN --metrics nll'")
    if not metrics:
        raise ImagegenError(f"no metrics requested; pass --metrics with some of: {', '.join(METRICS)}")
    opts.metrics = metrics
    opts.features = parse_list(opts.features, FEATURES, "feature network") or ["inception"]
    folder = Path(folder).expanduser()
    is_array = folder.suffix.lower() in ARRAY_EXTENSIONS
    if is_array:
        images, labels = load_image_array(folder)
    else:
        ds = load_folder(folder, "__no_split__", None, None)
        images, labels = ds.images, ds.labels
    if opts.n and opts.n < images.shape[0]:
        images = images[: opts.n]
        labels = None if labels is None else labels[: opts.n]
    if labels is not None:
        _, _, ref_info, _ = load_reference(dataset, opts.ref, 1, opts.data_root, None, None)
        if is_array and not ref_info.num_classes:  # an unlabelled reference: nothing to compare labels with
            labels = None
        elif is_array:  # stored labels are the dataset's class indices
            if not 0 <= int(labels.min()) <= int(labels.max()) < ref_info.num_classes:
                raise ImagegenError(f"the labels in {folder} run from {int(labels.min())} to {int(labels.max())} "
                                    f"but {dataset} has {ref_info.num_classes} classes")
        else:
            mapping = _folder_labels(ds.info.class_names, ref_info.class_names)
            if mapping is None:
                if any(m in metrics for m in ("cacc", "cas")):
                    raise ImagegenError(f"the sub-folders of {folder} ({', '.join(ds.info.class_names[:5])}...) "
                                        f"are not {dataset} classes; name them 0..9 or after the classes")
                labels = None
            else:
                labels = torch.tensor(mapping)[labels]
    source, how = ("array", "stored with the images") if is_array else ("folder", "from class sub-folders")
    proto = {"generated_from": f"{source} {folder.resolve()}", "folder_images": int(images.shape[0]),
             "labels": how if labels is not None else None}
    result = evaluate_images(images, labels, dataset, opts, proto)
    if out is not None:
        write_result(result, out)
    return result


# ---------------------------------------------------------------------------------------------- commands


def reference_stats(dataset: str, split: str = "train", n: int | None = None, features: str | list[str] = "inception",
                    opts: EvalOptions | None = None, image_size: int | None = None, channels: int | None = None,
                    **options) -> list[dict]:
    """Compute and cache the reference features/statistics of a split (what ``ref-stats`` runs)."""
    from .api import pick_device

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


def write_result(result: dict, out: str | Path) -> Path:
    from .checkpoint import atomic_write_bytes

    out = Path(out)
    atomic_write_bytes((json.dumps(result, indent=2, default=_json_default) + "\n").encode(), out)
    return out


def _json_default(o):
    if isinstance(o, (torch.Tensor,)):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def format_summary(result: dict) -> str:
    """A small aligned table of the summary numbers for the terminal."""
    rows = [(k, v) for k, v in result["summary"].items()]
    if not rows:
        return "(no metrics)"
    width = max(len(k) for k, _ in rows)
    lines = []
    for k, v in rows:
        text = f"{v:.6g}" if isinstance(v, float) else str(v)
        lines.append(f"{k:<{width}}  {text}")
    return "\n".join(lines)


__all__ = ["FEATURES", "METRICS", "EvalOptions", "compare_runs", "evaluate_folder", "evaluate_images", "evaluate_run",
           "format_comparison", "format_summary", "generate_uint8", "reference_stats", "write_result"]
