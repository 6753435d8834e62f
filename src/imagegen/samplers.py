"""Diffusion samplers as pure functions of (denoiser, starting noise, schedule, generator).

Every sampler works in the "variance exploding" frame of Karras et al. 2022 (EDM): a noisy image is
``x = x0 + sigma * n`` with ``n ~ N(0, I)``, and a *denoiser* ``D(x, sigma) -> x0_hat`` is all a
sampler needs. A variance-preserving (DDPM) model with ``x_vp = sqrt(abar) x0 + sqrt(1 - abar) n`` fits
this frame through ``x = x_vp / sqrt(abar)`` and ``sigma = sqrt((1 - abar) / abar)`` (EDM sec. 2 and
appendix C.1); the family module does that wrapping, so one sampler serves DDPM-eps, v-prediction and
EDM models alike, and a step here equals the corresponding ``diffusers`` scheduler step on the same
inputs (tests/test_samplers.py checks this).

A *schedule* is a 1-D tensor of noise levels ``sigmas``, descending, normally ending with 0. No sampler
keeps state between calls: the same inputs and the same generator state give the same output.

A flow-matching model (rectified flow: x_t = (1 - t) x0 + t n, Lipman et al. 2023; Liu et al. 2023) is
the same frame once more: x = x_t / (1 - t) and sigma = t / (1 - t), i.e. t = sigma / (1 + sigma).
``uniform_t_sigmas`` is its usual grid (uniform in t), ``sample_euler`` its Euler sampler (which is
exactly deterministic DDIM) and ``sample_flow_heun`` Heun's method on its ODE dx_t/dt = v in t.

Guidance is composed outside the samplers: ``guided_denoiser`` turns a conditional denoiser into the
classifier-free-guided one (Ho & Salimans 2022, eq. 6), and a scale of 1 returns the denoiser itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from . import rng

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x (B,C,H,W), sigma ()) -> x0_hat

SAMPLERS = ("ddpm", "ddpm-large", "ddim", "dpmpp-2m", "heun", "euler")
# the ODE a second-order sampler integrates: EDM's x = x0 + sigma n in sigma ("ve"), or the flow-matching
# x_t = x / (1 + sigma) in t = sigma / (1 + sigma) ("flow"); first-order steps are the same in both
FRAMES = ("ve", "flow")


# ------------------------------------------------------------------------------------------ schedules


def karras_sigmas(sigma_min: float, sigma_max: float, steps: int, rho: float = 7.0) -> torch.Tensor:
    """EDM's time steps (Karras et al. 2022, eq. 5): evenly spaced in sigma^(1/rho), then a final 0.
    Returns (steps + 1,) float32, descending."""
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    inv_min, inv_max = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (inv_max + ramp * (inv_min - inv_max)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)]).float()


def discrete_timesteps(num_train_steps: int, steps: int, spacing: str = "trailing") -> np.ndarray:
    """Which of the T training time steps a ``steps``-step sampler visits, descending, as the
    ``diffusers`` schedulers choose them (their ``timestep_spacing``):

    - ``leading``  (DDIM paper, diffusers' DDIM/DDPM default): 0, T/N, 2T/N, ... -> never visits t = T-1
    - ``linspace`` (diffusers' DPM-Solver default): round(linspace(0, T-1, N+1)) without its 0
    - ``trailing`` (Lin et al. 2024, "Common diffusion noise schedules are flawed"): starts at t = T-1,
      which is what a few-step sampler wants.
    """
    if steps < 1:
        raise ValueError("steps must be >= 1")
    steps = min(steps, num_train_steps)
    if spacing == "leading":
        ratio = num_train_steps // steps
        return (np.arange(0, steps) * ratio).round()[::-1].astype(np.int64)
    if spacing == "linspace":
        return np.linspace(0, num_train_steps - 1, steps + 1).round()[::-1][:-1].astype(np.int64)
    if spacing == "trailing":
        return (np.round(np.arange(num_train_steps, 0, -num_train_steps / steps)) - 1).astype(np.int64)
    raise ValueError(f"unknown timestep spacing '{spacing}' (leading, linspace, trailing)")


def discrete_sigmas(train_sigmas: torch.Tensor, steps: int, spacing: str = "trailing") -> torch.Tensor:
    """Noise levels of a DDPM-style model (``train_sigmas[t]`` for t = 0..T-1, ascending) at the time
    steps ``discrete_timesteps`` picks, followed by 0 (the clean image). (steps + 1,) float32."""
    ts = torch.from_numpy(discrete_timesteps(len(train_sigmas), steps, spacing).copy())
    sigmas = train_sigmas.detach().float().cpu()[ts]
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def uniform_t_sigmas(sigma_max: float, steps: int) -> torch.Tensor:
    """The flow-matching grid: t uniform from t_max = sigma_max / (1 + sigma_max) down to 0, as VE noise
    levels sigma = t / (1 - t). (steps + 1,) float32, descending, ending with 0. t = 1 itself would be
    sigma = inf (x = x_t / 0), which the VE frame cannot hold, so the grid starts just below it: for a
    flow model ``flow_t_max`` = 1 - 1e-4 (sigma 9999), where the marginal (1 - t) x0 + t n differs from the
    N(0, t^2 I) the sampler starts from by 1e-4 x0, and float32 still keeps x / (1 + sigma) to ~1e-7."""
    if steps < 1:
        raise ValueError("steps must be >= 1")
    t_max = sigma_max / (1 + sigma_max)
    t = torch.linspace(t_max, 0, steps + 1, dtype=torch.float64)
    return (t / (1 - t)).float()


def vp_sigmas(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """sigma_t = sqrt((1 - abar_t) / abar_t): the VE noise level of a VP time step (EDM eq. 6 / C.1)."""
    return ((1 - alphas_cumprod) / alphas_cumprod).sqrt()


# ------------------------------------------------------------------------------------------ guidance


def guided_denoiser(denoiser_cond: Denoiser, denoiser_uncond: Denoiser | None, scale: float) -> Denoiser:
    """Classifier-free guidance (Ho & Salimans 2022, eq. 6, written for x0 instead of eps - the same
    thing because x0 and eps are affine in each other at fixed x and sigma):
    D = D_uncond + scale * (D_cond - D_uncond). ``scale == 1`` returns ``denoiser_cond`` itself, so
    guidance 1 is exactly the unguided sampler (and costs one network call, not two)."""
    if scale == 1.0 or denoiser_uncond is None:
        return denoiser_cond

    def guided(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        cond, uncond = denoiser_cond(x, sigma), denoiser_uncond(x, sigma)
        return uncond + scale * (cond - uncond)

    return guided


# ------------------------------------------------------------------------------------------ samplers


def _noise_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return rng.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)  # per image with ImageGenerators


def _step_down(x: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor, sigma_down: torch.Tensor,
               noise_std: torch.Tensor | float, generator: torch.Generator | None) -> torch.Tensor:
    """The update every ancestral sampler shares: x0_hat + sigma_down * eps_hat with eps_hat = (x - x0_hat)
    / sigma, plus fresh noise of std ``noise_std`` (none drawn when it is 0)."""
    x = x0 + sigma_down * (x - x0) / sigma
    if noise_std > 0:
        x = x + noise_std * _noise_like(x, generator)
    return x


def ancestral_sigmas(sigma: torch.Tensor, sigma_next: torch.Tensor, eta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a step sigma -> sigma_next into a deterministic part down to ``sigma_down`` and fresh
    noise of std ``sigma_up`` with sigma_down^2 + sigma_up^2 = sigma_next^2. ``sigma_up`` is DDIM's
    sigma_t(eta) (Song et al. 2021, eq. 16) in the VE frame:
    eta * sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2)."""
    if eta == 0 or sigma_next == 0:
        return sigma_next, torch.zeros_like(sigma_next)
    sigma_up = eta * (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2).clamp_min(0).sqrt()
    sigma_up = torch.minimum(sigma_up, sigma_next)
    sigma_down = (sigma_next**2 - sigma_up**2).clamp_min(0).sqrt()
    return sigma_down, sigma_up


@torch.no_grad()
def sample_ddim(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor,
                generator: torch.Generator | None = None, eta: float = 0.0) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12). With eta = 0 it is Euler's method on the probability-flow ODE
    dx/dsigma = (x - D(x, sigma)) / sigma (EDM sec. 4): x_next = x0_hat + sigma_next * eps_hat with
    eps_hat = (x - x0_hat) / sigma. eta > 0 replaces part of eps_hat by fresh noise; eta = 1 is the
    DDPM posterior (see ``sample_ddpm``). Works for ascending ``sigmas`` too (eta = 0): that is DDIM
    inversion. ``x`` is the starting point at ``sigmas[0]``."""
    sigmas = sigmas.to(device=x.device, dtype=x.dtype)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoiser(x, sigma)
        sigma_down, sigma_up = ancestral_sigmas(sigma, sigma_next, eta) if sigma_next < sigma \
            else (sigma_next, 0.0)
        x = _step_down(x, x0, sigma, sigma_down, sigma_up, generator)
    return x


@torch.no_grad()
def sample_ddpm(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Ancestral sampling from the DDPM posterior q(x_s | x_t, x0 = x0_hat) (Ho et al. 2020, eqs. 6-7,
    "fixed small" variance beta_tilde). Song et al. 2021 (sec. 4.1) show this is DDIM with eta = 1 -
    mean and variance agree for any pair of steps t > s - so it is computed by the same update; for a
    skipped schedule it is the posterior between the visited steps, as in diffusers' DDPMScheduler."""
    return sample_ddim(denoiser, x, sigmas, generator, eta=1.0)


@torch.no_grad()
def sample_ddpm_large(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Ancestral sampling with DDPM's "fixed large" variance sigma_t^2 = beta_t (Ho et al. 2020, sec.
    3.2; diffusers' ``variance_type='fixed_large'``): the posterior mean of ``sample_ddpm`` with the
    step's beta in place of beta_tilde. beta is a variance-preserving quantity: with abar = 1 / (1 +
    sigma^2), beta_{t|s} = 1 - abar_t / abar_s, which in the VE frame (divided by abar_s) is
    (sigma^2 - sigma_next^2) (1 + sigma_next^2) / (1 + sigma^2). So this sampler is for DDPM-style
    models (eps or v) with unit-variance data scaling; the step to sigma = 0 adds no noise."""
    sigmas = sigmas.to(device=x.device, dtype=x.dtype)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoiser(x, sigma)
        sigma_down, _ = ancestral_sigmas(sigma, sigma_next, 1.0)
        std = ((sigma**2 - sigma_next**2) * (1 + sigma_next**2) / (1 + sigma**2)).clamp_min(0).sqrt() \
            if sigma_next > 0 else 0.0
        x = _step_down(x, x0, sigma, sigma_down, std, generator)
    return x


@torch.no_grad()
def sample_dpmpp_2m(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", algorithm 2), the multistep second-order
    solver of the data-prediction ODE in lambda = -log sigma. Uses the previous step's x0_hat for a
    linear correction, first order on the first step and on the step to sigma = 0 (as diffusers does
    with ``final_sigmas_type='zero'``). One network call per step; ``generator`` is unused."""
    sigmas = sigmas.to(device=x.device, dtype=x.dtype)
    old_x0, h_last = None, None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoiser(x, sigma)
        if sigma_next == 0:
            x = x0
            break
        h = torch.log(sigma) - torch.log(sigma_next)  # lambda_next - lambda
        if old_x0 is None:
            d = x0
        else:
            r = h_last / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * old_x0
        # x_next = (sigma_next / sigma) x - (e^{-h} - 1) D   (DPM-Solver++ eq. 9 in the VE frame)
        x = (sigma_next / sigma) * x - torch.expm1(-h) * d
        old_x0, h_last = x0, h
    return x


@torch.no_grad()
def sample_heun(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor,
                generator: torch.Generator | None = None, s_churn: float = 0.0, s_tmin: float = 0.0,
                s_tmax: float = float("inf"), s_noise: float = 1.0) -> torch.Tensor:
    """EDM's second-order sampler (Karras et al. 2022, algorithm 2; with ``s_churn = 0`` algorithm 1,
    deterministic): an Euler step of dx/dsigma = (x - D(x, sigma)) / sigma, corrected by the trapezoidal
    rule except on the last step to sigma = 0. 2 * steps - 1 network calls."""
    sigmas = sigmas.to(device=x.device, dtype=x.dtype)
    n = len(sigmas) - 1
    for i in range(n):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        gamma = min(s_churn / n, math.sqrt(2) - 1) if s_tmin <= float(sigma) <= s_tmax else 0.0
        if gamma > 0:  # "churn": raise the noise level to sigma_hat by adding fresh noise
            sigma_hat = sigma * (1 + gamma)
            x = x + (sigma_hat**2 - sigma**2).sqrt() * s_noise * _noise_like(x, generator)
            sigma = sigma_hat
        d = (x - denoiser(x, sigma)) / sigma
        x_next = x + (sigma_next - sigma) * d
        if sigma_next > 0:
            d_next = (x_next - denoiser(x_next, sigma_next)) / sigma_next
            x_next = x + (sigma_next - sigma) * (d + d_next) / 2
        x = x_next
    return x


@torch.no_grad()
def sample_euler(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Euler's method on the probability-flow ODE, which is deterministic DDIM in every frame: in the VE
    frame the step is x_next = x0_hat + sigma_next eps_hat (EDM sec. 4), and in a flow model's frame
    (x_t = x / (1 + sigma), t = sigma / (1 + sigma)) Euler on dx_t/dt = v_hat = eps_hat - x0_hat gives
    x_t + (t_next - t) v_hat = (1 - t_next) x0_hat + t_next eps_hat, the same point (tests/test_flow.py
    checks it numerically). The flow-matching papers' sampler (Liu et al. 2023; Esser et al. 2024).
    One network call per step; ``generator`` is unused."""
    return sample_ddim(denoiser, x, sigmas, generator, eta=0.0)


@torch.no_grad()
def sample_flow_heun(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Heun's method (the explicit trapezoidal rule) on a flow model's ODE dx_t/dt = v(x_t, t), in its
    own frame x_t = x / (1 + sigma), t = sigma / (1 + sigma), with v_hat = (x_t - x0_hat) / t; Euler on
    the last step to t = 0, where v cannot be read from x0_hat (as EDM's algorithm 1 and diffusers'
    FlowMatchHeunDiscreteScheduler do). 2 * steps - 1 network calls. EDM's ``sample_heun`` on the same
    points is a different method: its trapezoid is in sigma, and with a flow grid starting at sigma ~ 1e4
    its first steps are far less accurate (on a Gaussian, 64 uniform-t steps: max error 7e-2 against 2.4e-3
    here). ``x`` and the result are in the VE frame, like every other sampler's; ``generator`` is unused."""
    sigmas = sigmas.to(device=x.device, dtype=x.dtype)
    ts = sigmas / (1 + sigmas)
    x_t = x / (1 + sigmas[0])

    def velocity(x_t, sigma, t):
        return (x_t - denoiser(x_t * (1 + sigma), sigma)) / t

    for i in range(len(sigmas) - 1):
        t, t_next = ts[i], ts[i + 1]
        v = velocity(x_t, sigmas[i], t)
        x_next = x_t + (t_next - t) * v
        if t_next > 0:
            v_next = velocity(x_next, sigmas[i + 1], t_next)
            x_next = x_t + (t_next - t) * (v + v_next) / 2
        x_t = x_next
    return x_t * (1 + sigmas[-1])


@torch.no_grad()
def sample_repaint(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, x_known: torch.Tensor,
                   mask: torch.Tensor, generator: torch.Generator | None = None, resample: int = 1,
                   eta: float = 1.0) -> torch.Tensor:
    """Inpainting by replacement with RePaint's resampling (Lugmayr et al. 2022, algorithm 1, jump
    length 1). Before every step the known pixels (``mask == 1``) are replaced by ``x_known`` noised to
    the current level; after a step, for ``resample - 1`` extra rounds the state is noised back up
    (x + sqrt(sigma^2 - sigma_next^2) z, the forward process) and the step redone, which lets the
    unknown region harmonise with the known one. The returned known pixels equal ``x_known`` exactly."""
    sigmas = sigmas.to(device=x.device, dtype=x.dtype)
    mask = mask.to(x.dtype).expand_as(x)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        for u in range(max(1, resample)):
            known = x_known + sigma * _noise_like(x, generator)
            x = mask * known + (1 - mask) * x
            x0 = denoiser(x, sigma)
            sigma_down, sigma_up = ancestral_sigmas(sigma, sigma_next, eta)
            x_new = _step_down(x, x0, sigma, sigma_down, sigma_up, generator)
            if u < resample - 1 and sigma_next > 0:  # go back up one step: q(x_t | x_{t-1})
                x = x_new + (sigma**2 - sigma_next**2).sqrt() * _noise_like(x, generator)
            else:
                x = x_new
                break
    return torch.where(mask > 0.5, x_known, x)


def projected_denoiser(denoiser: Denoiser, project: Callable[[torch.Tensor], torch.Tensor]) -> Denoiser:
    """DDNM's range-null space decomposition as a denoiser (Wang et al. 2023, eq. 8 and algorithm 1):
    every x0_hat is replaced by ``project(x0_hat)`` = A+ y + (I - A+ A) x0_hat, which keeps the part of
    x0_hat that the measurement y cannot see and takes the rest from y. Any sampler above then solves a
    noiseless linear inverse problem with no backward pass through the network."""

    def projected(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return project(denoiser(x, sigma))

    return projected


@torch.no_grad()
def sample_ddnm(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor,
                forward: Callable[[torch.Tensor], torch.Tensor], pinv: Callable[[torch.Tensor], torch.Tensor],
                y: torch.Tensor, sigma_y: float = 0.0, generator: torch.Generator | None = None,
                eta: float = 0.85) -> torch.Tensor:
    """DDNM+ (Wang et al. 2023, sec. 3.3, eqs. 17-19) in the VE frame, for y = A x0 + sigma_y n: before each
    ancestral DDIM step (``eta``; DDNM's default 0.85) the denoiser's x0_hat is corrected in the range
    space, x0_hat <- x0_hat - lam A+(A x0_hat - y). The step x_next = x0_hat + sigma_down eps_hat + gamma z
    carries x0_hat with the weight a = 1 - sigma_down / sigma, so the correction brings noise of std
    a * lam * sigma_y into x_next (per pixel, for operators whose A+ keeps the noise's std, as replication
    and masking do); lam = min(1, sigma_up / (a sigma_y)) and gamma = sqrt(sigma_up^2 - (a lam sigma_y)^2)
    keep the step's total noise at sigma_up. On a step without fresh noise (the last, to sigma = 0) the paper's
    rule gives lam = 0 for any sigma_y > 0; here lam = sigma^2 / (sigma^2 + sigma_y^2) instead, so the result
    tends to the noiseless one as sigma_y -> 0. With sigma_y = 0 this is DDNM itself: lam = 1, the
    null-space projection, at every step including the last, so the result satisfies A x = y."""
    sigmas = sigmas.to(device=x.device, dtype=x.dtype)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoiser(x, sigma)
        sigma_down, sigma_up = ancestral_sigmas(sigma, sigma_next, eta)
        gamma = sigma_up
        if sigma_y > 0 and sigma_up > 0:
            a = float(1 - sigma_down / sigma)
            lam = min(1.0, float(sigma_up) / (a * sigma_y)) if a > 0 else 1.0
            gamma = (sigma_up**2 - (a * lam * sigma_y) ** 2).clamp_min(0).sqrt()
        elif sigma_y > 0:  # a step without fresh noise (the last one): no budget to spend, so weigh y
            # against x0_hat as a Kalman gain would, taking sigma^2 as x0_hat's error variance (x itself
            # is an estimate of x0 with that variance); continuous in sigma_y, 1 as sigma_y -> 0
            lam = float(sigma**2 / (sigma**2 + sigma_y**2))
        else:
            lam = 1.0
        x0 = x0 - lam * pinv(forward(x0) - y)
        x = _step_down(x, x0, sigma, sigma_down, gamma, generator)
    return x


def run_sampler(name: str, denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor,
                generator: torch.Generator | None = None, eta: float = 0.0, frame: str = "ve") -> torch.Tensor:
    """Dispatch by name (the CLI's ``--sampler``). ``frame``: the ODE ``heun`` integrates (``FRAMES``);
    a flow model's family passes "flow"."""
    if frame not in FRAMES:
        raise ValueError(f"unknown frame '{frame}'; available: {', '.join(FRAMES)}")
    if name == "euler":
        return sample_euler(denoiser, x, sigmas, generator)
    if name == "heun" and frame == "flow":
        return sample_flow_heun(denoiser, x, sigmas, generator)
    if name == "ddim":
        return sample_ddim(denoiser, x, sigmas, generator, eta=eta)
    if name == "ddpm":
        return sample_ddpm(denoiser, x, sigmas, generator)
    if name == "ddpm-large":
        return sample_ddpm_large(denoiser, x, sigmas, generator)
    if name == "dpmpp-2m":
        return sample_dpmpp_2m(denoiser, x, sigmas, generator)
    if name == "heun":
        return sample_heun(denoiser, x, sigmas, generator)
    raise ValueError(f"unknown sampler '{name}'; available: {', '.join(SAMPLERS)}")


def network_calls(name: str, steps: int) -> int:
    """Number of denoiser evaluations (NFE) a sampler makes for ``steps`` steps ending at sigma = 0."""
    return 2 * steps - 1 if name == "heun" else steps


__all__ = ["FRAMES", "SAMPLERS", "ancestral_sigmas", "discrete_sigmas", "discrete_timesteps", "guided_denoiser",
           "karras_sigmas", "network_calls", "projected_denoiser", "run_sampler", "sample_ddim", "sample_ddnm",
           "sample_ddpm", "sample_ddpm_large", "sample_dpmpp_2m", "sample_euler", "sample_flow_heun", "sample_heun",
           "sample_repaint", "uniform_t_sigmas", "vp_sigmas"]
