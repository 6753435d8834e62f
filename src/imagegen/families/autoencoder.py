"""A first-stage autoencoder for latent models: a small spatial latent, optionally finite-scalar quantised.

The encoder maps an image (B, C, H, W) to a latent (B, latent_channels, H/f, W/f), f = 2^(levels - 1) of
``channel_mult`` (28x28 MNIST with [1, 2, 2] -> 7x7), bounded to (-1, 1) by tanh. With ``levels`` > 0 each
latent value is rounded to one of ``levels`` evenly spaced values in [-1, 1] with a straight-through
gradient: finite scalar quantisation (FSQ, Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made
Simple"). FSQ is a vector quantiser with an implicit product codebook (levels^latent_channels codes per
cell) that needs no codebook loss, commitment loss or dead-code restarts, so it trains in the minutes a CPU
user waits for.

Why this and not the VAE family as the first stage: the VAE's latent is one flat Gaussian vector trained to
be *sampled*; a first stage wants a spatial latent, near-lossless reconstructions and values the second
stage can model as if they were pixels. Bounded, quantised latents are exactly that: stored as uint8
"images" (256 levels; with ``levels`` = 16 every code is an exact uint8 value because 15 divides 255), so a
diffusion model, a PixelCNN (its 256-way softmax over the codes is the VQ-VAE prior of van den Oord et
al. 2017), a GAN or a VAE trains on them through the ordinary data path and never knows it is in a latent
space except through encode/decode (``imagegen.latent``).

An autoencoder is not a generative model on its own: ``sample`` is a one-line error that says how to train
a model on its codes. The trainer's preview grids show originals beside reconstructions (``preview``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ImagegenError
from ..nn import group_norm
from .base import optimizer_step

NAME = "autoencoder"
GENERATIVE = False  # no sampler of its own: the first stage of latent models (imagegen.latent)
LOSSES = ("l1", "mse")


@dataclass
class Config:
    base_channels: int = 32
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 2])  # one level per entry; f = 2^(len - 1)
    res_blocks: int = 1  # residual blocks per level
    latent_channels: int = 4
    levels: int = 16  # FSQ levels per latent value (0: continuous, kept to 8 bits when stored)
    loss: str = "l1"  # l1 | mse: the reconstruction loss (L1 keeps strokes sharper at the same PSNR)

    RANGES: ClassVar[dict[str, str]] = {"base_channels": "[1,inf)", "channel_mult": "[1,inf)",
                                        "res_blocks": "[0,inf)", "latent_channels": "[1,inf)",
                                        "levels": "[0,256]"}
    LENGTHS: ClassVar[dict[str, tuple[int, int | None]]] = {"channel_mult": (1, None)}  # (fewest, most) values


TRAIN_DEFAULTS = {"lr": 2e-3, "batch_size": 128, "ema_decay": 0.99}
TEST_CONFIG = {"base_channels": 8, "channel_mult": [1, 2], "latent_channels": 2, "levels": 16}


class _Res(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.net = nn.Sequential(group_norm(ch, 8), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1),
                                 group_norm(ch, 8), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1))

    def forward(self, x):
        return x + self.net(x)


def fsq(z: torch.Tensor, levels: int) -> torch.Tensor:
    """Round values in [-1, 1] to ``levels`` evenly spaced values (straight-through gradient); 0: identity."""
    if levels <= 0:
        return z
    q = torch.round((z.clamp(-1, 1) + 1) * ((levels - 1) / 2)) * (2 / (levels - 1)) - 1
    return z + (q - z).detach()


class Autoencoder(nn.Module):
    def __init__(self, cfg: Config, info):
        super().__init__()
        if cfg.loss not in LOSSES:
            raise ImagegenError(f"model.loss must be one of {', '.join(LOSSES)}, got '{cfg.loss}'")
        if cfg.levels == 1:
            raise ImagegenError("model.levels=1 keeps no information; use 0 (continuous) or 2..256")
        self.cfg, self.info = cfg, info
        self.factor = 2 ** (len(cfg.channel_mult) - 1)
        if info.size % self.factor:
            raise ImagegenError(f"model.channel_mult {cfg.channel_mult} downsamples by {self.factor}, which does not "
                                f"divide the image size {info.size}; use fewer levels or --image-size "
                                f"{max(self.factor, info.size // self.factor * self.factor)}")
        chans = [cfg.base_channels * m for m in cfg.channel_mult]
        enc: list[nn.Module] = [nn.Conv2d(info.channels, chans[0], 3, padding=1)]
        for i, ch in enumerate(chans):
            enc += [_Res(ch) for _ in range(cfg.res_blocks)]
            if i + 1 < len(chans):
                enc.append(nn.Conv2d(ch, chans[i + 1], 4, stride=2, padding=1))
        enc += [group_norm(chans[-1], 8), nn.SiLU(), nn.Conv2d(chans[-1], cfg.latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(cfg.latent_channels, chans[-1], 3, padding=1)]
        for i in reversed(range(len(chans))):
            dec += [_Res(chans[i]) for _ in range(cfg.res_blocks)]
            if i > 0:
                dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(chans[i], chans[i - 1], 3, padding=1)]
        dec += [group_norm(chans[0], 8), nn.SiLU(), nn.Conv2d(chans[0], info.channels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        s = self.info.size // self.factor
        return (self.cfg.latent_channels, s, s)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [-1, 1] -> (B, latent_channels, H/f, W/f) on the quantisation grid in [-1, 1]."""
        return fsq(torch.tanh(self.encoder(x)), self.cfg.levels)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents in [-1, 1] (anything a second stage made: snapped to the grid first) -> images in [-1, 1]."""
        return self.decoder(fsq(z.clamp(-1, 1), self.cfg.levels)).clamp(-1, 1)

    def forward(self, x: torch.Tensor) -> dict:
        x_hat = self.decoder(self.encode(x))
        err = x_hat - x
        loss = err.abs().mean() if self.cfg.loss == "l1" else err.pow(2).mean()
        mse = err.detach().float().pow(2).mean()
        psnr = 10 * torch.log10(4.0 / mse.clamp_min(1e-10))  # peak-to-peak 2 in [-1, 1]
        return {"loss": loss, "mse": mse, "psnr_db": psnr}


# --- the contract ----------------------------------------------------------------------------------------


def build(cfg: Config, data_info) -> nn.Module:
    return Autoencoder(cfg, data_info)


def train_step(model, batch, opts, step: int, accel, grad_clip: float = 0.0) -> dict:
    out = model(batch.x)
    accel.backward(out["loss"])
    optimizer_step(accel, opts["main"], model.parameters(), grad_clip)
    return out


def sample(model, n: int, labels=None, generator=None):
    raise ImagegenError("an autoencoder is a first stage and draws no samples of its own; train a model on its "
                        "codes, e.g. 'imagegen train diffusion --latent RUN' (see docs/latent.md)")


def reconstruct(model: Autoencoder, x: torch.Tensor, labels=None) -> torch.Tensor:
    return model.decode(model.encode(x))


def preview(model: Autoencoder, x: torch.Tensor) -> torch.Tensor:
    """The trainer's periodic grid: each original followed by its reconstruction (pairs side by side in a
    grid of even width, e.g. 64 images -> 8 columns)."""
    x = x[: max(1, x.shape[0] // 2)]
    rec = reconstruct(model, x)
    return torch.stack([x, rec], 1).flatten(0, 1)  # (2B, C, H, W): x0, rec0, x1, rec1, ...


def psnr(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images in [-1, 1] (peak-to-peak 2)."""
    mse = F.mse_loss(x_hat.float(), x.float(), reduction="none").flatten(1).mean(1)
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-10))
