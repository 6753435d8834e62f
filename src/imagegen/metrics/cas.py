"""Classification Accuracy Score and augmentation gain: how useful are a conditional model's samples as
training data?

* CAS (Ravuri & Vinyals, "Classification Accuracy Score for Conditional Generative Models", NeurIPS 2019):
  train a classifier only on generated (image, requested label) pairs, test it on the real test set. The
  reference point is the same classifier trained on as many real training images.
* Augmentation gain: a small real subset (default 1,000 images) alone versus the same subset plus the
  generated set, each trained for the same number of steps and tested on the real test set.

The classifier is the dataset SmallCNN (``metrics.classifier``), trained from scratch each time with a
fixed seed, so differences come from the training data only.
"""

from __future__ import annotations

import torch

from .classifier import ClassifierTrainConfig, accuracy, fit


def _balanced_subset(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Indices of ``n`` images with the classes as equal as the data allows (seeded)."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(labels.shape[0], generator=g)
    classes = labels.unique()
    per = max(1, n // len(classes))
    picked = torch.cat([perm[labels[perm] == c][:per] for c in classes])
    if picked.shape[0] < n:  # top up from the rest when n is not a multiple of the class count
        rest = perm[~torch.isin(perm, picked)]
        picked = torch.cat([picked, rest[: n - picked.shape[0]]])
    return picked[:n]


def classification_accuracy_score(gen_u8: torch.Tensor, gen_labels: torch.Tensor, real_train_u8: torch.Tensor,
                                  real_train_labels: torch.Tensor, test_u8: torch.Tensor,
                                  test_labels: torch.Tensor, num_classes: int,
                                  cfg: ClassifierTrainConfig | None = None, device=None, seed: int = 0,
                                  progress: bool = True) -> dict:
    """CAS on generated data and the same-size real-data baseline (both tested on ``test_*``)."""
    cfg = cfg or ClassifierTrainConfig(epochs=3)
    n = gen_u8.shape[0]
    model = fit(gen_u8, gen_labels, num_classes, cfg, device, progress, desc="CAS: train on generated")
    cas = accuracy(model, test_u8, test_labels)
    idx = _balanced_subset(real_train_labels, min(n, real_train_u8.shape[0]), seed)
    model = fit(real_train_u8[idx], real_train_labels[idx], num_classes, cfg, device, progress,
                desc="CAS: train on real")
    real = accuracy(model, test_u8, test_labels)
    return {"cas": cas, "cas_real_baseline": real, "cas_ratio": cas / real if real > 0 else float("nan"),
            "cas_train_images": n, "cas_epochs": cfg.epochs}


def augmentation_gain(gen_u8: torch.Tensor, gen_labels: torch.Tensor, real_train_u8: torch.Tensor,
                      real_train_labels: torch.Tensor, test_u8: torch.Tensor, test_labels: torch.Tensor,
                      num_classes: int, n_real: int = 1000, cfg: ClassifierTrainConfig | None = None,
                      device=None, seed: int = 0, progress: bool = True) -> dict:
    """Test accuracy of real subset + generated minus that of the real subset alone, at equal steps."""
    cfg = cfg or ClassifierTrainConfig(epochs=3)
    idx = _balanced_subset(real_train_labels, min(n_real, real_train_u8.shape[0]), seed)
    real_x, real_y = real_train_u8[idx], real_train_labels[idx]
    mixed_x = torch.cat([real_x, gen_u8.to(real_x.device)])
    mixed_y = torch.cat([real_y, gen_labels.to(real_y.device)])
    steps = max(1, mixed_x.shape[0] // cfg.batch_size) * cfg.epochs  # the same compute for both
    model = fit(real_x, real_y, num_classes, cfg, device, progress, desc="augmentation: real only", steps=steps)
    real_only = accuracy(model, test_u8, test_labels)
    model = fit(mixed_x, mixed_y, num_classes, cfg, device, progress, desc="augmentation: real + generated",
                steps=steps)
    mixed = accuracy(model, test_u8, test_labels)
    return {"aug_real_only": real_only, "aug_real_plus_generated": mixed, "aug_gain": mixed - real_only,
            "aug_real_images": int(real_x.shape[0]), "aug_generated_images": int(gen_u8.shape[0]),
            "aug_steps": steps}


__all__ = ["augmentation_gain", "classification_accuracy_score"]
