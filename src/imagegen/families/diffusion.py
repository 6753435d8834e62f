"""Diffusion models: the DDPM UNet (Ho et al. 2020) trained as DDPM-eps, v-prediction, EDM or flow matching.

One network, four *formulations* (``model.formulation``), all exposed to the samplers as one denoiser
D(x, sigma) -> x0_hat in the variance-exploding frame x = x0 + sigma * n (see ``imagegen.samplers``):

- ``eps``  DDPM (Ho et al. 2020): discrete t in 0..T-1, x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps,
           the net predicts eps, loss ||eps_hat - eps||^2 ("L_simple", eq. 14). Schedules ``linear``
           (beta 1e-4 .. 0.02) or ``cosine`` (Nichol & Dhariwal 2021, eq. 17).
- ``v``    the same process, the net predicts v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho
           2022, sec. 4), which stays well scaled at both ends of the schedule.
- ``edm``  Karras et al. 2022: continuous sigma ~ logN(P_mean, P_std), preconditioning c_skip, c_out,
           c_in, c_noise and the loss weight lambda(sigma) of their table 1.
- ``flow`` flow matching with the linear path of rectified flow (Lipman et al. 2023; Liu et al. 2023):
           x_t = (1 - t) x0 + t eps, t in [0, 1], the net predicts the velocity v = eps - x0, loss
           ||v_hat - v||^2, t ~ logit-normal (Esser et al. 2024, SD3) or uniform. In the VE frame
           x = x_t / (1 - t), sigma = t / (1 - t) and x0_hat = x_t - t v_hat.

Class conditioning: a label embedding added to the time embedding; during training labels are dropped
to a "null" class (index = num_classes) with probability ``label_dropout`` so the same net is also the
unconditional model that classifier-free guidance needs (Ho & Salimans 2022).
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .. import rng
from .. import samplers as S
from ..errors import ImagegenError
from ..nn import Downsample, ResBlock, SelfAttention2d, Upsample, group_norm, sinusoidal_embedding
from ..restoration import Operator
from .base import check_labels, optimizer_step, slerp, strip_label

NAME = "diffusion"

FORMULATIONS = ("eps", "v", "edm", "flow")
FLOW_T_DISTS = ("logit-normal", "uniform")
SCHEDULES = ("linear", "cosine")


@dataclass
class Config:
    # network: the DDPM UNet. The four below default to None: sized to the data (``sized_unet``): the
    # paper's 35.7M-parameter CIFAR-10 model for colour images of 32 pixels and more, a ~1.6M one (ddpm-mnist's)
    # for grey 17-32 pixel images, and a ~1.0M one for 16 pixels and less, so `imagegen train diffusion --data
    # digits` trains a network that fits its 16x16 images; a preset or --set gives them explicitly
    base_channels: int | None = None
    channel_mult: list[int] | None = None
    num_res_blocks: int = 2
    attn_resolutions: list[int] | None = None  # feature-map sizes with attention
    attn_heads: int = 1
    dropout: float | None = None
    norm_groups: int = 32
    class_cond: bool = False
    label_dropout: float = 0.1  # P(label -> null class) in training; needed for classifier-free guidance
    # formulation
    formulation: str = "eps"  # eps | v | edm | flow
    schedule: str = "linear"  # linear | cosine   (eps and v)
    num_timesteps: int = 1000  # T (eps and v)
    beta_start: float = 1e-4  # linear schedule
    beta_end: float = 0.02
    sigma_data: float = 0.5  # EDM
    p_mean: float = -1.2  # EDM: ln(sigma) ~ N(p_mean, p_std^2) in training
    p_std: float = 1.2
    sigma_min: float = 0.002  # EDM sampling range
    sigma_max: float = 80.0
    # flow matching: the training distribution of t. logit-normal (t = sigmoid(m + s n), Esser et al. 2024,
    # sec. 3.1; their best rectified-flow setting, m = 0, s = 1) puts the updates on the middle of the path,
    # where the velocity is hardest to predict; uniform is Lipman et al.'s and Liu et al.'s choice
    flow_t_dist: str = "logit-normal"  # logit-normal | uniform
    flow_t_mean: float = 0.0
    flow_t_std: float = 1.0
    flow_t_max: float = 0.9999  # where sampling starts: t = 1 is sigma = inf (samplers.uniform_t_sigmas)
    # speed (none changes the maths)
    channels_last: bool = False  # NHWC memory format: faster convolutions on tensor-core GPUs
    compile: bool = False  # torch.compile the UNet (first steps are slow while it compiles)
    sample_bf16: bool = True  # bf16 autocast for the UNet while sampling on CUDA (never on CPU)
    # likelihood (eps and v): terms of the variational bound that nll() draws at random (0: all T-1)
    nll_t_samples: int = 0

    RANGES: ClassVar[dict[str, str]] = {  # checked when a config is read (config.check_range)
        "base_channels": "[1,inf)", "channel_mult": "[1,inf)", "num_res_blocks": "[1,64]",
        "attn_resolutions": "[1,inf)", "attn_heads": "[1,inf)", "dropout": "[0,1)", "norm_groups": "[1,inf)",
        "label_dropout": "[0,1)", "num_timesteps": "[1,100000]", "beta_start": "(0,1)", "beta_end": "(0,1)",
        "sigma_data": "(0,inf)", "p_std": "(0,inf)", "sigma_min": "(0,inf)", "sigma_max": "(0,inf)",
        "flow_t_std": "(0,inf)", "flow_t_max": "(0,1)", "nll_t_samples": "[0,inf)"}


TRAIN_DEFAULTS = {"lr": 2e-4, "batch_size": 128, "grad_clip": 1.0, "ema_decay": 0.9999}

# a tiny model for the shared contract test and CLI smoke tests (~60k parameters)
TEST_CONFIG = {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [4, 8],
               "dropout": 0.0, "num_timesteps": 100}

# the trainer's periodic preview grids: a cheap deterministic sampler (10 network calls; on a 2-core CPU
# a 64-image grid of the ddpm-mnist model still takes about half a minute)
PREVIEW_OPTIONS = {"sampler": "dpmpp-2m", "steps": 10}
SAMPLE_CHOICES = {"sampler": S.SAMPLERS}  # the values sample() takes (imagegen compare reads them)


# ------------------------------------------------------------------------------------------ network


def sized_unet(cfg: Config, data_info) -> dict:
    """The UNet's width, levels, attention and dropout: those the config gives, the rest sized to the data.
    Colour images of 32 pixels or more get Ho et al.'s CIFAR-10 network (ch 128, mult 1,2,2,2, attention at
    16x16, dropout 0.1: 35.7M parameters); smaller or grey images get a network their size calls for, so the
    family trained without a preset learns in minutes on a CPU: grey 17-32 pixels ddpm-mnist's (ch 32, mult
    1,2,2, attention at the quarter-size level, ~1.6M), 16 pixels and less ch 32, mult 1,2, attention at half the
    size (~1.0M). The config records None for what was sized, and the same data always gives the same net."""
    size, colour = data_info.size, data_info.channels > 1
    if colour and size >= 32:
        auto = {"base_channels": 128, "channel_mult": [1, 2, 2, 2], "attn_resolutions": [16], "dropout": 0.1}
    elif size > 16:
        auto = {"base_channels": 32, "channel_mult": [1, 2, 2], "attn_resolutions": [-(-size // 4)], "dropout": 0.0}
    else:
        auto = {"base_channels": 32, "channel_mult": [1, 2], "attn_resolutions": [-(-size // 2)], "dropout": 0.0}
    return {k: v if getattr(cfg, k) is None else getattr(cfg, k) for k, v in auto.items()}


class UNet(nn.Module):
    """The DDPM UNet (Ho et al. 2020, appendix B; PixelCNN++-style backbone): per resolution
    ``num_res_blocks`` ResBlocks (+ self-attention at ``attn_resolutions``), stride-2 conv down,
    a middle ResBlock-attention-ResBlock, and an up path with ``num_res_blocks + 1`` ResBlocks per level
    fed with the skip connections; a 4*ch time-embedding MLP conditions every ResBlock.

    Inputs whose size is not divisible by 2^(levels-1) are padded at the bottom/right and the output
    cropped back, so e.g. 28x28 MNIST works with four levels."""

    def __init__(self, in_ch: int, out_ch: int, size: int, ch: int, mult: list[int], num_res_blocks: int,
                 attn_resolutions: list[int], dropout: float, num_classes: int = 0, heads: int = 1,
                 groups: int = 32):
        super().__init__()
        self.ch = ch
        self.levels = len(mult)
        self.num_classes = num_classes
        emb_dim = 4 * ch
        self.time_mlp = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        # num_classes + 1 rows: the last one is the "null" label of classifier-free guidance
        self.label_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        self.conv_in = nn.Conv2d(in_ch, ch, 3, padding=1)

        factor = 2 ** (self.levels - 1)
        res = -(-size // factor) * factor  # padded size
        self.down = nn.ModuleList()
        skips = [ch]
        cur = ch
        for i, m in enumerate(mult):
            for _ in range(num_res_blocks):
                blocks = [ResBlock(cur, ch * m, emb_dim, dropout, groups)]
                cur = ch * m
                if res in attn_resolutions:
                    blocks.append(SelfAttention2d(cur, heads, groups))
                self.down.append(nn.ModuleList(blocks))
                skips.append(cur)
            if i != self.levels - 1:
                self.down.append(nn.ModuleList([Downsample(cur)]))
                skips.append(cur)
                res //= 2
        self.mid = nn.ModuleList([ResBlock(cur, cur, emb_dim, dropout, groups),
                                  SelfAttention2d(cur, heads, groups),
                                  ResBlock(cur, cur, emb_dim, dropout, groups)])
        self.up = nn.ModuleList()
        for i, m in reversed(list(enumerate(mult))):
            for _ in range(num_res_blocks + 1):
                blocks = [ResBlock(cur + skips.pop(), ch * m, emb_dim, dropout, groups)]
                cur = ch * m
                if res in attn_resolutions:
                    blocks.append(SelfAttention2d(cur, heads, groups))
                self.up.append(nn.ModuleList(blocks))
            if i != 0:
                self.up.append(nn.ModuleList([Upsample(cur)]))
                res *= 2
        self.norm_out = group_norm(cur, groups)
        self.conv_out = nn.Conv2d(cur, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # start by predicting 0 (the mean target of every formulation)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor, noise_label: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, C, H, W) network input, noise_label: (B,) float (t or EDM's c_noise), y: (B,) long in
        0..num_classes (num_classes = null) or None -> (B, out_ch, H, W)."""
        h0, w0 = x.shape[-2:]
        factor = 2 ** (self.levels - 1)
        pad_h, pad_w = (-h0) % factor, (-w0) % factor
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        emb = self.time_mlp(sinusoidal_embedding(noise_label, self.ch))  # (B, 4ch)
        if self.label_emb is not None:
            if y is None:
                y = torch.full((x.shape[0],), self.num_classes, device=x.device, dtype=torch.long)
            emb = emb + self.label_emb(y)
        h = self.conv_in(x)
        hs = [h]
        for blocks in self.down:
            for block in blocks:
                h = block(h, emb)
            hs.append(h)
        for block in self.mid:
            h = block(h, emb)
        for blocks in self.up:
            for block in blocks:
                if isinstance(block, ResBlock):
                    h = block(torch.cat([h, hs.pop()], dim=1), emb)
                else:
                    h = block(h, emb)
        h = self.conv_out(F.silu(self.norm_out(h)))
        return h[..., :h0, :w0]


# ------------------------------------------------------------------------------------------ schedules


def make_betas(schedule: str, num_timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """(T,) float64 betas. ``linear``: Ho et al. 2020 sec. 4; ``cosine``: Nichol & Dhariwal 2021, eq. 17
    with s = 0.008 and betas clipped at 0.999 (diffusers' ``squaredcos_cap_v2``)."""
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)
    if schedule == "cosine":
        s = 0.008
        t = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
        f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
        return (1 - f[1:] / f[:-1]).clamp(max=0.999)
    raise ImagegenError(f"model.schedule must be one of {', '.join(SCHEDULES)}, got '{schedule}'")


# weak references: compiled forwards live outside the module so state_dict keys and deepcopy (EMA) are
# unaffected by model.compile
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class Diffusion(nn.Module):
    """UNet + formulation. ``forward(x0, y)`` returns the training loss dict (so DDP wraps the whole
    step); ``denoise(x, sigma, y)`` is the D(x, sigma) -> x0_hat the samplers use."""

    def __init__(self, cfg: Config, data_info):
        super().__init__()
        if cfg.formulation not in FORMULATIONS:
            raise ImagegenError(f"model.formulation must be one of {', '.join(FORMULATIONS)}, "
                                f"got '{cfg.formulation}'")
        if cfg.formulation == "flow" and cfg.flow_t_dist not in FLOW_T_DISTS:
            raise ImagegenError(f"model.flow_t_dist must be one of {', '.join(FLOW_T_DISTS)}, "
                                f"got '{cfg.flow_t_dist}'")
        if cfg.class_cond and not data_info.num_classes:
            raise ImagegenError("model.class_cond=true needs labelled data; this dataset has no labels "
                                "(use --set model.class_cond=false)")
        net = sized_unet(cfg, data_info)
        if not net["channel_mult"]:
            raise ImagegenError("model.channel_mult needs at least one level, e.g. 1,2,2")
        self.cfg = cfg
        self.channels, self.size = data_info.channels, data_info.size
        self.bits = getattr(data_info, "bits", 8)  # 8: 256 levels per sub-pixel, 1: binary (nll's decoder)
        self.num_classes = data_info.num_classes if cfg.class_cond else 0
        self.unet = UNet(data_info.channels, data_info.channels, data_info.size, net["base_channels"],
                         list(net["channel_mult"]), cfg.num_res_blocks, list(net["attn_resolutions"]),
                         net["dropout"], self.num_classes, cfg.attn_heads, cfg.norm_groups)
        if cfg.channels_last:
            self.unet.to(memory_format=torch.channels_last)
        if cfg.formulation in ("eps", "v"):
            betas = make_betas(cfg.schedule, cfg.num_timesteps, cfg.beta_start, cfg.beta_end)
            abar = torch.cumprod(1 - betas, 0)
            # non-persistent: derived from the config, so checkpoints hold only weights
            self.register_buffer("alphas_cumprod", abar.float(), persistent=False)
            self.register_buffer("log_sigmas", S.vp_sigmas(abar).log().float(), persistent=False)

    # -- noise levels ------------------------------------------------------------------------------

    @property
    def is_vp(self) -> bool:
        return self.cfg.formulation in ("eps", "v")

    @property
    def train_sigmas(self) -> torch.Tensor:
        """(T,) ascending VE noise levels of the discrete time steps (VP formulations)."""
        return self.log_sigmas.exp()

    @property
    def is_flow(self) -> bool:
        return self.cfg.formulation == "flow"

    def sigma_range(self) -> tuple[float, float]:
        if self.is_vp:
            return float(self.train_sigmas[0]), float(self.train_sigmas[-1])
        if self.is_flow:  # sigma = t / (1 - t) at t = flow_t_max
            return self.cfg.sigma_min, self.cfg.flow_t_max / (1 - self.cfg.flow_t_max)
        return self.cfg.sigma_min, self.cfg.sigma_max

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """Continuous time step of a VE noise level: linear interpolation in log sigma between the
        discrete steps (as k-diffusion's DiscreteSchedule does), exact at the training sigmas."""
        log_sigmas = self.log_sigmas
        log_sigma = sigma.float().log().clamp(log_sigmas[0], log_sigmas[-1])
        hi = torch.searchsorted(log_sigmas, log_sigma.contiguous()).clamp(1, len(log_sigmas) - 1)
        lo = hi - 1
        w = (log_sigma - log_sigmas[lo]) / (log_sigmas[hi] - log_sigmas[lo])
        return lo.float() + w.clamp(0, 1)

    def prior_std(self, sigma_max: float) -> float:
        """Std of x at the start of sampling: a VP model's x_T ~ N(0, I) in its own frame is
        N(0, (1 + sigma_T^2) I) in the VE frame; EDM starts from N(0, sigma_max^2 I) (its algorithm 1), and
        so does flow: x_t = x / (1 + sigma) ~ N(0, t_max^2 I), the noise part of (1 - t) x0 + t eps."""
        return math.sqrt(1 + sigma_max**2) if self.is_vp else sigma_max

    # -- the network as a denoiser -----------------------------------------------------------------

    def _net(self, x: torch.Tensor, noise_label: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        unet = self.unet
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.cfg.compile:
            if unet not in _COMPILED:
                _COMPILED[unet] = torch.compile(unet)
            unet = _COMPILED[unet]
        return unet(x, noise_label, y)

    def precondition(self, sigma: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(c_skip, c_out, c_in, c_noise) with D(x, sigma) = c_skip x + c_out F(c_in x, c_noise), all
        (B, 1, 1, 1) except c_noise (B,). EDM table 1; the VP rows are the same identity rewritten:
        eps:  x0 = x - sigma eps                         -> c_skip 1,           c_out -sigma
        v:    x0 = abar x_ve - sqrt(1 - abar) v           -> c_skip 1/(1+s^2),   c_out -s/sqrt(1+s^2)
        with c_in = 1/sqrt(1+sigma^2) (the VP input x_t) and c_noise = t(sigma);
        flow: x0 = x_t - t v, x_t = x_ve / (1+s), t = s/(1+s) -> c_skip = c_in = 1/(1+s), c_out -s/(1+s),
        c_noise = 1000 t (the range of DDPM's t, as for EDM below)."""
        s = sigma.float().view(-1, 1, 1, 1)
        if self.cfg.formulation == "flow":
            c_in = 1 / (1 + s)
            return c_in, -s * c_in, c_in, 1000.0 * sigma.float() / (1 + sigma.float())
        if self.cfg.formulation == "edm":
            sd = self.cfg.sigma_data
            c_skip = sd**2 / (s**2 + sd**2)
            c_out = s * sd / (s**2 + sd**2).sqrt()
            c_in = 1 / (s**2 + sd**2).sqrt()
            # EDM's c_noise = ln(sigma) / 4, scaled by 1000 so the sinusoidal embedding sees the same
            # range of values as DDPM's t in 0..999 (its frequencies were chosen for that range)
            c_noise = 250.0 * sigma.float().log()
            return c_skip, c_out, c_in, c_noise
        c_in = 1 / (1 + s**2).sqrt()
        c_noise = self.sigma_to_t(sigma.float())
        if self.cfg.formulation == "eps":
            return torch.ones_like(s), -s, c_in, c_noise
        return 1 / (1 + s**2), -s * c_in, c_in, c_noise

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """D(x, sigma): (B, C, H, W) VE-frame x at noise level sigma (scalar or (B,)) -> x0_hat float32."""
        sigma = sigma.to(x.device, torch.float32).expand(x.shape[0]) if sigma.dim() == 0 else sigma
        c_skip, c_out, c_in, c_noise = self.precondition(sigma)
        use_bf16 = self.cfg.sample_bf16 and x.is_cuda and not self.training
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
            out = self._net((c_in * x.float()).to(x.dtype), c_noise, y)
        return c_skip * x.float() + c_out * out.float()

    # -- training ----------------------------------------------------------------------------------

    def forward(self, x0: torch.Tensor, y: torch.Tensor | None = None) -> dict:
        """One Monte-Carlo estimate of the training loss for a batch x0 (B, C, H, W) in [-1, 1]."""
        b = x0.shape[0]
        if self.num_classes:
            if y is None:
                raise ImagegenError("model.class_cond=true but the batch has no labels")
            drop = torch.rand(b, device=x0.device) < self.cfg.label_dropout
            y = torch.where(drop, torch.full_like(y, self.num_classes), y)
        else:
            y = None
        noise = torch.randn_like(x0)
        if self.is_vp:
            t = torch.randint(0, self.cfg.num_timesteps, (b,), device=x0.device)
            abar = self.alphas_cumprod[t].view(-1, 1, 1, 1)
            x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise  # (B, C, H, W), Ho et al. eq. 4
            out = self._net(x_t, t.float(), y).float()
            if self.cfg.formulation == "eps":
                target = noise
            else:  # v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022, eq. before 10)
                target = abar.sqrt() * noise - (1 - abar).sqrt() * x0
            loss = F.mse_loss(out, target)
        elif self.is_flow:
            # conditional flow matching with the linear (rectified-flow) path: the velocity of
            # x_t = (1 - t) x0 + t eps is eps - x0 (Lipman et al. 2023, eq. 23 with sigma_min = 0 and time
            # reversed: their t = 1 is the data; Liu et al. 2023, eq. 1)
            if self.cfg.flow_t_dist == "uniform":
                t = torch.rand(b, device=x0.device)
            else:  # logit-normal (Esser et al. 2024, sec. 3.1)
                t = torch.sigmoid(self.cfg.flow_t_mean + self.cfg.flow_t_std * torch.randn(b, device=x0.device))
            t4 = t.view(-1, 1, 1, 1)
            x_t = (1 - t4) * x0 + t4 * noise
            out = self._net(x_t, 1000.0 * t, y).float()
            loss = F.mse_loss(out, noise - x0)
        else:
            # EDM training (Karras et al. 2022, table 1 and eq. 8): with lambda = 1/c_out^2 the weighted
            # loss lambda ||D - x0||^2 is exactly ||F - (x0 - c_skip x) / c_out||^2
            sigma = (torch.randn(b, device=x0.device) * self.cfg.p_std + self.cfg.p_mean).exp()
            c_skip, c_out, c_in, c_noise = self.precondition(sigma)
            x = x0 + sigma.view(-1, 1, 1, 1) * noise
            out = self._net(c_in * x, c_noise, y).float()
            target = (x0 - c_skip * x) / c_out
            loss = F.mse_loss(out, target)
        return {"loss": loss}


# ------------------------------------------------------------------------------------------ contract


def build(cfg: Config, data_info) -> nn.Module:
    return Diffusion(cfg, data_info)


def train_step(model, batch, opts, step: int, accel, grad_clip: float = 0.0) -> dict:
    out = model(batch.x, batch.y)
    accel.backward(out["loss"])
    optimizer_step(accel, opts["main"], model.parameters(), grad_clip)
    return out


def _device(model: nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _labels(model: Diffusion, labels, n: int, device, generator) -> torch.Tensor | None:
    """(n,) labels for the net: the user's, else the null class (the unconditional model) when the net
    was trained with label dropout, else uniformly random classes."""
    if labels is not None:
        return check_labels(labels, n, model.num_classes, device)
    if not model.num_classes:
        return None
    if model.cfg.label_dropout > 0:
        return torch.full((n,), model.num_classes, device=device, dtype=torch.long)
    return rng.randint(0, model.num_classes, (n,), device=device, generator=generator)


def make_denoiser(model: Diffusion, y: torch.Tensor | None, guidance: float = 1.0,
                  clip_denoised: bool = True) -> S.Denoiser:
    """The sampler-facing D(x, sigma) for labels y, with classifier-free guidance and optional clipping
    of x0_hat to the data range [-1, 1] (DDPM's ``clip_denoised``) applied after guidance."""
    if guidance != 1.0:
        if not model.num_classes:
            raise ImagegenError("--guidance needs a class-conditional model (trained with "
                                "--set model.class_cond=true); leave it at 1")
        if model.cfg.label_dropout <= 0:
            raise ImagegenError("--guidance needs a model trained with label dropout "
                                "(model.label_dropout > 0); leave it at 1")
        if guidance < 0:
            raise ImagegenError(f"--guidance must be >= 0, got {guidance}")

    def cond(x, sigma):
        return model.denoise(x, sigma, y)

    uncond = None
    if guidance != 1.0 and y is not None:
        null = torch.full_like(y, model.num_classes)

        def uncond(x, sigma):
            return model.denoise(x, sigma, null)

    d = S.guided_denoiser(cond, uncond, guidance)
    if not clip_denoised:
        return d
    return lambda x, sigma: d(x, sigma).clamp(-1, 1)


def make_sigmas(model: Diffusion, sampler: str, steps: int, schedule: str = "auto") -> torch.Tensor:
    """The sampler's noise levels (steps + 1,), descending to 0. ``auto``: for VP models the discrete
    training steps with ``trailing`` spacing (starts at t = T-1), for EDM the Karras rho = 7 ramp, for flow
    ``uniform`` (uniform in t = sigma / (1 + sigma) from the model's largest sigma; any model takes it)."""
    if steps < 1:
        raise ImagegenError(f"--steps must be >= 1, got {steps}")
    if schedule == "auto":
        schedule = "trailing" if model.is_vp else "uniform" if model.is_flow else "karras"
    if schedule == "karras":
        lo, hi = model.sigma_range()
        return S.karras_sigmas(lo, hi, steps)
    if schedule == "uniform":
        return S.uniform_t_sigmas(model.sigma_range()[1], steps)
    if schedule in ("leading", "linspace", "trailing"):
        if not model.is_vp:
            raise ImagegenError(f"--schedule {schedule} needs a DDPM-style model (eps or v); "
                                f"{model.cfg.formulation} models use --schedule karras or uniform")
        return S.discrete_sigmas(model.train_sigmas, steps, schedule)
    raise ImagegenError(f"--schedule must be auto, karras, uniform, leading, linspace or trailing, got '{schedule}'")


def _check_sampler(model: Diffusion, sampler: str) -> None:
    if sampler not in S.SAMPLERS:
        raise ImagegenError(f"unknown sampler '{sampler}'; available: {', '.join(S.SAMPLERS)}")
    if sampler == "ddpm-large" and not model.is_vp:
        others = ", ".join(s for s in S.SAMPLERS if s != "ddpm-large")
        raise ImagegenError("--sampler ddpm-large (variance beta_t) is defined for DDPM-style models (eps or v); "
                            f"for this {model.cfg.formulation} model use one of: {others}")


def _frame(model: Diffusion) -> str:
    """The ODE frame ``heun`` integrates for this model: a flow model's own (x_t in t), else EDM's."""
    return "flow" if model.is_flow else "ve"


@torch.no_grad()
def sample(model: Diffusion, n: int, labels=None, generator=None, sampler: str = "ddim", steps: int = 50,
           guidance: float = 1.0, eta: float = 0.0, schedule: str = "auto",
           clip_denoised: bool = True) -> torch.Tensor:
    """Draw n images (n, C, H, W) in [-1, 1]. ``sampler``: ddim (eta: 0 deterministic .. 1 = DDPM),
    ddpm (ancestral, variance beta_tilde), ddpm-large (ancestral, variance beta; eps/v models only),
    dpmpp-2m, heun (2*steps-1 network calls; EDM's in sigma, a flow model's in t), euler (deterministic DDIM:
    Euler on the ODE in any frame). ``guidance``: classifier-free guidance scale (1 = none)."""
    _check_sampler(model, sampler)
    device = _device(model)
    y = _labels(model, labels, n, device, generator)
    sigmas = make_sigmas(model, sampler, steps, schedule)
    x_T = rng.randn(n, model.channels, model.size, model.size, device=device, generator=generator)
    x_T = x_T * model.prior_std(float(sigmas[0]))
    denoiser = make_denoiser(model, y, guidance, clip_denoised)
    return S.run_sampler(sampler, denoiser, x_T, sigmas, generator, eta=eta, frame=_frame(model)).clamp(-1, 1)


def _image_labels(model: Diffusion, labels, n: int, device) -> torch.Tensor | None:
    """Labels for n given images: one label for all, one per image, or none (null class / random)."""
    if labels is not None and torch.as_tensor(labels).numel() == 1:
        labels = int(torch.as_tensor(labels).item())
    return _labels(model, labels, n, device, None)


@torch.no_grad()
def complete(model: Diffusion, x, mask, labels=None, generator=None, steps: int = 50, resample: int = 5,
             guidance: float = 1.0, schedule: str = "auto", clip_denoised: bool = True) -> torch.Tensor:
    """Inpaint where mask == 0 (RePaint, Lugmayr et al. 2022): ancestral sampling with the known pixels
    replaced by their noised copies before every step and ``resample`` rounds per step. Known pixels
    (mask == 1) come back unchanged. steps * resample network calls."""
    if mask.shape[-2:] != x.shape[-2:]:
        raise ImagegenError(f"mask is {tuple(mask.shape[-2:])} but the image is {tuple(x.shape[-2:])}")
    if resample < 1:
        raise ImagegenError(f"--resample must be >= 1, got {resample}")
    x = x.to(_device(model))
    mask = mask.to(x.device, x.dtype).expand_as(x)
    y = _image_labels(model, labels, x.shape[0], x.device)
    sigmas = make_sigmas(model, "ddpm", steps, schedule)
    x_T = torch.randn(x.shape, device=x.device, generator=generator) * model.prior_std(float(sigmas[0]))
    denoiser = make_denoiser(model, y, guidance, clip_denoised)
    out = S.sample_repaint(denoiser, x_T, sigmas, x, mask, generator, resample=resample)
    return torch.where(mask > 0.5, x, out.clamp(-1, 1))


@torch.no_grad()
def denoise(model: Diffusion, x, strength: float = 0.5, labels=None, generator=None, sampler: str = "ddpm",
            steps: int = 50, guidance: float = 1.0, schedule: str = "auto",
            clip_denoised: bool = True) -> torch.Tensor:
    """SDEdit (Meng et al. 2022): noise the image to the level a fraction ``strength`` of the way up the
    sampling schedule, then run the sampler from there, so the result is a clean image near x.
    strength 0 returns x; 1 ignores it. About ``steps * strength`` network calls."""
    _check_sampler(model, sampler)
    if not 0.0 <= strength <= 1.0:
        raise ImagegenError(f"--strength must lie in [0, 1], got {strength}")
    x = x.to(_device(model))
    if strength == 0:
        return x.clone()
    y = _image_labels(model, labels, x.shape[0], x.device)
    full = make_sigmas(model, sampler, steps, schedule)  # (steps + 1,)
    k = max(1, round(strength * steps))
    sigmas = full[steps - k:]  # the last k steps
    x_start = x + sigmas[0].item() * torch.randn(x.shape, device=x.device, generator=generator)
    denoiser = make_denoiser(model, y, guidance, clip_denoised)
    return S.run_sampler(sampler, denoiser, x_start, sigmas, generator, frame=_frame(model)).clamp(-1, 1)


RESTORE_TASKS = ("inpaint", "sr", "colourise", "denoise")
RESTORE_METHODS = ("auto", "ddnm", "repaint", "noisy-start")


@torch.no_grad()
def restore(model: Diffusion, y_meas, operator, labels=None, generator=None, method: str = "auto",
            sampler: str = "ddim", steps: int = 50, eta: float = 0.85, resample: int = 5, guidance: float = 1.0,
            schedule: str = "auto", clip_denoised: bool = True) -> torch.Tensor:
    """Recover x from y = A(x) + sigma_y n (``operator``: an :class:`imagegen.restoration.Operator`) with
    the model as the prior, using only A and A+ (no backward pass through the network). ``method``:

    - ``ddnm`` (Wang et al. 2023): noiseless, the null-space projection of every x0_hat
      (``samplers.projected_denoiser``) inside ``sampler`` (ddim with ``eta``, ddpm, dpmpp-2m, heun); noisy,
      DDNM+ (``samplers.sample_ddnm``: a scaled range-space correction and reduced step noise; needs eta > 0);
    - ``repaint``: a noiseless mask, by :func:`complete` (RePaint: ``steps * resample`` network calls);
    - ``noisy-start``: the identity with noise: y = x0 + sigma_y n *is* the diffusion state at sigma_y in the
      VE frame, so ``sampler`` runs from y over the schedule's levels below sigma_y (posterior sampling for
      Gaussian denoising, as in Kadkhodaie & Simoncelli 2021 and SNIPS, Kawar et al. 2021).

    ``auto``: repaint for a noiseless mask (so ``complete`` is this function's masked case), noisy-start for
    denoising alone, ddnm otherwise. A noiseless result is projected onto the measurements (A(x) = y)."""
    if method not in RESTORE_METHODS:
        raise ImagegenError(f"--method must be one of {', '.join(RESTORE_METHODS)}, got '{method}'")
    if not isinstance(operator, Operator):
        raise ImagegenError("restore takes an imagegen.restoration.Operator (restoration.parse_task builds one)")
    _check_sampler(model, sampler)
    device = _device(model)
    op = operator.to(device)
    y_meas = y_meas.to(device, torch.float32)
    n = y_meas.shape[0]
    if method == "auto":
        method = ("repaint" if op.mask is not None and op.noiseless else
                  "noisy-start" if op.is_identity else "ddnm")
    if method == "repaint":
        if op.mask is None or not op.noiseless:
            raise ImagegenError("--method repaint is for inpainting without noise; use --method ddnm")
        return complete(model, y_meas, op.mask, labels, generator, steps=steps, resample=resample,
                        guidance=guidance, schedule=schedule, clip_denoised=clip_denoised)
    y = _image_labels(model, labels, n, device)
    denoiser = make_denoiser(model, y, guidance, clip_denoised)
    sigmas = make_sigmas(model, sampler, steps, schedule)  # (steps + 1,)
    if method == "noisy-start":
        if not op.is_identity or op.noiseless:
            raise ImagegenError("--method noisy-start is for denoising alone (task denoise:S); use --method ddnm")
        below = sigmas[sigmas < op.sigma]
        start = min(op.sigma, float(sigmas[0]))
        sigmas = torch.cat([sigmas.new_tensor([start]), below])
        out = S.run_sampler(sampler, denoiser, y_meas.clone(), sigmas, generator, eta=eta)
        return op.finalize(out, y_meas)
    x_T = torch.randn((n, model.channels, model.size, model.size), device=device, generator=generator)
    x_T = x_T * model.prior_std(float(sigmas[0]))
    if op.noiseless:
        projected = S.projected_denoiser(denoiser, lambda x0: op.project(x0, y_meas))
        out = S.run_sampler(sampler, projected, x_T, sigmas, generator, eta=eta)
    else:
        if eta <= 0:
            raise ImagegenError("DDNM+ for a noisy measurement needs --eta > 0 (its noise budget is the step's "
                                "fresh noise); the default is 0.85")
        out = S.sample_ddnm(denoiser, x_T, sigmas, op.forward, op.pinv, y_meas, op.sigma, generator, eta=eta)
    return op.finalize(out, y_meas)


@torch.no_grad()
def invert(model: Diffusion, x: torch.Tensor, steps: int = 50, labels=None, schedule: str = "auto") -> torch.Tensor:
    """DDIM inversion (Song et al. 2021, sec. 4.3; Dhariwal & Nichol 2021, appendix F): integrate the
    probability-flow ODE from the image up to the largest noise level with Euler steps. Returns the
    latent x_T in the VE frame; ``sample_ddim`` from it (same schedule) reconstructs x approximately."""
    y = _image_labels(model, labels, x.shape[0], x.device)
    sigmas = make_sigmas(model, "ddim", steps, schedule)[:-1].flip(0)  # ascending, without the 0
    denoiser = make_denoiser(model, y, 1.0, clip_denoised=False)
    return S.sample_ddim(denoiser, x, sigmas)


@torch.no_grad()
def interpolate(model: Diffusion, a, b, frames: int = 8, labels=None, generator=None, steps: int = 50,
                schedule: str = "auto", seeds: tuple[int, int] | None = None) -> torch.Tensor:
    """Frames from a to b: DDIM-invert both images to x_T, spherically interpolate the latents
    (they are near-Gaussian, so slerp keeps their norm; Song et al. 2021, sec. 5.3) and decode each
    with deterministic DDIM. The end frames are the DDIM reconstructions of a and b. With
    ``seeds=(s1, s2)`` instead of images, interpolate between the starting noises of those two seeds."""
    if frames < 2:
        raise ImagegenError(f"--frames must be >= 2, got {frames}")
    labels = strip_label(labels, "diffusion")
    device = _device(model)
    sigmas = make_sigmas(model, "ddim", steps, schedule)
    if seeds is not None:
        shape = (1, model.channels, model.size, model.size)
        z = torch.cat([torch.randn(shape, device=device, generator=torch.Generator(device).manual_seed(int(s)))
                       for s in seeds]) * model.prior_std(float(sigmas[0]))  # (2, C, H, W)
    elif a is None or b is None:
        raise ImagegenError("interpolation needs two images (--a A.png --b B.png) or two seeds (--seeds 1,2)")
    else:
        z = invert(model, torch.cat([a.to(device), b.to(device)]), steps, labels=labels,
                   schedule=schedule)  # (2, C, H, W)
    t = torch.linspace(0, 1, frames, device=device)
    z_t = slerp(z[:1].expand(frames, *z.shape[1:]), z[1:].expand(frames, *z.shape[1:]), t)
    y = _image_labels(model, labels, frames, device)
    denoiser = make_denoiser(model, y, 1.0, clip_denoised=True)
    return S.sample_ddim(denoiser, z_t, sigmas).clamp(-1, 1)


# ------------------------------------------------------------------------------------------ likelihood

NLL_KIND = ("variational upper bound on -log p(x) (Ho et al. 2020, eq. 5), one draw of x_t per term; "
            "discretised Gaussian decoder")
NLL_VARIANCES = ("posterior", "beta")


def normal_kl(mean_q: torch.Tensor, var_q: torch.Tensor, mean_p: torch.Tensor,
              var_p: torch.Tensor) -> torch.Tensor:
    """KL(N(mean_q, var_q) || N(mean_p, var_p)) elementwise, in nats (arguments broadcast)."""
    return 0.5 * (torch.log(var_p / var_q) + var_q / var_p - 1.0 + (mean_q - mean_p) ** 2 / var_p)


def _log_ndtr_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log(Phi(b) - Phi(a)) for a < b, accurate in both tails: an interval in the upper half is mirrored
    into the lower one (Phi(b) - Phi(a) = Phi(-a) - Phi(-b)), where log_ndtr keeps full precision, and
    log(Phi(hi) - Phi(lo)) = log Phi(hi) + log(1 - exp(log Phi(lo) - log Phi(hi)))."""
    flip = (a + b) > 0
    lo, hi = torch.where(flip, -b, a), torch.where(flip, -a, b)
    log_hi = torch.special.log_ndtr(hi)
    return log_hi + torch.log(-torch.expm1(torch.special.log_ndtr(lo) - log_hi))


def snap_to_levels(x: torch.Tensor, levels: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(level index k in 0..levels-1, the level -1 + 2k/(levels-1) in float64) nearest to each x: the bin
    that contains x. Data from the 8-bit pipeline is on the grid only up to float32 rounding."""
    k = torch.round((x.double() + 1) * ((levels - 1) / 2)).clamp(0, levels - 1)
    return k, k * (2.0 / (levels - 1)) - 1


def discretized_gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor | float,
                                  levels: int = 256) -> torch.Tensor:
    """log P(x) elementwise under N(mean, std^2) integrated over the bin of the ``levels``-level grid of
    [-1, 1] that contains x (256 levels: bins 2/255 wide; 2 levels, binary data: the bins (-inf, 0] and
    (0, inf)), the two edge bins open to -inf and +inf, so the probabilities of the levels sum to 1:
    DDPM's decoder p(x0 | x1) (Ho et al. 2020, eq. 13). Bin edges are computed in float64 from the level
    index (float32 levels would leave gaps between bins); no clamping of tiny probabilities."""
    if levels < 2:
        raise ImagegenError(f"a discretised decoder needs at least 2 levels, got {levels}")
    k, centre = snap_to_levels(x, levels)
    half = 1.0 / (levels - 1)  # half a bin
    upper = (centre + half - mean) / std
    lower = (centre - half - mean) / std
    log_cdf_upper = torch.special.log_ndtr(upper)  # lowest level: P(X < -1 + half)
    log_sf_lower = torch.special.log_ndtr(-lower)  # highest level: P(X > 1 - half)
    log_mid = _log_ndtr_diff(lower, upper)
    return torch.where(k == 0, log_cdf_upper, torch.where(k == levels - 1, log_sf_lower, log_mid))


def _vb_schedule(model: Diffusion, variance: str, device) -> dict:
    """The process's constants in float64 (rebuilt from the config, not the float32 buffers), 0-based:
    index i is the paper's t = i + 1. ``var_p`` is the reverse process's fixed variance sigma_t^2."""
    cfg = model.cfg
    betas = make_betas(cfg.schedule, cfg.num_timesteps, cfg.beta_start, cfg.beta_end).to(device)
    abar = torch.cumprod(1 - betas, 0)
    abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
    var_q = betas * (1 - abar_prev) / (1 - abar)  # beta_tilde_t (Ho et al. eq. 7); 0 at t = 1
    if variance == "posterior":
        # at t = 1 beta_tilde is 0; the decoder takes beta_tilde_2 (as improved-diffusion's
        # posterior_log_variance_clipped does)
        var_p = torch.cat([var_q[1:2] if len(var_q) > 1 else betas[:1], var_q[1:]])
    else:
        var_p = betas
    return {"abar": abar, "var_q": var_q, "var_p": var_p,
            "coef_x0": betas * abar_prev.sqrt() / (1 - abar),  # posterior mean (Ho et al. eq. 7)
            "coef_xt": (1 - abar_prev) * (1 - betas).sqrt() / (1 - abar)}


def _vb_x0_hat(model: Diffusion, x0: torch.Tensor, t: torch.Tensor, y, sched: dict, clip: bool,
               generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw x_t ~ q(x_t | x0) (Ho et al. eq. 4) at the 0-based steps t (N,) and predict x0 from it with
    the network at the discrete t it was trained on. Returns (x_t, x0_hat), float64 (N, C, H, W)."""
    abar = sched["abar"][t].view(-1, 1, 1, 1)
    noise = torch.randn(x0.shape, device=x0.device, generator=generator, dtype=torch.float64)
    # the net sees float32; use that same rounded x_t in the float64 arithmetic below
    x_t = (abar.sqrt() * x0 + (1 - abar).sqrt() * noise).float()
    out = model._net(x_t, t.float(), y).double()
    x_t = x_t.double()
    if model.cfg.formulation == "eps":
        x0_hat = (x_t - (1 - abar).sqrt() * out) / abar.sqrt()
    else:  # v: x0 = sqrt(abar) x_t - sqrt(1 - abar) v
        x0_hat = abar.sqrt() * x_t - (1 - abar).sqrt() * out
    return x_t, (x0_hat.clamp(-1, 1) if clip else x0_hat)


def _nll_labels(model: Diffusion, labels, n: int, device) -> torch.Tensor | None:
    """``_image_labels``, except that without labels a conditional model must have the null class (the
    unconditional model): random classes would make the bound a different number on every call."""
    if labels is None and model.num_classes and model.cfg.label_dropout <= 0:
        raise ImagegenError("this class-conditional model was trained without label dropout, so it has no "
                            "unconditional p(x): pass labels (imagegen eval-nll reports the marginal over labels)")
    return _image_labels(model, labels, n, device)


@torch.no_grad()
def nll(model: Diffusion, x: torch.Tensor, labels=None, t_samples: int | None = None, variance: str = "posterior",
        clip_denoised: bool = True, max_batch: int = 256, generator: torch.Generator | None = None) -> torch.Tensor:
    """Upper bound on -log p(x) in nats per image (B,): the discrete-time variational bound of Ho et al.
    2020, eq. 5 (Nichol & Dhariwal 2021, eqs. 4-6), with t = 1..T the paper's steps,

        L = KL(q(x_T|x0) || N(0, I)) + sum_{t=2..T} KL(q(x_{t-1}|x_t, x0) || p(x_{t-1}|x_t)) - log p(x0|x1)

    p(x_{t-1}|x_t) = N(mu, sigma_t^2 I) with mu the posterior mean q(x_{t-1}|x_t, x0_hat) at the network's
    x0 prediction (eps or v) and a fixed variance: ``variance="posterior"`` sigma_t^2 = beta_tilde_t (the
    variance the ancestral sampler uses; the decoder at t = 1, where beta_tilde is 0, takes beta_tilde_2),
    ``"beta"`` sigma_t^2 = beta_t. The decoder p(x0|x1) is N(x0_hat, sigma_1^2) discretised to the data's
    levels (256, or 2 for binary data; ``discretized_gaussian_log_prob``); x is read as its nearest level.
    ``clip_denoised`` clips x0_hat to [-1, 1] as the sampler does, so the bound is for the model that is
    sampled.

    Each KL term is an expectation over x_t ~ q(x_t|x0), estimated with one draw (as in improved-diffusion),
    so the number is an unbiased estimate of the bound. Cost: T network calls per image. ``t_samples=k``
    (default ``model.nll_t_samples``; 0 = all) draws k of the T-1 KL terms uniformly with replacement for
    each image and scales their mean by T-1: unbiased, k + 1 network calls per image; the prior and
    decoder terms are always computed, never sampled. ``max_batch`` caps the images per network call
    (the steps of a batch are stacked into one call). The sums are in float64. VP formulations (eps, v)
    only; runs in eval mode under no_grad on the model's device."""
    if model.is_flow:
        raise ImagegenError("formulation=flow has no variational bound, and the exact likelihood of its ODE is not "
                            "implemented: train with --set model.formulation=eps (or v) to measure likelihood")
    if not model.is_vp:
        raise ImagegenError("nll needs a discrete-time (DDPM) model; formulation=edm has no variational bound "
                            "here: train with --set model.formulation=eps (or v) to measure likelihood")
    if variance not in NLL_VARIANCES:
        raise ImagegenError(f"variance must be one of {', '.join(NLL_VARIANCES)}, got '{variance}'")
    t_samples = model.cfg.nll_t_samples if t_samples is None else int(t_samples)
    if t_samples < 0:
        raise ImagegenError(f"t_samples must be >= 0 (0: all terms), got {t_samples}")
    if max_batch < 1:
        raise ImagegenError(f"max_batch must be >= 1, got {max_batch}")
    device = _device(model)
    levels = 2 ** model.bits
    x0 = snap_to_levels(x.to(device), levels)[1]  # (B, C, H, W) float64, exactly on the data's grid
    b = x0.shape[0]
    if b == 0:
        return x0.new_zeros(0)
    num_t = model.cfg.num_timesteps
    y = _nll_labels(model, labels, b, device)
    sched = _vb_schedule(model, variance, device)
    was_training = model.training
    model.eval()
    try:
        # L_T: KL(N(sqrt(abar_T) x0, 1 - abar_T) || N(0, 1)), no network
        abar_T = sched["abar"][-1]
        prior = normal_kl(abar_T.sqrt() * x0, 1 - abar_T, torch.zeros_like(x0), abar_T.new_ones(()))
        prior = prior.flatten(1).sum(1)  # (B,)

        # L_0 = -log p(x0 | x1)
        t0 = torch.zeros(b, device=device, dtype=torch.long)
        _, x0_hat = _vb_x0_hat(model, x0, t0, y, sched, clip_denoised, generator)
        decoder = -discretized_gaussian_log_prob(x0, x0_hat, sched["var_p"][0].sqrt(), levels).flatten(1).sum(1)

        # L_{t-1}, t = 2..T: 0-based steps 1..T-1, all of them or k drawn per image
        full = t_samples == 0 or num_t == 1
        k = num_t - 1 if full else t_samples
        if full:
            steps = torch.arange(1, num_t, device=device).expand(b, k)  # (B, k)
        else:
            steps = torch.randint(1, num_t, (b, k), device=device, generator=generator)
        terms = torch.zeros(b, device=device, dtype=torch.float64)
        per_call = max(1, max_batch // b)
        for start in range(0, k, per_call):
            t = steps[:, start:start + per_call].T.reshape(-1)  # (m * B,), step-major
            m = t.shape[0] // b
            x0_m = x0.repeat(m, 1, 1, 1)
            y_m = None if y is None else y.repeat(m)
            x_t, x0_hat = _vb_x0_hat(model, x0_m, t, y_m, sched, clip_denoised, generator)
            c0, ct = sched["coef_x0"][t].view(-1, 1, 1, 1), sched["coef_xt"][t].view(-1, 1, 1, 1)
            kl = normal_kl(c0 * x0_m + ct * x_t, sched["var_q"][t].view(-1, 1, 1, 1),
                           c0 * x0_hat + ct * x_t, sched["var_p"][t].view(-1, 1, 1, 1))
            terms += kl.flatten(1).sum(1).view(m, b).sum(0)
        middle = terms if full else terms * ((num_t - 1) / k)
    finally:
        model.train(was_training)
    return prior + middle + decoder


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["Config", "Diffusion", "NAME", "NLL_KIND", "PREVIEW_OPTIONS", "TEST_CONFIG", "TRAIN_DEFAULTS", "UNet",
           "build", "complete", "denoise", "restore", "discretized_gaussian_log_prob", "interpolate", "invert",
           "make_denoiser", "make_sigmas", "nll", "normal_kl", "sample", "snap_to_levels", "train_step"]
