"""The one table of metrics: every fact about a metric is a field of its row here, and every list of metric
names elsewhere derives from the table. A new metric is one row here plus one function in ``scoring.py``
registered with ``@scorer("name")``. (``cfd`` has no function of its own: it is ``fid`` in the classifier's
feature space.)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    name: str  # what --metrics takes
    help: str  # one line for --help
    keys: tuple[str, ...]  # the summary keys it gives (with Inception features; classifier features add _clf)
    features: bool = False  # computed in each --features network's space (fid, kid, pr, dc)
    needs_labels: bool = False  # the requested labels: a class-conditional model or a labelled folder
    needs_classifier: bool = False  # the dataset classifier (MNIST-like data only)
    needs_likelihood: bool = False  # a model with a likelihood (the family's nll), not generated images
    lower_is_better: bool = False  # for every key it gives (keep_best, the report's "best" marks)

    @property
    def generative(self) -> bool:
        """Scored on generated images (everything but the likelihood)."""
        return not self.needs_likelihood


TABLE: tuple[Metric, ...] = (
    Metric("fid", "Frechet distance in --features space (Inception by default)", ("fid",), features=True,
           lower_is_better=True),
    Metric("kid", "kernel (MMD^2) distance, unbiased, cubic kernel; mean and std over subsets", ("kid",),
           features=True, lower_is_better=True),
    Metric("pr", "precision and recall, k=3 (Kynkaanniemi et al. 2019)", ("precision", "recall"), features=True),
    Metric("dc", "density and coverage, k=5 (Naeem et al. 2020)", ("density", "coverage"), features=True),
    Metric("cfd", "Frechet distance in the dataset classifier's features (MNIST / Fashion-MNIST)", ("fid_clf",),
           needs_classifier=True, lower_is_better=True),
    Metric("cscore", "classifier score: the Inception Score formula with the dataset classifier",
           ("classifier_score",), needs_classifier=True),
    Metric("cacc", "class-conditional models: how often the classifier sees the requested class",
           ("class_accuracy",), needs_labels=True, needs_classifier=True),
    Metric("cas", "Classification Accuracy Score + augmentation gain (class-conditional models)",
           ("cas", "aug_gain"), needs_labels=True, needs_classifier=True),
    Metric("nll", "negative log-likelihood of the reference split, nats/image and bits/dim",
           ("nll_nats", "bits_per_dim"), needs_likelihood=True, lower_is_better=True),
)
BY_NAME = {m.name: m for m in TABLE}
CLASSIFIER_SUFFIX = "_clf"  # the summary keys of a features metric computed with the dataset classifier

# every list of names the evaluator, the CLI, the trainer and the report use, derived from TABLE
METRICS = tuple(m.name for m in TABLE)
METRIC_HELP = {m.name: m.help for m in TABLE}
GENERATIVE = frozenset(m.name for m in TABLE if m.generative)
FEATURE_METRICS = tuple(m.name for m in TABLE if m.features)  # fid, kid, pr, dc
LABEL_METRICS = tuple(m.name for m in TABLE if m.needs_labels)  # cacc, cas
CLASSIFIER_METRICS = tuple(m.name for m in TABLE if m.needs_classifier)  # cfd, cscore, cacc, cas
CLASSIFIER_KEYS = tuple(k for m in TABLE if m.needs_classifier for k in m.keys)  # summary keys
LIKELIHOOD_METRICS = tuple(m.name for m in TABLE if m.needs_likelihood)  # nll
_FEATURE_KEYS = tuple(k for m in TABLE if m.features for k in m.keys)
LOWER_IS_BETTER = tuple(dict.fromkeys(
    [k + sfx for sfx in ("", CLASSIFIER_SUFFIX) for m in TABLE if m.features and m.lower_is_better for k in m.keys]
    + [k for m in TABLE if m.lower_is_better and not m.features for k in m.keys]))
# the summary keys a comparison table shows, in this order (each only when some run has it)
COMPARE_COLUMNS = tuple(dict.fromkeys(
    [k + sfx for sfx in ("", CLASSIFIER_SUFFIX) for k in _FEATURE_KEYS]
    + [k for m in TABLE if not m.features for k in m.keys]))


def result_keys(metrics: list[str]) -> list[str]:
    """The summary keys an evaluation with these metrics yields: each metric's keys, plus the classifier-space
    versions of the other features metrics when cfd brings the classifier's features in (kid gives kid_clf)."""
    out = [k for m in metrics if m in BY_NAME for k in BY_NAME[m].keys]
    if "cfd" in metrics:
        out += [k + CLASSIFIER_SUFFIX for m in metrics if m in FEATURE_METRICS and m != "fid"
                for k in BY_NAME[m].keys]
    return list(dict.fromkeys(out))
