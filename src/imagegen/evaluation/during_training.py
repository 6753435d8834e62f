"""Evaluation while training (``train.eval_every``): what it may ask for, checked before the first step, and
the evaluation itself, of the EMA network at a step."""

from __future__ import annotations

from .. import registry
from ..errors import ImagegenError
from ..metrics.classifier import CLASSIFIER_DATASETS
from ..metrics.fid import resolve_inception_weights
from ..model import LoadedModel
from .metrics_table import CLASSIFIER_METRICS, FEATURE_METRICS, LABEL_METRICS, METRICS, result_keys
from .options import EvalOptions, parse_list
from .runs import evaluate_model


def training_eval_options(cfg, info) -> EvalOptions | None:
    """The evaluations ``train.eval_every`` asks for, checked before the first training step: one that cannot
    run (an unknown metric, nll for a family without a likelihood, classifier metrics without a classifier for
    the data, cacc/cas without labels, Inception weights missing offline) fails now, not after the first hour
    of training. None when they are off."""
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
    if any(m in LABEL_METRICS for m in metrics) and not cfg.class_conditional(info.num_classes):
        raise ImagegenError(f"train.eval_metrics: {' and '.join(LABEL_METRICS)} need a class-conditional model "
                            "(model.class_cond=true)")
    if any(m in CLASSIFIER_METRICS for m in metrics):
        if cfg.data.name not in CLASSIFIER_DATASETS:
            raise ImagegenError(f"train.eval_metrics={t.eval_metrics!r} needs the dataset classifier, and there is "
                                f"none for '{cfg.data.name}' (only {', '.join(CLASSIFIER_DATASETS)}); use "
                                f"--set train.eval_metrics=fid,kid (Inception) instead")
    if any(m in FEATURE_METRICS for m in metrics):
        resolve_inception_weights(None)  # IMAGEGEN_INCEPTION, the cache, or the download: now, not later
    if t.keep_best and t.keep_best not in training_result_keys(metrics):
        raise ImagegenError(f"train.keep_best={t.keep_best!r} is not among what train.eval_metrics="
                            f"{t.eval_metrics!r} gives: {', '.join(training_result_keys(metrics))}")
    return EvalOptions(metrics=metrics, n=t.eval_n, ref="test", data_root=cfg.data.root, progress=False,
                       batch_size=min(t.eval_n, 250))


def training_result_keys(metrics: list[str]) -> list[str]:
    """The summary keys an in-training evaluation with these metrics yields (Inception features, plus the
    classifier's when cfd is asked for)."""
    return result_keys(metrics)


def evaluate_during_training(net, cfg, info, step: int, opts: EvalOptions, device, run_dir,
                             first_stage=None) -> dict:
    """``imagegen eval`` of ``net`` (the EMA copy, in eval mode) at this step: the same code, metrics and
    reference (the test split; balanced labels for class-conditional models), sampled from a fixed seed with
    the family's preview options (diffusion: DPM-Solver++(2M), 10 steps), so one run's numbers are comparable
    across its steps."""
    model = LoadedModel(cfg.family, cfg, info, net, {"step": step}, None, device, first_stage=first_stage)
    opts.device = str(device)
    return evaluate_model(model, run_dir, opts, dict(getattr(model.fam, "PREVIEW_OPTIONS", {})))
