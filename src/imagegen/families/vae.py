"""Convolutional VAE (Kingma and Welling 2013, "Auto-Encoding Variational Bayes").

Gaussian latents z ~ N(0, I); a ResNet-style encoder gives q(z|x) = N(mu, diag(sigma^2)); the decoder
gives p(x|z) as

* Bernoulli logits for binary data (dynamically binarised MNIST, the likelihood benchmark), or
* a discretised logistic per sub-pixel for 8-bit data (PixelCNN++, Salimans et al. 2017, eq. 2 with
  one mixture component), so likelihoods are exact probabilities of the 256 integer levels.

Training maximises the ELBO with an optional ``beta`` on the KL term (Higgins et al. 2017). ``nll`` is
the importance-weighted bound of Burda et al. 2015 (IWAE, eq. 8) with ``k`` samples.

Sampling: the encoder's aggregate posterior q(z) = E_x q(z|x) of a briefly trained VAE is far from the N(0, I)
prior (some directions unused, others wider), so decoded prior draws fall between the modes ("prior holes").
After training (``after_training``) the VAE therefore fits a density to the posterior means of up to
``prior_fit_images`` training images, ex-post density estimation (Ghosh et al. 2020, "From Variational to
Deterministic Autoencoders", sec. 4): one full-covariance Gaussian per class for a class-conditional VAE, a
mixture of ``prior_components`` full-covariance Gaussians (scikit-learn's EM) otherwise, and ``sample`` draws z
from it (``prior="standard"``: from N(0, I)). On MNIST at 5 CPU minutes this took the classifier FD of the
latent VAE from 307 to 38 (docs/speedrun.md). The likelihood (``nll``) stays the ELBO's, under N(0, I).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .. import rng
from ..distributions import discretized_logistic_log_prob
from ..errors import ImagegenError
from ..restoration import Operator
from ..restoration import mask as mask_operator
from .base import check_labels, optimizer_step, strip_label

NAME = "vae"


@dataclass
class Config:
    latent_dim: int = 32
    base_channels: int = 32
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 2])  # channels per resolution level
    res_blocks: int = 1  # residual blocks per resolution level
    beta: float = 1.0  # weight of the KL term (beta-VAE); 1 is the true ELBO
    kl_warmup_steps: int = 0  # linear warm-up of the KL weight from 0 (Sonderby et al. 2016)
    likelihood: str = "auto"  # auto | bernoulli | logistic (auto: bernoulli for binary data)
    class_cond: bool = False
    nll_samples: int = 1000  # k of the IWAE bound used by nll()
    fit_prior: bool = True  # after training, fit the sampling prior to the posterior means (module docstring)
    prior_components: int = 10  # Gaussians of that prior for an unconditional VAE (conditional: one per class)
    prior_fit_images: int = 10000  # training images it is fitted on (a random subset, seed 0)

    RANGES: ClassVar[dict[str, str]] = {  # checked when a config is read (config.check_range)
        "latent_dim": "[1,inf)", "base_channels": "[1,inf)", "channel_mult": "[1,inf)", "res_blocks": "[0,64]",
        "beta": "[0,inf)", "kl_warmup_steps": "[0,inf)", "nll_samples": "[1,inf)", "prior_components": "[1,1000]",
        "prior_fit_images": "[2,inf)"}
    LENGTHS: ClassVar[dict[str, tuple[int, int | None]]] = {"channel_mult": (1, None)}  # (fewest, most) values


NLL_KIND = "IWAE upper bound on -log p(x) (Burda et al. 2015)"
TRAIN_DEFAULTS = {"lr": 1e-3, "batch_size": 128, "ema_decay": 0.999}
TEST_CONFIG = {"latent_dim": 4, "base_channels": 8, "channel_mult": [1, 1], "nll_samples": 4}
# the values sample() takes (the CLI offers them); prior: auto = fitted when the checkpoint holds a fit
SAMPLE_CHOICES = {"mode": ("mean", "sample"), "prior": ("auto", "fitted", "standard")}


def _groups(ch: int) -> int:
    return math.gcd(ch, 8)


class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.net = nn.Sequential(nn.GroupNorm(_groups(ch), ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1),
                                 nn.GroupNorm(_groups(ch), ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1))

    def forward(self, x):
        return x + self.net(x)


def _levels(size: int) -> int:
    """Halve the resolution while it stays even and above 4: 16->4, 28->7, 32->4, 64->4."""
    n = 0
    while size % 2 == 0 and size > 4:
        size //= 2
        n += 1
    return n


class VAE(nn.Module):
    # checkpoints written before the fitted prior existed load without it (imagegen.checkpoint)
    OPTIONAL_STATE = ("prior_mean", "prior_scale_tril", "prior_logits", "prior_fitted")

    def __init__(self, cfg: Config, info):
        super().__init__()
        if cfg.likelihood not in ("auto", "bernoulli", "logistic"):
            raise ImagegenError(f"model.likelihood must be auto, bernoulli or logistic, got '{cfg.likelihood}'")
        if cfg.class_cond and info.num_classes == 0:
            raise ImagegenError("model.class_cond=true needs labelled data; this dataset has no labels")
        self.cfg, self.info = cfg, info
        self.likelihood = cfg.likelihood if cfg.likelihood != "auto" else ("bernoulli" if info.bits == 1
                                                                          else "logistic")
        c = info.channels
        n_down = _levels(info.size)
        chans = [cfg.base_channels * cfg.channel_mult[min(i, len(cfg.channel_mult) - 1)] for i in range(n_down + 1)]
        self.bottom = info.size // 2**n_down
        self.num_classes = info.num_classes if cfg.class_cond else 0

        enc: list[nn.Module] = [nn.Conv2d(c, chans[0], 3, padding=1)]
        for i in range(n_down + 1):
            enc += [ResBlock(chans[i]) for _ in range(cfg.res_blocks)]
            if i < n_down:
                enc.append(nn.Conv2d(chans[i], chans[i + 1], 4, stride=2, padding=1))
        enc += [nn.GroupNorm(_groups(chans[-1]), chans[-1]), nn.SiLU()]
        self.encoder = nn.Sequential(*enc)
        flat = chans[-1] * self.bottom**2
        self.to_posterior = nn.Linear(flat + self.num_classes, 2 * cfg.latent_dim)

        self.from_latent = nn.Linear(cfg.latent_dim + self.num_classes, flat)
        dec: list[nn.Module] = []
        for i in reversed(range(n_down + 1)):
            dec += [ResBlock(chans[i]) for _ in range(cfg.res_blocks)]
            if i > 0:
                dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(chans[i], chans[i - 1], 3, padding=1)]
        out_ch = c if self.likelihood == "bernoulli" else 2 * c
        dec += [nn.GroupNorm(_groups(chans[0]), chans[0]), nn.SiLU(), nn.Conv2d(chans[0], out_ch, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)
        self._chans_bottom = chans[-1]
        # the sampling prior fitted after training (module docstring): component k is N(prior_mean[k],
        # L L^T) with L = prior_scale_tril[k], chosen by the label or with probability softmax(prior_logits)
        k, z = self.num_classes or cfg.prior_components, cfg.latent_dim
        self.register_buffer("prior_mean", torch.zeros(k, z))
        self.register_buffer("prior_scale_tril", torch.eye(z).expand(k, z, z).clone())
        self.register_buffer("prior_logits", torch.zeros(k))
        self.register_buffer("prior_fitted", torch.zeros(()))  # 1 once after_training has fitted it

    # --- pieces -------------------------------------------------------------------------------------
    def _onehot(self, y, n: int, device) -> torch.Tensor | None:
        if not self.num_classes:
            return None
        if y is None:
            raise ImagegenError("this VAE is class-conditional: give labels (e.g. --labels 3)")
        return F.one_hot(y, self.num_classes).float()

    def encode(self, x, y=None):
        h = self.encoder(x).flatten(1)  # (B, flat)
        oh = self._onehot(y, x.shape[0], x.device)
        if oh is not None:
            h = torch.cat([h, oh], 1)
        mu, logvar = self.to_posterior(h).chunk(2, dim=1)  # (B, Z) each
        return mu, logvar.clamp(-30, 20)

    def decode(self, z, y=None):
        oh = self._onehot(y, z.shape[0], z.device)
        if oh is not None:
            z = torch.cat([z, oh], 1)
        h = self.from_latent(z).view(-1, self._chans_bottom, self.bottom, self.bottom)
        return self.decoder(h)  # (B, C or 2C, H, W) distribution parameters

    def log_px_given_z(self, params, x) -> torch.Tensor:
        """log p(x|z) summed over sub-pixels -> (B,) nats."""
        if self.likelihood == "bernoulli":
            target = (x > 0).to(params.dtype)
            return -F.binary_cross_entropy_with_logits(params, target, reduction="none").flatten(1).sum(1)
        mean, log_scale = params.chunk(2, dim=1)
        return discretized_logistic_log_prob(x, mean, log_scale.clamp(min=-7.0)).flatten(1).sum(1)

    def mean_image(self, params) -> torch.Tensor:
        if self.likelihood == "bernoulli":
            return torch.sigmoid(params) * 2 - 1
        return params.chunk(2, dim=1)[0].clamp(-1, 1)

    def forward(self, x, y=None, kl_weight: float = 1.0) -> dict:
        """Training losses; called through the (possibly DDP-wrapped) module so gradients sync."""
        mu, logvar = self.encode(x, y)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()  # reparameterisation trick
        rec = -self.log_px_given_z(self.decode(z, y), x)  # (B,)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)  # KL(q(z|x) || N(0, I)), (B,)
        dims = x[0].numel()
        loss = (rec + kl_weight * kl).mean() / dims  # per sub-pixel, so lr and clipping are size-free
        return {"loss": loss, "rec_nats": rec.mean().detach(), "kl_nats": kl.mean().detach(),
                "elbo_bpd": ((rec + kl).mean() / (dims * math.log(2))).detach()}


# --- the contract ----------------------------------------------------------------------------------------


def build(cfg: Config, data_info) -> nn.Module:
    return VAE(cfg, data_info)


def train_step(model, batch, opts, step: int, accel, grad_clip: float = 0.0) -> dict:
    cfg = accel.unwrap_model(model).cfg
    warm = 1.0 if cfg.kl_warmup_steps <= 0 else min(1.0, (step + 1) / cfg.kl_warmup_steps)
    out = model(batch.x, batch.y, kl_weight=cfg.beta * warm)
    accel.backward(out["loss"])
    optimizer_step(accel, opts["main"], model.parameters(), grad_clip)
    return out


def _labels(model: VAE, labels, n: int, device):
    y = check_labels(labels, n, model.num_classes if model.num_classes else 0, device) \
        if (labels is not None or model.num_classes) else None
    if model.num_classes and y is None:
        raise ImagegenError("this VAE is class-conditional: give labels (e.g. --labels 3)")
    return y


@torch.no_grad()
def after_training(model: VAE, dataset) -> dict:
    """Fit the sampling prior to the posterior means of up to ``prior_fit_images`` images of ``dataset`` (the
    trainer calls this once training ends, on the raw weights and on the EMA copy): one full-covariance Gaussian
    per class, or a ``prior_components``-Gaussian mixture by EM without labels (Ghosh et al. 2020, sec. 4).
    Returns what it fitted, for the log."""
    if not model.cfg.fit_prior:
        return {}
    device = model.prior_mean.device
    n = min(len(dataset), model.cfg.prior_fit_images)
    idx = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:n]
    mus, ys = [], []
    for chunk in idx.split(1000):
        batch = dataset.batch(chunk.to(dataset.images.device))
        y = batch.y.to(device) if model.num_classes else None
        mu, _ = model.encode(batch.x.to(device).float(), y)
        mus.append(mu.double().cpu())
        ys.append(None if y is None else y.cpu())
    mu = torch.cat(mus)  # (n, Z), float64: covariances of a few thousand points
    k, dim = model.prior_mean.shape
    eye = torch.eye(dim, dtype=torch.float64)
    mean, cov, logits = torch.zeros(k, dim, dtype=torch.float64), eye.repeat(k, 1, 1), torch.zeros(k)
    if model.num_classes:
        y = torch.cat(ys)
        for c in range(k):  # a class with fewer than two images keeps N(0, I)
            sel = mu[y == c]
            if len(sel) >= 2:
                mean[c], cov[c] = sel.mean(0), torch.cov(sel.T).reshape(dim, dim)
    elif n < 2:  # EM needs two points; like a class with fewer than two images, one N(0, I) component
        logits = torch.full((k,), -torch.inf)
        logits[0] = 0.0
    else:
        from sklearn.mixture import GaussianMixture

        used = min(k, n)
        gm = GaussianMixture(used, covariance_type="full", reg_covar=1e-6, random_state=0).fit(mu.numpy())
        mean[:used], cov[:used] = torch.from_numpy(gm.means_), torch.from_numpy(gm.covariances_)
        logits = torch.full((k,), -torch.inf)
        logits[:used] = torch.from_numpy(gm.weights_).log().float()
    # a small ridge keeps the Cholesky factor real for directions the encoder never uses
    scale_tril = torch.linalg.cholesky(cov + 1e-6 * eye)
    model.prior_mean.copy_(mean.float())
    model.prior_scale_tril.copy_(scale_tril.float())
    model.prior_logits.copy_(logits)
    model.prior_fitted.fill_(1.0)
    return {"prior_components": k, "prior_fit_images": n}


def _draw_z(model: VAE, n: int, y, generator, temperature: float, prior: str) -> torch.Tensor:
    """(n, Z) latents: temperature-scaled draws of the fitted prior (the label's component, or one drawn by its
    weight) or of N(0, I)."""
    if prior not in SAMPLE_CHOICES["prior"]:
        raise ImagegenError(f"--prior must be one of {', '.join(SAMPLE_CHOICES['prior'])}, got '{prior}'")
    fitted = bool(model.prior_fitted > 0)
    if prior == "fitted" and not fitted:
        raise ImagegenError("this checkpoint has no fitted prior (trained before it existed, with "
                            "model.fit_prior=false, or saved before training ended); use --prior standard")
    device = model.prior_mean.device
    eps = rng.randn(n, model.cfg.latent_dim, device=device, generator=generator) * temperature  # (n, Z)
    if prior == "standard" or not fitted:
        return eps
    if y is None:  # the mixture component of each image, by inverse CDF of its weights
        u = rng.rand(n, device=device, generator=generator)
        cdf = model.prior_logits.softmax(0).cumsum(0)
        y = torch.searchsorted(cdf, u.contiguous()).clamp(max=len(cdf) - 1)
    return model.prior_mean[y] + (model.prior_scale_tril[y] @ eps.unsqueeze(-1)).squeeze(-1)


@torch.no_grad()
def sample(model: VAE, n: int, labels=None, generator=None, temperature: float = 1.0, mode: str = "mean",
           prior: str = "auto"):
    """Decode z from the prior, its spread scaled by ``temperature``. ``prior``: ``fitted`` (the density fitted
    to the posterior means after training, module docstring), ``standard`` (N(0, I)) or ``auto`` (fitted when
    the checkpoint holds a fit). ``mode='mean'`` shows the decoder's mean image (the usual grid);
    ``mode='sample'`` draws every pixel from p(x|z)."""
    device = next(model.parameters()).device
    y = _labels(model, labels, n, device)
    z = _draw_z(model, n, y, generator, temperature, prior)
    params = model.decode(z, y)
    if mode == "mean":
        return model.mean_image(params)
    if mode != "sample":
        raise ImagegenError(f"--mode must be mean or sample, got '{mode}'")
    if model.likelihood == "bernoulli":
        u = rng.rand(params.shape, device=device, generator=generator)
        return (u < torch.sigmoid(params)).float() * 2 - 1
    mean, log_scale = params.chunk(2, dim=1)
    u = rng.rand(mean.shape, device=device, generator=generator).clamp(1e-5, 1 - 1e-5)
    x = mean + log_scale.clamp(min=-7).exp() * (torch.log(u) - torch.log1p(-u))  # inverse logistic CDF
    return (torch.round((x.clamp(-1, 1) + 1) * 127.5) / 127.5 - 1)


@torch.no_grad()
def nll(model: VAE, x, labels=None, k: int | None = None) -> torch.Tensor:
    """IWAE bound on -log p(x) in nats per image (Burda et al. 2015, eq. 8): with k importance samples
    z_i ~ q(z|x), log p(x) >= logsumexp_i [log p(x|z_i) + log p(z_i) - log q(z_i|x)] - log k."""
    k = k or model.cfg.nll_samples
    y = _labels(model, labels, x.shape[0], x.device)
    mu, logvar = model.encode(x, y)
    std = (0.5 * logvar).exp()
    b = x.shape[0]
    chunk = max(1, min(k, 8192 // max(1, b)))
    log_w = []
    for start in range(0, k, chunk):
        m = min(chunk, k - start)
        eps = torch.randn(m, *mu.shape, device=x.device)  # (m, B, Z)
        z = mu + eps * std
        log_q = (-0.5 * eps.pow(2) - 0.5 * logvar - 0.5 * math.log(2 * math.pi)).sum(-1)  # (m, B)
        log_p_z = (-0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)).sum(-1)
        zf = z.reshape(m * b, -1)
        yf = None if y is None else y.repeat(m)
        xf = x.unsqueeze(0).expand(m, *x.shape).reshape(m * b, *x.shape[1:])
        log_px = model.log_px_given_z(model.decode(zf, yf).float(), xf).view(m, b)
        log_w.append(log_px + log_p_z - log_q)
    log_w = torch.cat(log_w)  # (k, B)
    return -(torch.logsumexp(log_w, 0) - math.log(k))


@torch.no_grad()
def reconstruct(model: VAE, x, labels=None) -> torch.Tensor:
    y = _labels(model, labels, x.shape[0], x.device)
    mu, _ = model.encode(x, y)
    return model.mean_image(model.decode(mu, y))


@torch.no_grad()
def interpolate(model: VAE, a, b, frames: int = 8, labels=None, generator=None) -> torch.Tensor:
    """Decode evenly spaced points on the line between the posterior means of images a and b."""
    if a is None or b is None:
        raise ImagegenError("VAE interpolation needs two images: give --a A.png --b B.png")
    y = _labels(model, strip_label(labels, "VAE"), 1, a.device)
    mu_a, _ = model.encode(a, y)
    mu_b, _ = model.encode(b, y)
    t = torch.linspace(0, 1, frames, device=a.device).view(-1, 1)
    z = (1 - t) * mu_a + t * mu_b  # (frames, Z)
    yf = None if y is None else y.expand(frames)
    return model.mean_image(model.decode(z, yf))


@torch.no_grad()
def complete(model: VAE, x, mask, labels=None, generator=None, iterations: int = 50) -> torch.Tensor:
    """Fill pixels where mask == 0 by pseudo-Gibbs sampling (Rezende et al. 2014, sec. 5.3): encode the
    current guess, draw z ~ q(z|x), decode, and put the known pixels back; repeat. The masked case of
    :func:`restore` (``method="gibbs"``)."""
    y = _labels(model, labels, x.shape[0], x.device)
    mask = mask.to(x.dtype).expand_as(x)
    cur = _gibbs(model, x * mask, mask_operator(mask), y, generator, iterations)
    return torch.where(mask > 0.5, x, cur)


def _gibbs(model: VAE, y_meas, op, y, generator, iterations: int) -> torch.Tensor:
    """Pseudo-Gibbs against an operator: start from A+ y + (I - A+ A) u with u uniform noise, then
    encode, draw z ~ q(z|x), decode to the mean image and project onto the measurements, ``iterations``
    times. For a mask the projection puts the known pixels back (Rezende et al. 2014, sec. 5.3)."""
    shape = (y_meas.shape[0], model.info.channels, model.info.size, model.info.size)
    noise = torch.rand(shape, device=y_meas.device, generator=generator) * 2 - 1
    cur = op.project(noise, y_meas)
    for _ in range(iterations):
        mu, logvar = model.encode(cur, y)
        z = mu + torch.randn(mu.shape, device=mu.device, generator=generator) * (0.5 * logvar).exp()
        cur = op.project(model.mean_image(model.decode(z, y)), y_meas)
    return cur


RESTORE_TASKS = ("inpaint", "sr", "colourise", "denoise")
RESTORE_METHODS = ("auto", "gibbs", "latent")


def restore(model: VAE, y_meas, operator, labels=None, generator=None, method: str = "auto", iterations: int = 50,
            steps: int = 200, lr: float = 0.05, restarts: int = 4) -> torch.Tensor:
    """Recover x from y = A(x) + noise (``operator``: an :class:`imagegen.restoration.Operator`).

    ``method="gibbs"``: pseudo-Gibbs sampling with the encoder against A (:func:`_gibbs`; for a mask this is
    :func:`complete`). ``method="latent"``: MAP in the latent space, argmin_z |A(dec(z)) - y|^2 / (2 s^2) +
    |z|^2 / 2 with s = max(sigma_y, 0.01), by Adam from the encoder's mean of A+ y and ``restarts - 1``
    draws of the prior; each image keeps its best fit (as GAN inversion does). ``auto``: gibbs for a
    noiseless y, latent for a noisy one (the projection of gibbs would keep the noise). A noiseless
    result is projected onto the measurements, so A(x) = y."""
    if method not in RESTORE_METHODS:
        raise ImagegenError(f"--method must be one of {', '.join(RESTORE_METHODS)}, got '{method}'")
    if not isinstance(operator, Operator):
        raise ImagegenError("restore takes an imagegen.restoration.Operator (parse_task builds one)")
    device = next(model.parameters()).device
    op = operator.to(device)
    y_meas = y_meas.to(device, torch.float32)
    y = _labels(model, labels, y_meas.shape[0], device)
    if method == "auto":
        method = "gibbs" if op.noiseless else "latent"
    if method == "gibbs":
        with torch.no_grad():
            return op.finalize(_gibbs(model, y_meas, op, y, generator, iterations), y_meas)
    if steps < 1 or restarts < 1 or lr <= 0:
        raise ImagegenError("latent search needs steps >= 1, restarts >= 1 and lr > 0")
    B, R = y_meas.shape[0], restarts
    with torch.no_grad():
        mu, _ = model.encode(op.pinv(y_meas), y)  # (B, Z): a start that already explains y roughly
    z0 = torch.randn(B, R, mu.shape[1], device=device, generator=generator)
    z0[:, 0] = mu
    z = z0.view(B * R, -1).clone().requires_grad_(True)
    y_all = None if y is None else y.repeat_interleave(R)
    meas_all, op_all = y_meas.repeat_interleave(R, 0), op.repeat(R)
    inv_var = 1.0 / (2 * max(op.sigma, 0.01) ** 2)
    opt = torch.optim.Adam([z], lr=lr)
    trainable = [p for p in model.parameters() if p.requires_grad]

    def energy(z):  # (B * R,): the negative log posterior up to a constant
        x = model.mean_image(model.decode(z, y_all))
        return inv_var * (op_all.forward(x) - meas_all).pow(2).flatten(1).sum(1) + 0.5 * z.pow(2).sum(1), x

    try:
        for p in trainable:  # only z is optimised
            p.requires_grad_(False)
        with torch.enable_grad():
            for _ in range(steps):
                e, _ = energy(z)
                opt.zero_grad(set_to_none=True)
                e.sum().backward()
                opt.step()
    finally:
        for p in trainable:
            p.requires_grad_(True)
    with torch.no_grad():
        e, x = energy(z)
        best = e.view(B, R).argmin(1) + torch.arange(B, device=device) * R
        return op.finalize(x[best], y_meas)
