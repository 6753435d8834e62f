"""Precision/recall (Kynkaanniemi et al. 2019) and density/coverage (Naeem et al. 2020) in feature space.

Both estimate each set's manifold as a union of balls around its samples, the radius of each ball being
the distance to the sample's k-th nearest neighbour in its own set (itself excluded).

* precision: fraction of generated samples inside the real manifold; recall: fraction of real samples
  inside the generated manifold (Kynkaanniemi et al., "Improved Precision and Recall Metric for Assessing
  Generative Models", NeurIPS 2019, eqs. 1-3; k = 3).
* density: (1 / kM) sum_j sum_i 1[Y_j in B(X_i, NND_k(X_i))], how many real balls hold each generated
  sample, ~1 when the distributions match; coverage: (1 / N) sum_i 1[exists j: Y_j in B(X_i, NND_k(X_i))],
  the fraction of real balls that hold any generated sample (Naeem et al., "Reliable Fidelity and Diversity
  Metrics for Generative Models", ICML 2020, eqs. 3-4; k = 5).

"Inside" is ``distance <= radius`` (Kynkaanniemi's and torch-fidelity's convention), so a set compared with
itself has precision = recall = coverage = 1. Distances are computed in float32 blocks on the features'
device and never held as a full N x M matrix.
"""

from __future__ import annotations

import torch

PR_K = 3
DC_K = 5


def _as_tensor(f, device=None) -> torch.Tensor:
    t = torch.as_tensor(f, dtype=torch.float32)
    return t.to(device) if device is not None else t


def knn_radii(x: torch.Tensor, k: int, block: int = 2048) -> torch.Tensor:
    """(N, D) -> (N,) distance of each sample to its k-th nearest neighbour in x, itself excluded."""
    if x.shape[0] <= k:
        from ..errors import ImagegenError

        raise ImagegenError(f"k-nearest-neighbour radii need more than k={k} samples, got {x.shape[0]}")
    out = []
    for start in range(0, x.shape[0], block):
        d = torch.cdist(x[start:start + block], x)  # (b, N); the zero self-distance is the 1st value
        out.append(d.kthvalue(k + 1, dim=1).values)
    return torch.cat(out)


def _ball_counts(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, block: int = 2048
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """For each point, how many balls B(centre_i, radius_i) hold it; for each centre, whether its ball holds
    any point. Returns ((P,) long, (C,) bool)."""
    counts = []
    hit = torch.zeros(centres.shape[0], dtype=torch.bool, device=centres.device)
    for start in range(0, points.shape[0], block):
        inside = torch.cdist(points[start:start + block], centres) <= radii[None, :]  # (b, C)
        counts.append(inside.sum(1))
        hit |= inside.any(0)
    return torch.cat(counts), hit


def precision_recall(real, fake, k: int = PR_K) -> tuple[float, float]:
    """Kynkaanniemi et al. 2019 improved precision and recall of ``fake`` against ``real`` features."""
    real, fake = _as_tensor(real), _as_tensor(fake)
    fake = fake.to(real.device)
    counts, _ = _ball_counts(fake, real, knn_radii(real, k))
    precision = (counts > 0).float().mean().item()
    counts, _ = _ball_counts(real, fake, knn_radii(fake, k))
    recall = (counts > 0).float().mean().item()
    return precision, recall


def density_coverage(real, fake, k: int = DC_K) -> tuple[float, float]:
    """Naeem et al. 2020 density and coverage of ``fake`` against ``real`` features."""
    real, fake = _as_tensor(real), _as_tensor(fake)
    fake = fake.to(real.device)
    counts, hit = _ball_counts(fake, real, knn_radii(real, k))
    density = counts.double().sum().item() / (k * fake.shape[0])
    coverage = hit.float().mean().item()
    return density, coverage


__all__ = ["DC_K", "PR_K", "density_coverage", "knn_radii", "precision_recall"]
