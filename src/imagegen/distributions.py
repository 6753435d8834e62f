"""Output distributions shared by the likelihood families (VAE decoder, PixelCNN)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def discretized_logistic_log_prob(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor,
                                  ) -> torch.Tensor:
    """log P(x) for x on the 256-level grid of [-1, 1] under a logistic discretised to bins of width 2/255,
    the edge bins taking the tails (PixelCNN++ sec. 2.1). The interior uses the exact identity
    log(sigmoid(a) - sigmoid(b)) = logsigmoid(a) - softplus(b) + log(1 - exp(b - a)), a > b, which is stable
    in both tails, so no approximation of tiny bins is needed."""
    inv_s = torch.exp(-log_scale)
    centered = x - mean
    plus = inv_s * (centered + 1.0 / 255.0)
    minus = inv_s * (centered - 1.0 / 255.0)
    log_cdf_plus = F.logsigmoid(plus)  # bin 0: P(X < -1 + 1/255)
    log_sf_minus = -F.softplus(minus)  # bin 255: P(X > 1 - 1/255)
    log_mid = log_cdf_plus - F.softplus(minus) + torch.log(-torch.expm1(minus - plus))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_sf_minus, log_mid))
