"""Samplers: equal to diffusers' schedulers step for step, exact on a Gaussian, pure and reproducible."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from imagegen import samplers as S
from imagegen.data import DataInfo
from imagegen.families import diffusion as D

diffusers = pytest.importorskip("diffusers", reason="diffusers is a test dependency: pip install -e .[test]")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy 2 notice inside diffusers

T = 1000


class FakeEps(nn.Module):
    """A smooth, nonlinear, time-dependent stand-in for a trained eps network: eps_hat(x_vp, t)."""

    def forward(self, x, t, y=None):
        t = t.float().view(-1, 1, 1, 1) / T
        return 0.7 * torch.tanh(x) * (1 - 0.5 * t) + 0.1 * torch.sin(3 * x) + 0.05 * t


def fake_model(schedule: str, formulation: str = "eps") -> D.Diffusion:
    cfg = D.Config(base_channels=8, channel_mult=[1], num_res_blocks=1, attn_resolutions=[],
                   formulation=formulation, schedule=schedule, num_timesteps=T)
    model = D.build(cfg, DataInfo(channels=2, size=4)).eval()
    model.unet = FakeEps()  # forward signature (x, noise_label, y) as the UNet's
    return model


def diffusers_loop(scheduler, steps: int, x_T: torch.Tensor, generator, **step_kw) -> torch.Tensor:
    net = FakeEps()
    scheduler.set_timesteps(steps)
    x = x_T
    for t in scheduler.timesteps:
        eps = net(x, t.expand(x.shape[0]))
        x = scheduler.step(eps, t, x, generator=generator, **step_kw).prev_sample
    return x


BETAS = {"linear": "linear", "cosine": "squaredcos_cap_v2"}


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_alphas_cumprod_match_diffusers(schedule):
    ref = diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule=BETAS[schedule]).alphas_cumprod
    ours = fake_model(schedule).alphas_cumprod
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("spacing", ["leading", "linspace", "trailing"])
@pytest.mark.parametrize("steps", [1, 7, 50])
def test_timesteps_match_diffusers(spacing, steps):
    # our "linspace" is DPM-Solver's (N + 1 points without the 0); DDIM's linspace differs
    cls = diffusers.DPMSolverMultistepScheduler if spacing == "linspace" else diffusers.DDIMScheduler
    sch = cls(num_train_timesteps=T, timestep_spacing=spacing)
    sch.set_timesteps(steps)
    np.testing.assert_array_equal(S.discrete_timesteps(T, steps, spacing), sch.timesteps.numpy())


def _ours(model, sampler, steps, spacing, seed, clip=False, eta=0.0, n=3):
    g = torch.Generator().manual_seed(seed)
    return D.sample(model, n, generator=g, sampler=sampler, steps=steps, schedule=spacing, eta=eta,
                    clip_denoised=clip)


def _x_T(seed, n=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, 4, 4, generator=g), g


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("steps", [1, 10])
@pytest.mark.parametrize("eta", [0.0, 0.6])
def test_ddim_equals_diffusers(schedule, steps, eta):
    x_T, g = _x_T(1)
    sch = diffusers.DDIMScheduler(num_train_timesteps=T, beta_schedule=BETAS[schedule], clip_sample=False)
    ref = diffusers_loop(sch, steps, x_T, g, eta=eta)
    ours = _ours(fake_model(schedule), "ddim", steps, "leading", 1, eta=eta)
    torch.testing.assert_close(ours, ref.clamp(-1, 1), rtol=1e-4, atol=1e-4)


def test_ddim_clipped_equals_diffusers_with_clipped_model_output():
    # our eps_hat is always (x - x0_hat) / sigma, i.e. diffusers' use_clipped_model_output=True
    x_T, g = _x_T(2)
    sch = diffusers.DDIMScheduler(num_train_timesteps=T, clip_sample=True)
    ref = diffusers_loop(sch, 10, x_T, g, use_clipped_model_output=True)
    ours = _ours(fake_model("linear"), "ddim", 10, "leading", 2, clip=True)
    torch.testing.assert_close(ours, ref.clamp(-1, 1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("steps,clip", [(1, False), (10, False), (10, True), (1000, True)])
def test_ddpm_ancestral_equals_diffusers(schedule, steps, clip):
    x_T, g = _x_T(3)
    sch = diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule=BETAS[schedule], clip_sample=clip)
    ref = diffusers_loop(sch, steps, x_T, g)
    ours = _ours(fake_model(schedule), "ddpm", steps, "leading", 3, clip=clip)
    torch.testing.assert_close(ours, ref.clamp(-1, 1), rtol=1e-4, atol=2e-4)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("steps,clip", [(1, False), (10, False), (10, True), (1000, True)])
def test_ddpm_fixed_large_equals_diffusers(schedule, steps, clip):
    x_T, g = _x_T(5)
    sch = diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule=BETAS[schedule], clip_sample=clip,
                                  variance_type="fixed_large")
    ref = diffusers_loop(sch, steps, x_T, g)
    ours = _ours(fake_model(schedule), "ddpm-large", steps, "leading", 5, clip=clip)
    torch.testing.assert_close(ours, ref.clamp(-1, 1), rtol=1e-4, atol=2e-4)


def test_fixed_large_scales_the_posterior_noise_by_beta_over_beta_tilde():
    """Same posterior mean as 'ddpm', noise std larger by sqrt(beta / beta_tilde) = sqrt((1 - abar_t) /
    (1 - abar_s)) for a step t -> s (Ho et al. eq. 7); checked from the model's own alphas_cumprod."""
    model = fake_model("linear")
    x_T, _ = _x_T(6)
    sigmas = D.make_sigmas(model, "ddpm", 4, "leading")[2:4]  # one step t = 250 -> s = 0 (sigma_0 > 0)
    den = D.make_denoiser(model, None, 1.0, False)
    x0 = den(x_T, sigmas[0])
    sigma_down, _ = S.ancestral_sigmas(sigmas[0], sigmas[1], 1.0)
    mean = x0 + sigma_down * (x_T - x0) / sigmas[0]
    small = S.sample_ddpm(den, x_T, sigmas, torch.Generator().manual_seed(0)) - mean
    large = S.sample_ddpm_large(den, x_T, sigmas, torch.Generator().manual_seed(0)) - mean
    abar = model.alphas_cumprod.double()
    ratio = math.sqrt((1 - abar[250]) / (1 - abar[0]))
    assert ratio > 2
    torch.testing.assert_close(large / small, torch.full_like(small, ratio), rtol=1e-3, atol=0)


def test_ddpm_large_refuses_edm_models():
    with pytest.raises(D.ImagegenError, match="ddpm-large"):
        D.sample(fake_model("linear", formulation="edm"), 1, sampler="ddpm-large", steps=2)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("steps", [1, 2, 10, 20])
def test_dpmpp_2m_equals_diffusers(schedule, steps):
    x_T, g = _x_T(4)
    sch = diffusers.DPMSolverMultistepScheduler(num_train_timesteps=T, beta_schedule=BETAS[schedule],
                                                algorithm_type="dpmsolver++", solver_order=2,
                                                solver_type="midpoint", final_sigmas_type="zero")
    ref = diffusers_loop(sch, steps, x_T, g)
    ours = _ours(fake_model(schedule), "dpmpp-2m", steps, "linspace", 4)
    torch.testing.assert_close(ours, ref.clamp(-1, 1), rtol=1e-4, atol=1e-4)


def test_single_ddim_step_equals_diffusers_step():
    """One step from t to t', away from the ends of the schedule, compared before any clamping."""
    model = fake_model("linear")
    sch = diffusers.DDIMScheduler(num_train_timesteps=T, clip_sample=False)
    sch.set_timesteps(10)  # leading: 900, 800, ...
    t, t_prev = 500, 400
    abar = sch.alphas_cumprod
    x_vp = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(5))
    ref = sch.step(FakeEps()(x_vp, torch.full((3,), t)), torch.tensor(t), x_vp).prev_sample
    sig = S.vp_sigmas(abar.double()).float()
    sigmas = torch.stack([sig[t], sig[t_prev]])
    x_ve = x_vp * (1 + sig[t] ** 2).sqrt()
    ours = S.sample_ddim(D.make_denoiser(model, None, clip_denoised=False), x_ve, sigmas)
    torch.testing.assert_close(ours / (1 + sig[t_prev] ** 2).sqrt(), ref, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- an exactly known denoiser


MU = torch.tensor([0.3, -0.5, 0.1, 0.7]).view(1, 1, 2, 2)
STD = torch.tensor([0.5, 0.2, 1.0, 0.1]).view(1, 1, 2, 2)


def gaussian_denoiser(x, sigma):
    """E[x0 | x] for x0 ~ N(MU, STD^2) and x = x0 + sigma n (Tweedie / Wiener filter)."""
    return MU + STD**2 / (STD**2 + sigma**2) * (x - MU)


@pytest.mark.parametrize("sampler,steps", [("heun", 32), ("dpmpp-2m", 40), ("ddim", 200), ("ddpm", 200)])
def test_samplers_recover_a_gaussian(sampler, steps):
    n = 20000
    g = torch.Generator().manual_seed(0)
    sigmas = S.karras_sigmas(0.002, 80.0, steps)
    x_T = torch.randn(n, 1, 2, 2, generator=g) * math.sqrt(80.0**2 + 1.0)
    x = S.run_sampler(sampler, gaussian_denoiser, x_T, sigmas, g)
    torch.testing.assert_close(x.mean(0, keepdim=True), MU, atol=0.02, rtol=0)
    torch.testing.assert_close(x.std(0, keepdim=True), STD, atol=0.01, rtol=0.03)


def test_heun_follows_the_exact_ode_of_a_gaussian_with_second_order_error():
    """The probability-flow ODE of a Gaussian maps x_T to MU + (x_T - MU) sqrt(STD^2 + s^2) /
    sqrt(STD^2 + S_max^2) at level s; Heun follows it sample by sample, and halving the step size
    divides the error by ~4 (a second-order method; Euler would give ~2)."""
    x_T = torch.randn(64, 1, 2, 2, generator=torch.Generator().manual_seed(1)).double() * 80.0
    exact = MU + (x_T - MU) * STD / (STD**2 + 80.0**2).sqrt()
    errors = []
    for steps in (64, 128):
        x = S.sample_heun(gaussian_denoiser, x_T, S.karras_sigmas(0.002, 80.0, steps).double())
        errors.append((x - exact).abs().max().item())
    assert errors[1] < 3e-3
    assert 3.0 < errors[0] / errors[1] < 5.0


def test_ddim_inversion_round_trip():
    x0 = MU + STD * torch.randn(16, 1, 2, 2, generator=torch.Generator().manual_seed(2))
    sigmas = S.karras_sigmas(0.01, 20.0, 400)
    z = S.sample_ddim(gaussian_denoiser, x0, sigmas[:-1].flip(0))  # ascending: DDIM inversion
    assert z.std() > 5  # it really went up to high noise
    back = S.sample_ddim(gaussian_denoiser, z, sigmas)
    torch.testing.assert_close(back, x0, atol=0.03, rtol=0)  # Euler both ways: first-order error


# --------------------------------------------------------------------------- purity and guidance


@pytest.mark.parametrize("sampler", S.SAMPLERS)
def test_same_generator_same_samples(sampler):
    x_T = torch.randn(4, 1, 2, 2)
    sigmas = S.karras_sigmas(0.002, 80.0, 6)
    a = S.run_sampler(sampler, gaussian_denoiser, x_T, sigmas, torch.Generator().manual_seed(7), eta=0.5)
    b = S.run_sampler(sampler, gaussian_denoiser, x_T, sigmas, torch.Generator().manual_seed(7), eta=0.5)
    assert torch.equal(a, b)
    assert torch.isfinite(a).all()


def test_stochastic_samplers_depend_on_the_generator():
    x_T = torch.randn(4, 1, 2, 2)
    sigmas = S.karras_sigmas(0.002, 80.0, 6)
    a = S.sample_ddpm(gaussian_denoiser, x_T, sigmas, torch.Generator().manual_seed(1))
    b = S.sample_ddpm(gaussian_denoiser, x_T, sigmas, torch.Generator().manual_seed(2))
    assert not torch.allclose(a, b)


def test_guidance_formula_and_scale_one_identity():
    def cond(x, s):
        return x * 0 + 1.0

    def uncond(x, s):
        return x * 0 - 1.0

    assert S.guided_denoiser(cond, uncond, 1.0) is cond
    x = torch.zeros(2, 1, 2, 2)
    torch.testing.assert_close(S.guided_denoiser(cond, uncond, 3.0)(x, torch.tensor(1.0)),
                               torch.full_like(x, 5.0))  # -1 + 3 * (1 - -1)
    torch.testing.assert_close(S.guided_denoiser(cond, uncond, 0.0)(x, torch.tensor(1.0)),
                               torch.full_like(x, -1.0))


def test_repaint_keeps_known_pixels_exactly():
    x_known = torch.rand(3, 1, 2, 2) * 2 - 1
    mask = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 1, 2, 2)
    x_T = torch.randn(3, 1, 2, 2) * 80
    out = S.sample_repaint(gaussian_denoiser, x_T, S.karras_sigmas(0.002, 80.0, 8), x_known, mask,
                           torch.Generator().manual_seed(0), resample=3)
    keep = mask.expand_as(out) > 0.5
    assert torch.equal(out[keep], x_known[keep])
    assert torch.isfinite(out).all()


def test_karras_sigmas_endpoints():
    s = S.karras_sigmas(0.002, 80.0, 18)
    assert s.shape == (19,) and s[-1] == 0
    torch.testing.assert_close(s[[0, -2]], torch.tensor([80.0, 0.002]))
    assert (s[1:] < s[:-1]).all()
