"""What an evaluation is asked for: :class:`EvalOptions` and the checks on it, before any work."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from ..config import check_range
from ..errors import ImagegenError
from .metrics_table import FEATURE_METRICS, METRICS

FEATURES = ("inception", "classifier")


@dataclass
class EvalOptions:
    metrics: list[str] = field(default_factory=lambda: list(FEATURE_METRICS))  # fid, kid, pr, dc
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


def parse_metrics(opts: EvalOptions) -> EvalOptions:
    """``opts.metrics`` and ``opts.features`` parsed in place (comma text or lists; one-line errors)."""
    opts.metrics = parse_list(opts.metrics, METRICS, "metric")
    if not opts.metrics:
        raise ImagegenError(f"no metrics requested; pass --metrics with some of: {', '.join(METRICS)}")
    opts.features = parse_list(opts.features, FEATURES, "feature network") or ["inception"]
    return opts
