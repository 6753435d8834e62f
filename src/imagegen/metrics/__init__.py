"""Evaluation metrics, each standalone and pinned by tests against an independent computation.

* ``fid``: Inception features (clean-fid protocol), float64 statistics, FID, KID, the reference cache.
* ``prdc``: precision/recall (k=3) and density/coverage (k=5) in any feature space.
* ``classifier``: the small MNIST / Fashion-MNIST CNN (feature space, classifier score, class accuracy).
* ``cas``: Classification Accuracy Score and augmentation gain.

``imagegen.evaluation`` puts them together with a recorded protocol; likelihoods come from
``imagegen.likelihood`` (the one NLL implementation, shared with ``imagegen eval-nll``).
"""

from .fid import feature_stats, fid_from_features, frechet_distance, kid
from .prdc import density_coverage, precision_recall

__all__ = ["density_coverage", "feature_stats", "fid_from_features", "frechet_distance", "kid", "precision_recall"]
