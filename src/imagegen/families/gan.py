"""GANs: DCGAN and a modern stable recipe, class conditioning, training-health checks, GAN inversion.

One ``nn.Module`` (:class:`GAN`) holds the generator ``G`` and the discriminator ``D``; its forward takes a
``phase`` so the trainer's DDP wrapper sees every gradient-carrying call:

- ``model(x_real, y, phase="d")`` -> the discriminator's loss dict (fakes made without gradients);
- ``model(None, y, phase="g", batch_size=B)`` -> the generator's loss dict (D frozen for this pass).

The family owns two optimisers, ``{"d": Adam(D), "g": Adam(G)}``, with separate learning rates
(``model.lr_g``, ``model.lr_d``: the two time-scale update rule, Heusel et al. 2017) and the betas of
``train.adam_betas``. Losses (``model.loss``): ``minimax`` and ``ns`` (non-saturating; Goodfellow et al.
2014), ``hinge`` (Lim & Ye 2017; Miyato et al. 2018) and ``wgan-gp`` (Gulrajani et al. 2017). Stabilisers:
spectral norm in D, a lazy R1 penalty (Mescheder et al. 2018; Karras et al. 2020), DiffAugment
(Zhao et al. 2020) and the trainer's EMA of the weights, which is what ``sample`` receives.

Applications: the truncation trick (``sample(..., truncation=t)``, Brock et al. 2019), spherical latent
interpolation between two seeds or two inverted images, and completion by GAN inversion (optimise z so
G(z) matches the known pixels).
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .. import rng
from ..errors import ImagegenError
from .base import check_labels, optimizer_step, slerp
from .gan_nets import (
    DCGANDiscriminator,
    DCGANGenerator,
    ResNetDiscriminator,
    ResNetGenerator,
    dcgan_init,
)

NAME = "gan"
# G is unused in the D pass (fakes are made without gradients) and D is frozen in the G pass, so a
# DistributedDataParallel wrapper must be told to expect parameters without gradients.
FIND_UNUSED_PARAMETERS = True

LOSSES = ("ns", "minimax", "hinge", "wgan-gp")
ARCHS = ("dcgan", "resnet")
DIFFAUG_OPS = ("color", "translation", "cutout")
HEALTH_OK, HEALTH_COLLAPSE, HEALTH_DIVERGED = 0.0, 1.0, 2.0

log = logging.getLogger(__name__)


@dataclass
class Config:
    arch: str = "dcgan"  # dcgan | resnet
    z_dim: int = 100  # latent dimensions
    g_channels: int = 64  # generator width (dcgan: channels of the last hidden layer; resnet: every block)
    d_channels: int = 64  # discriminator width (same convention)
    class_cond: bool = True  # conditional BN in G + projection D when the data has labels
    loss: str = "ns"  # ns | minimax | hinge | wgan-gp
    lr_g: float | None = None  # generator learning rate; None: train.lr
    lr_d: float | None = None  # discriminator learning rate; None: train.lr (TTUR: lr_d > lr_g)
    d_steps: int = 1  # discriminator updates per generator update (each reuses the step's real batch)
    spectral_norm: bool = False  # spectral normalisation of every D layer
    gp_weight: float = 10.0  # lambda of WGAN-GP's gradient penalty (loss=wgan-gp only)
    r1_gamma: float = 0.0  # R1 penalty weight gamma (0: off); the penalty is gamma/2 * E|grad D(x_real)|^2
    r1_every: int = 16  # lazy regularisation: apply R1 every N steps, scaled by N
    diffaug: bool = False  # DiffAugment on every D input, real and fake (small data sets)
    diffaug_policy: str = "color,translation,cutout"  # comma list of color, translation, cutout
    health_every: int = 100  # steps between mode-collapse / divergence checks (0: off)
    collapse_ratio: float = 0.15  # warn when sample diversity / data diversity falls below this

    RANGES: ClassVar[dict[str, str]] = {  # checked when a config is read (config.check_range)
        "z_dim": "[1,inf)", "g_channels": "[1,inf)", "d_channels": "[1,inf)", "lr_g": "(0,inf)", "lr_d": "(0,inf)",
        "d_steps": "[1,100]", "gp_weight": "[0,inf)", "r1_gamma": "[0,inf)", "r1_every": "[1,inf)",
        "health_every": "[0,inf)", "collapse_ratio": "[0,inf)"}


TRAIN_DEFAULTS = {
    # DCGAN's optimiser (Radford et al. 2015: Adam, lr 2e-4, beta1 0.5); no gradient clipping, which GAN
    # recipes do not use and which would hide the gradient norms the health log reports
    "lr": 2e-4,
    "adam_betas": [0.5, 0.999],
    "grad_clip": 0.0,
    "ema_decay": 0.999,
}

# model.* overrides for a tiny model that trains a step in well under a second on CPU
TEST_CONFIG = {"z_dim": 8, "g_channels": 8, "d_channels": 8, "health_every": 2}


def _validate(cfg: Config) -> None:
    if cfg.arch not in ARCHS:
        raise ImagegenError(f"model.arch must be one of {', '.join(ARCHS)}, got '{cfg.arch}'")
    if cfg.loss not in LOSSES:
        raise ImagegenError(f"model.loss must be one of {', '.join(LOSSES)}, got '{cfg.loss}'")
    _parse_policy(cfg.diffaug_policy)


def _parse_policy(policy: str) -> list[str]:
    ops = [p.strip() for p in policy.split(",") if p.strip()]
    bad = [p for p in ops if p not in DIFFAUG_OPS]
    if bad:
        raise ImagegenError(f"model.diffaug_policy: unknown operation '{bad[0]}'; use a comma list of "
                            f"{', '.join(DIFFAUG_OPS)}")
    return ops


# ---------------------------------------------------------------------------------------------- DiffAugment


def diff_augment(x: torch.Tensor, policy: str = "color,translation,cutout",
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Differentiable augmentation (Zhao et al. 2020, "DiffAugment"), applied alike to real and fake
    images so D cannot tell them apart by the augmentation and G still gets gradients through it.

    color: brightness +U(-0.5, 0.5), saturation x U(0, 2), contrast x U(0.5, 1.5) (per image);
    translation: shift by up to 1/8 of the size, filling with 0 (mid-grey); cutout: zero a random square
    of half the size. The result is clamped to [-1, 1] so D never sees values real data cannot take.
    (B, C, H, W) -> (B, C, H, W)."""
    ops = _parse_policy(policy)
    B, C, H, W = x.shape
    dev = x.device
    gdev = generator.device if generator is not None else dev

    def rand(*shape):
        return torch.rand(*shape, generator=generator, device=gdev).to(dev, x.dtype)

    def randint(low, high, shape):
        return torch.randint(low, high, shape, generator=generator, device=gdev).to(dev)

    if "color" in ops:
        x = x + (rand(B, 1, 1, 1) - 0.5)
        mean_c = x.mean(dim=1, keepdim=True)
        x = (x - mean_c) * (rand(B, 1, 1, 1) * 2) + mean_c
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * (rand(B, 1, 1, 1) + 0.5) + mean
    if "translation" in ops:
        sh, sw = int(H * 0.125 + 0.5), int(W * 0.125 + 0.5)
        ty = randint(-sh, sh + 1, (B, 1, 1))
        tx = randint(-sw, sw + 1, (B, 1, 1))
        # read pixel (i - ty, j - tx) from a copy padded with one ring of zeros; out-of-range reads land
        # on the ring
        rows = (torch.arange(H, device=dev).view(1, H, 1) - ty + 1).clamp(0, H + 1)  # (B, H, 1)
        cols = (torch.arange(W, device=dev).view(1, 1, W) - tx + 1).clamp(0, W + 1)  # (B, 1, W)
        padded = F.pad(x, (1, 1, 1, 1))  # (B, C, H+2, W+2)
        b = torch.arange(B, device=dev).view(B, 1, 1)
        x = padded.permute(0, 2, 3, 1)[b, rows, cols].permute(0, 3, 1, 2)
    if "cutout" in ops:
        ch, cw = int(H * 0.5 + 0.5), int(W * 0.5 + 0.5)
        cy = randint(0, H + (1 - ch % 2), (B, 1, 1))
        cx = randint(0, W + (1 - cw % 2), (B, 1, 1))
        rows = torch.arange(H, device=dev).view(1, H, 1)
        cols = torch.arange(W, device=dev).view(1, 1, W)
        inside = ((rows - cy) >= -(ch // 2)) & ((rows - cy) < ch - ch // 2) \
            & ((cols - cx) >= -(cw // 2)) & ((cols - cx) < cw - cw // 2)  # (B, H, W): a ch x cw square
        x = x * (~inside).unsqueeze(1).to(x.dtype)
    return x.clamp(-1, 1)


# ---------------------------------------------------------------------------------------------- losses


def d_loss_fn(loss: str, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator loss, mean over the batch. ``*_logits``: (B,) raw scores."""
    if loss in ("ns", "minimax"):
        # -log sigmoid(D(x)) - log(1 - sigmoid(D(G(z)))): binary cross-entropy (Goodfellow et al. 2014, eq. 1)
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    if loss == "hinge":  # Lim & Ye 2017; Miyato et al. 2018, eq. 16
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    if loss == "wgan-gp":  # the critic's negated Wasserstein estimate (Gulrajani et al. 2017, eq. 3)
        return fake_logits.mean() - real_logits.mean()
    raise ImagegenError(f"model.loss must be one of {', '.join(LOSSES)}, got '{loss}'")


def g_loss_fn(loss: str, fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator loss, mean over the batch."""
    if loss == "minimax":  # min E log(1 - D(G(z))) = E[-softplus(logit)]; saturates when D wins
        return (-F.softplus(fake_logits)).mean()
    if loss == "ns":  # non-saturating: max E log D(G(z)) (Goodfellow et al. 2014, section 3)
        return F.softplus(-fake_logits).mean()
    if loss in ("hinge", "wgan-gp"):
        return -fake_logits.mean()
    raise ImagegenError(f"model.loss must be one of {', '.join(LOSSES)}, got '{loss}'")


def gradient_penalty(D: nn.Module, real: torch.Tensor, fake: torch.Tensor, y: torch.Tensor | None = None,
                     eps: torch.Tensor | None = None) -> torch.Tensor:
    """WGAN-GP's penalty E[(|grad_x D(x_hat)|_2 - 1)^2] at x_hat = eps x_real + (1 - eps) x_fake,
    eps ~ U(0, 1) per sample (Gulrajani et al. 2017, eq. 3), without its weight lambda."""
    if eps is None:
        eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x_hat, y).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


def r1_penalty(D: nn.Module, real: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """R1: E|grad_x D(x_real)|^2 (Mescheder et al. 2018, eq. 9), without its weight gamma/2."""
    x = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x, y).sum(), x, create_graph=True)
    return grad.flatten(1).pow(2).sum(1).mean()


# ---------------------------------------------------------------------------------------------- the module


class GAN(nn.Module):
    """Generator + discriminator. ``forward(x, y, phase)`` computes one player's losses."""

    def __init__(self, cfg: Config, channels: int, size: int, num_classes: int):
        super().__init__()
        _validate(cfg)
        self.cfg = cfg
        self.channels, self.size, self.num_classes = channels, size, num_classes
        self.z_dim = cfg.z_dim
        sn = cfg.spectral_norm
        if cfg.arch == "dcgan":
            # BatchNorm in D mixes samples, which a per-sample gradient penalty and a per-layer
            # Lipschitz bound both assume away (Gulrajani et al. 2017, section 4; Miyato et al. 2018)
            bn = not sn and cfg.loss != "wgan-gp"
            self.G = DCGANGenerator(cfg.z_dim, channels, size, cfg.g_channels, num_classes)
            self.D = DCGANDiscriminator(channels, size, cfg.d_channels, num_classes, batchnorm=bn, sn=sn)
            dcgan_init(self.G)
            if not sn:  # re-initialising would leave spectral norm's power-iteration vectors stale
                dcgan_init(self.D)
        else:
            self.G = ResNetGenerator(cfg.z_dim, channels, size, cfg.g_channels, num_classes)
            self.D = ResNetDiscriminator(channels, size, cfg.d_channels, num_classes, sn=sn)
        self.d_has_batchnorm = any(isinstance(m, nn.BatchNorm2d) for m in self.D.modules())
        # a fixed batch of latents for the diversity check: the same z every time, so the number is
        # comparable across steps (not saved: it is a function of the config)
        g = torch.Generator().manual_seed(1234)
        self.register_buffer("z_health", torch.randn(64, cfg.z_dim, generator=g), persistent=False)
        self.health_state = {"flag": HEALTH_OK, "diversity": float("nan"), "strikes": 0}

    # ------------------------------------------------------------------------------------------ helpers

    @property
    def device(self) -> torch.device:
        return self.z_health.device

    def draw_z(self, n: int, generator: torch.Generator | None = None,
               truncation: float = 0.0) -> torch.Tensor:
        """(n, z_dim) latents ~ N(0, I); with ``truncation`` t > 0 each entry is drawn from N(0, 1)
        truncated to [-t, t] (the truncation trick of Brock et al. 2019, by inverse CDF, so it costs
        the same for any t)."""
        gdev = generator.device if generator is not None else self.device
        if truncation and truncation > 0:
            lo = 0.5 * (1 + math.erf(-truncation / math.sqrt(2)))  # Phi(-t)
            u = rng.rand(n, self.z_dim, generator=generator, device=gdev, dtype=torch.float64)
            z = torch.special.ndtri(lo + u * (1 - 2 * lo)).float()
        else:
            z = rng.randn(n, self.z_dim, generator=generator, device=gdev)
        return z.to(self.device)

    def labels_for(self, y: torch.Tensor | None, n: int, generator: torch.Generator | None = None):
        if not self.num_classes:
            return None
        if y is not None:
            return y
        gdev = generator.device if generator is not None else self.device
        return rng.randint(0, self.num_classes, (n,), generator=generator, device=gdev).to(self.device)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, self.cfg.diffaug_policy) if self.cfg.diffaug else x

    def discriminate(self, real: torch.Tensor, fake: torch.Tensor, y_real, y_fake):
        if self.d_has_batchnorm:
            # DCGAN feeds D all-real and all-fake batches separately (BatchNorm statistics per batch)
            return self.D(real, y_real), self.D(fake, y_fake)
        logits = self.D(torch.cat([real, fake]), None if y_real is None else torch.cat([y_real, y_fake]))
        return logits[: real.shape[0]], logits[real.shape[0]:]

    # ------------------------------------------------------------------------------------------ forward

    def forward(self, x: torch.Tensor | None = None, y: torch.Tensor | None = None, phase: str = "d",
                r1: bool = False, batch_size: int | None = None, z: torch.Tensor | None = None):
        if phase == "d":
            return self._d_pass(x, y, r1)
        if phase == "g":
            if batch_size is None:
                batch_size = x.shape[0] if x is not None else y.shape[0]
            return self._g_pass(y, batch_size)
        if phase == "sample":
            return self.G(z, y)
        raise ValueError(f"unknown phase {phase!r}; use 'd', 'g' or 'sample'")

    def _d_pass(self, x: torch.Tensor, y: torch.Tensor | None, r1: bool) -> dict:
        cfg = self.cfg
        B = x.shape[0]
        y = y if self.num_classes else None
        with torch.no_grad():  # G gets no gradient from D's loss
            fake = self.G(self.draw_z(B), self.labels_for(y, B))  # (B, C, H, W)
        real_in, fake_in = self.augment(x), self.augment(fake)
        real_logits, fake_logits = self.discriminate(real_in, fake_in, y, y)
        loss = d_loss_fn(cfg.loss, real_logits, fake_logits)
        zero = loss.new_zeros(())
        gp, r1_val = zero, zero
        if cfg.loss == "wgan-gp":
            gp = gradient_penalty(self.D, real_in, fake_in, y)
            loss = loss + cfg.gp_weight * gp
        if r1 and cfg.r1_gamma > 0:
            r1_val = r1_penalty(self.D, real_in, y)
            # lazy regularisation: applied every r1_every steps, so scaled up by r1_every (Karras et al.
            # 2020, section 4)
            loss = loss + 0.5 * cfg.r1_gamma * cfg.r1_every * r1_val
        with torch.no_grad():
            if cfg.loss == "wgan-gp":  # a critic has no 0 threshold: split at the midpoint of the means
                thresh = 0.5 * (real_logits.mean() + fake_logits.mean())
            else:
                thresh = zero
            real_acc = (real_logits > thresh).float().mean()
            fake_acc = (fake_logits < thresh).float().mean()
        return {"loss": loss, "gp": gp.detach(), "r1": r1_val.detach(), "d_real_acc": real_acc,
                "d_fake_acc": fake_acc, "d_real_logit": real_logits.detach().mean(),
                "d_fake_logit": fake_logits.detach().mean()}

    def _g_pass(self, y: torch.Tensor | None, batch_size: int) -> dict:
        y = self.labels_for(y if self.num_classes else None, batch_size)
        fake = self.G(self.draw_z(batch_size), y)
        frozen = [p for p in self.D.parameters() if p.requires_grad]
        for p in frozen:  # D's weights are constants here: no gradient lands on them
            p.requires_grad_(False)
        try:
            fake_logits = self.D(self.augment(fake), y)
        finally:
            for p in frozen:
                p.requires_grad_(True)
        return {"loss": g_loss_fn(self.cfg.loss, fake_logits)}


def build(cfg: Config, data_info) -> GAN:
    num_classes = data_info.num_classes if cfg.class_cond else 0
    return GAN(cfg, data_info.channels, data_info.size, num_classes)


def configure_optimizers(model: GAN, model_cfg: Config, train_cfg) -> dict[str, torch.optim.Optimizer]:
    """Two Adams with the two time-scale update rule (Heusel et al. 2017): D usually faster than G."""
    betas = tuple(train_cfg.adam_betas)
    lr_g = model_cfg.lr_g if model_cfg.lr_g is not None else train_cfg.lr
    lr_d = model_cfg.lr_d if model_cfg.lr_d is not None else train_cfg.lr
    kw = dict(betas=betas, weight_decay=train_cfg.weight_decay)
    if next(model.parameters()).is_cuda:
        kw["fused"] = True
    return {"d": torch.optim.Adam(model.D.parameters(), lr=lr_d, **kw),
            "g": torch.optim.Adam(model.G.parameters(), lr=lr_g, **kw)}


def _grad_norm(params) -> torch.Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def train_step(model, batch, opts, step: int, accel, grad_clip: float = 0.0) -> dict:
    """``model.train.d_steps`` discriminator updates, then one generator update, on one real batch."""
    net: GAN = accel.unwrap_model(model)
    cfg = net.cfg
    x = batch.x
    y = batch.y if net.num_classes else None
    if net.num_classes and y is None:
        raise ImagegenError("this GAN is class-conditional but the batch has no labels; "
                            "use --set model.class_cond=false")
    d_params, g_params = list(net.D.parameters()), list(net.G.parameters())
    for i in range(cfg.d_steps):
        r1 = cfg.r1_gamma > 0 and i == 0 and step % cfg.r1_every == 0
        d = model(x, y, phase="d", r1=r1)
        accel.backward(d["loss"])
        d_grad_norm = _grad_norm(d_params)
        optimizer_step(accel, opts["d"], d_params, grad_clip)
    g = model(None, y, phase="g", batch_size=x.shape[0])
    accel.backward(g["loss"])
    g_grad_norm = _grad_norm(g_params)
    optimizer_step(accel, opts["g"], g_params, grad_clip)

    d_loss, g_loss = d["loss"].detach(), g["loss"].detach()
    logs = {"loss": d_loss + g_loss, "d_loss": d_loss, "g_loss": g_loss,
            **{k: d[k] for k in ("d_real_acc", "d_fake_acc", "d_real_logit", "d_fake_logit")},
            "d_grad_norm": d_grad_norm, "g_grad_norm": g_grad_norm}
    if cfg.loss == "wgan-gp":
        logs["gp"] = d["gp"]
    if cfg.r1_gamma > 0:
        logs["r1"] = d["r1"]
    if cfg.health_every and step % cfg.health_every == 0:
        message = health_check(net, x, logs, step)
        if message:
            logs["warning"] = message
    logs["health"] = net.health_state["flag"]
    logs["diversity"] = net.health_state["diversity"]
    return logs


# ---------------------------------------------------------------------------------------------- health


def _mean_pairwise_distance(x: torch.Tensor) -> torch.Tensor:
    flat = x.detach().float().flatten(1)  # (N, D)
    n = flat.shape[0]
    if n < 2:
        return flat.new_zeros(())
    return torch.cdist(flat, flat).sum() / (n * (n - 1))


@torch.no_grad()
def diversity(net: GAN, x_real: torch.Tensor) -> float:
    """Mean pairwise L2 distance of G's images for a fixed batch of latents, divided by the same for a
    real batch: about 1 for a healthy G, near 0 when G maps every z to (nearly) one image."""
    n = net.z_health.shape[0]
    y = torch.arange(n, device=net.device) % net.num_classes if net.num_classes else None
    # train mode on purpose: the fixed z are ordinary N(0, I) draws, so BatchNorm's running statistics
    # take the same kind of update as in a training step, and eval-mode statistics early in training
    # are not yet meaningful
    fake = net.G(net.z_health, y)
    ref = _mean_pairwise_distance(x_real)
    return float(_mean_pairwise_distance(fake) / ref.clamp_min(1e-8))


def health_check(net: GAN, x_real: torch.Tensor, logs: dict, step: int) -> str | None:
    """Cheap checks run every ``health_every`` steps. Sets ``net.health_state['flag']`` (0 healthy,
    1 mode collapse, 2 divergence), logs and warns, and returns the warning text (None when healthy)."""
    cfg, state = net.cfg, net.health_state
    state["diversity"] = div = diversity(net, x_real)
    d_loss, g_loss = float(logs["d_loss"]), float(logs["g_loss"])
    real_acc, fake_acc = float(logs["d_real_acc"]), float(logs["d_fake_acc"])
    message = None
    if not (math.isfinite(d_loss) and math.isfinite(g_loss)) or abs(d_loss) > 1e4 or abs(g_loss) > 1e4:
        state["flag"] = HEALTH_DIVERGED
        message = (f"GAN diverged at step {step}: d_loss={d_loss:.4g}, g_loss={g_loss:.4g}; lower the "
                   f"learning rates (model.lr_g, model.lr_d) or use model.loss=hinge with "
                   f"model.spectral_norm=true")
    else:
        # D classifying every real and every fake image correctly, check after check, means G gets no
        # useful signal any more (the failure the non-saturating loss and the stabilisers address)
        state["strikes"] = state["strikes"] + 1 if (real_acc >= 0.99 and fake_acc >= 0.99) else 0
        # five checks (500 steps by default): D wins outright for a while early in normal DCGAN runs
        if state["strikes"] >= 5:
            state["flag"] = HEALTH_DIVERGED
            message = (f"GAN training looks diverged at step {step}: D separates real and fake perfectly "
                       f"for {state['strikes']} checks in a row (d_loss={d_loss:.3g}, g_loss={g_loss:.3g}); "
                       f"try model.spectral_norm=true, model.r1_gamma>0, model.diffaug=true or a lower "
                       f"model.lr_d")
        elif step >= 2 * cfg.health_every and div < cfg.collapse_ratio:
            state["flag"] = HEALTH_COLLAPSE
            message = (f"possible mode collapse at step {step}: sample diversity is {div:.3f} of the data's "
                       f"(threshold model.collapse_ratio={cfg.collapse_ratio}); try model.loss=hinge, "
                       f"model.spectral_norm=true or a lower model.lr_g")
        else:
            state["flag"] = HEALTH_OK
    if message:
        log.warning(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    return message


# ---------------------------------------------------------------------------------------------- sampling


def _generate(net: GAN, z: torch.Tensor, y: torch.Tensor | None, chunk: int = 500) -> torch.Tensor:
    outs = []
    for i in range(0, z.shape[0], chunk):
        outs.append(net.G(z[i:i + chunk], None if y is None else y[i:i + chunk]))
    return torch.cat(outs) if outs else z.new_zeros(0, net.channels, net.size, net.size)


@torch.no_grad()
def sample(model: GAN, n: int, labels=None, generator: torch.Generator | None = None,
           truncation: float = 0.0) -> torch.Tensor:
    """(n, C, H, W) images in [-1, 1] from the G inside ``model`` (the trainer passes its EMA copy).

    truncation: 0 samples z ~ N(0, I); t > 0 truncates every latent entry to [-t, t] (Brock et al. 2019):
    smaller t trades variety for fidelity. Unlabelled draws of a class-conditional model get uniform
    random classes."""
    if truncation < 0:
        raise ImagegenError(f"--truncation must be >= 0 (0 turns it off), got {truncation}")
    y = check_labels(labels, n, model.num_classes, model.device)
    y = model.labels_for(y, n, generator)
    z = model.draw_z(n, generator, truncation)
    return _generate(model, z, y).clamp(-1, 1)


# ---------------------------------------------------------------------------------------------- inversion


def _check_images(model: GAN, x: torch.Tensor, what: str) -> torch.Tensor:
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[1:] != (model.channels, model.size, model.size):
        raise ImagegenError(f"{what} must be (N, {model.channels}, {model.size}, {model.size}) for this "
                            f"model, got {tuple(x.shape)}; resize it to {model.size}x{model.size}")
    return x.to(model.device, torch.float32)


def _known(mask: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """Mask (H, W), (1 or C, H, W) or (B, 1 or C, H, W), 1 = known -> bool (B, C, H, W) like ``x``."""
    if mask is None:
        return torch.ones_like(x, dtype=torch.bool)
    mask = torch.as_tensor(mask).to(x.device)
    while mask.dim() < 4:
        mask = mask.unsqueeze(0)
    try:
        return torch.broadcast_to(mask > 0.5, x.shape)
    except RuntimeError:
        raise ImagegenError(f"the mask {tuple(mask.shape)} does not fit the image {tuple(x.shape)}; give one "
                            f"(H, W) mask per image, 1 where pixels are known") from None


def invert(model: GAN, x: torch.Tensor, mask: torch.Tensor | None = None, labels=None,
           generator: torch.Generator | None = None, steps: int = 200, lr: float = 0.05, restarts: int = 4,
           prior_weight: float = 1e-3):
    """GAN inversion: find z (and, for an unlabelled query to a class-conditional G, a class) with
    G(z) close to ``x`` on the known pixels (``mask`` == 1), by Adam on the masked squared error plus a
    small pull of |z|^2 / z_dim towards 1 (the typical set of N(0, I)). ``restarts`` random starts run
    as one batch; each image keeps its best. Returns (z (B, z_dim), y (B,) or None, G(z) (B, C, H, W)).
    The masked case of :func:`invert_measurement`, which takes any restoration operator."""
    x = _check_images(model, x, "the image")
    mask = _known(mask, x).float()
    known = mask.flatten(1).sum(1).clamp_min(1.0)  # (B,)
    return invert_measurement(model, x * mask, lambda img, r: img * mask.repeat_interleave(r, 0), known,
                              labels, generator, steps=steps, lr=lr, restarts=restarts, prior_weight=prior_weight)


def invert_measurement(model: GAN, y_meas: torch.Tensor, forward, count: torch.Tensor, labels=None,
                       generator: torch.Generator | None = None, steps: int = 200, lr: float = 0.05,
                       restarts: int = 4, prior_weight: float = 1e-3):
    """Find z with A(G(z)) close to a measurement ``y_meas`` (B, ...): Adam on |A(G(z)) - y|^2 / count
    plus ``prior_weight`` * (|z|^2 / z_dim - 1)^2, ``restarts`` starts per image as one batch, each image
    keeping its best (Bora et al. 2017, "Compressed sensing using generative models", with restarts).
    ``forward(images, r)`` applies A to a batch whose images are each repeated r times; ``count`` (B,) is
    the number of measured values per image. Returns (z, y or None, G(z)) as :func:`invert`."""
    B = y_meas.shape[0]
    if steps < 1 or restarts < 1 or lr <= 0:
        raise ImagegenError("inversion needs steps >= 1, restarts >= 1 and lr > 0")
    y = check_labels(labels, B, model.num_classes, model.device)
    R = restarts
    if model.num_classes and y is None:
        # no label given: try every class (at least once) and keep the best fit
        R = max(restarts, model.num_classes)
        y_all = (torch.arange(R, device=model.device) % model.num_classes).repeat(B)  # (B * R,)
    else:
        y_all = None if y is None else y.repeat_interleave(R)
    meas_all = y_meas.repeat_interleave(R, 0)  # (B * R, ...)
    z = model.draw_z(B * R, generator).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    known = count.to(model.device).repeat_interleave(R)  # (B * R,)
    trainable = [p for p in model.G.parameters() if p.requires_grad]
    try:
        for p in trainable:  # only z is optimised: skip the weight gradients (2-3x faster)
            p.requires_grad_(False)
        with torch.enable_grad():
            for _ in range(steps):
                x_hat = model.G(z, y_all)
                err = (forward(x_hat, R) - meas_all).pow(2).flatten(1).sum(1) / known  # (B * R,)
                prior = (z.pow(2).mean(1) - 1).pow(2)
                opt.zero_grad(set_to_none=True)
                (err + prior_weight * prior).sum().backward()
                opt.step()
    finally:
        for p in trainable:
            p.requires_grad_(True)
    with torch.no_grad():
        x_hat = model.G(z, y_all)
        err = (forward(x_hat, R) - meas_all).pow(2).flatten(1).sum(1) / known
        best = err.view(B, R).argmin(1) + torch.arange(B, device=model.device) * R  # (B,)
        y_best = None if y_all is None else y_all[best]
        return z.detach()[best], y_best, x_hat[best].clamp(-1, 1)


def complete(model: GAN, x: torch.Tensor, mask: torch.Tensor, labels=None,
             generator: torch.Generator | None = None, steps: int = 200, lr: float = 0.05,
             restarts: int = 4) -> torch.Tensor:
    """Fill the pixels where ``mask`` == 0 with G(z*), z* from :func:`invert` on the known pixels;
    known pixels (mask == 1) come back unchanged. x: (B, C, H, W) in [-1, 1]; mask (B or 1, 1 or C, H, W)."""
    x = _check_images(model, x, "the image")
    _, _, x_hat = invert(model, x, mask, labels, generator, steps=steps, lr=lr, restarts=restarts)
    return torch.where(_known(mask, x), x, x_hat)


RESTORE_TASKS = ("inpaint", "sr", "colourise", "denoise")


def restore(model: GAN, y: torch.Tensor, operator, labels=None, generator: torch.Generator | None = None,
            steps: int = 200, lr: float = 0.05, restarts: int = 4, prior_weight: float = 1e-3) -> torch.Tensor:
    """Recover x from y = A(x) + noise (``operator``: an :class:`imagegen.restoration.Operator`) by GAN
    inversion against A (:func:`invert_measurement`): the restored image is G(z*), projected onto the
    measurements when they are noiseless (so A(x) = y; for a mask: the known pixels kept, which is
    :func:`complete`). For a noisy y, G(z*) itself: the generator's range is the denoiser."""
    op = operator.to(model.device)
    y = y.to(model.device, torch.float32)
    if op.mask is not None and op.noiseless:
        return complete(model, y, op.mask, labels, generator, steps=steps, lr=lr, restarts=restarts)
    _, _, x_hat = invert_measurement(model, y, lambda img, r: op.repeat(r).forward(img), op.count(y), labels, generator,
                                     steps=steps, lr=lr, restarts=restarts, prior_weight=prior_weight)
    return op.finalize(x_hat, y)


def reconstruct(model: GAN, x: torch.Tensor, labels=None, steps: int = 200) -> torch.Tensor:
    """G's closest image to ``x`` (GAN inversion with every pixel known)."""
    return invert(model, x, None, labels, steps=steps)[2]


def _parse_seeds(seeds) -> tuple[int, int]:
    if isinstance(seeds, str):
        parts = [s for s in seeds.replace(" ", "").split(",") if s]
    else:
        parts = list(seeds)
    try:
        vals = [int(s) for s in parts]
    except (TypeError, ValueError):
        vals = []
    if len(vals) != 2:
        raise ImagegenError(f"--seeds takes two integers like 1,2, got {seeds!r}")
    return vals[0], vals[1]


@torch.no_grad()
def interpolate(model: GAN, a: torch.Tensor | None = None, b: torch.Tensor | None = None, frames: int = 8,
                labels=None, generator: torch.Generator | None = None, seeds: str = "1,2",
                truncation: float = 0.0, steps: int = 200) -> torch.Tensor:
    """(frames, C, H, W): G along the great circle between two latents (spherical interpolation,
    White 2016). The latents come from two seeds (``seeds="1,2"``: z = randn from torch.Generator seeded
    with each) or, when images ``a`` and ``b`` are given, from inverting them (:func:`invert`).

    For a class-conditional G, ``labels`` may be one class (both ends) or two (start, end); the class
    embedding is then blended linearly along the path. Without labels the ends take the classes inversion
    found, or a class drawn from each seed."""
    if frames < 2:
        raise ImagegenError(f"--frames must be at least 2, got {frames}")
    if (a is None) != (b is None):
        raise ImagegenError("give two images (a and b) to interpolate between, or none and --seeds 1,2")
    K = model.num_classes
    ends_y: list[int | None] = [None, None]
    if a is not None:
        z_ends = []
        for i, img in enumerate((a, b)):
            img = _check_images(model, img, "an interpolation end")[:1]
            lab = None if labels is None else _end_labels(labels, K)[i]
            z, y, _ = invert(model, img, None, lab, generator, steps=steps)
            z_ends.append(z)
            ends_y[i] = None if y is None else int(y[0])
    else:
        z_ends = []
        for i, s in enumerate(_parse_seeds(seeds)):
            g = torch.Generator().manual_seed(s)  # on the CPU: the same picture on any device
            z_ends.append(model.draw_z(1, g, truncation))
            if K:
                ends_y[i] = int(torch.randint(0, K, (1,), generator=g))
        if labels is not None:
            ends_y = list(_end_labels(labels, K))
    t = torch.linspace(0, 1, frames, device=model.device)
    z_t = slerp(z_ends[0].expand(frames, -1), z_ends[1].expand(frames, -1), t)  # (frames, z_dim)
    y_t = None
    if K:
        onehot = F.one_hot(torch.tensor(ends_y, device=model.device), K).float()  # (2, K)
        y_t = torch.lerp(onehot[0].expand(frames, K), onehot[1].expand(frames, K), t[:, None])  # (frames, K)
    return model.G(z_t, y_t).clamp(-1, 1)


def _end_labels(labels, K: int) -> tuple[int, int]:
    y = check_labels(labels, torch.as_tensor(labels).numel(), K, "cpu")
    vals = y.tolist()
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2:
        raise ImagegenError(f"interpolation takes one label or two (start, end), got {len(vals)}")
    return vals[0], vals[1]
