"""Flow matching (model.formulation=flow): the samplers exact on a Gaussian, Euler = DDIM = diffusers' flow
schedulers, guidance, the applications, training, and the one-line refusals."""

from __future__ import annotations

import pytest
import torch

from imagegen import config
from imagegen import samplers as S
from imagegen.data import DataInfo
from imagegen.errors import ImagegenError
from imagegen.families import diffusion as D
from imagegen.families.base import default_optimizers

INFO = DataInfo(channels=1, size=8, num_classes=3)
TINY = dict(D.TEST_CONFIG, formulation="flow")
T_MAX = D.Config().flow_t_max
SIGMA_MAX = T_MAX / (1 - T_MAX)

# data x0 ~ N(MU, STD^2), independent pixels
MU = torch.tensor([0.3, -0.5, 0.1, 0.7]).view(1, 1, 2, 2).double()
STD = torch.tensor([0.5, 0.2, 1.0, 0.1]).view(1, 1, 2, 2).double()


def flow_x0_hat(x_t, t):
    """E[x0 | x_t] for x_t = (1 - t) x0 + t eps: x_t ~ N((1 - t) MU, (1 - t)^2 STD^2 + t^2), and the
    Gaussian posterior mean is MU + (1 - t) STD^2 (x_t - (1 - t) MU) / ((1 - t)^2 STD^2 + t^2)."""
    return MU + (1 - t) * STD**2 * (x_t - (1 - t) * MU) / ((1 - t) ** 2 * STD**2 + t**2)


def flow_velocity(x_t, t):
    """The exact velocity field E[eps - x0 | x_t] = (x_t - E[x0 | x_t]) / t of the linear path."""
    return (x_t - flow_x0_hat(x_t, t)) / t


def ideal_denoiser(x, sigma):
    """The same posterior mean read through the VE frame the samplers use: x_t = x / (1 + sigma),
    t = sigma / (1 + sigma)."""
    return flow_x0_hat(x / (1 + sigma), sigma / (1 + sigma))


def exact_ode_end(x_ve):
    """Where the flow ODE takes x at t_max: its solution is x_t = (1 - t) MU + sqrt((1 - t)^2 STD^2 + t^2) z
    (z fixed), so x0 = MU + STD z."""
    x_t = x_ve / (1 + SIGMA_MAX)
    z = (x_t - (1 - T_MAX) * MU) / ((1 - T_MAX) ** 2 * STD**2 + T_MAX**2).sqrt()
    return MU + STD * z


def grid(steps):
    return S.uniform_t_sigmas(SIGMA_MAX, steps).double()


# ------------------------------------------------------------------------------------- samplers


def test_uniform_t_grid():
    sigmas = S.uniform_t_sigmas(SIGMA_MAX, 4).double()
    t = sigmas / (1 + sigmas)
    torch.testing.assert_close(t, torch.tensor([T_MAX, 0.75 * T_MAX, 0.5 * T_MAX, 0.25 * T_MAX, 0.0]).double(),
                               atol=1e-6, rtol=0)
    assert sigmas[-1] == 0 and (sigmas[1:] < sigmas[:-1]).all()


@pytest.mark.parametrize("sampler,steps", [("euler", 200), ("heun", 32)])
def test_flow_samplers_transport_noise_to_the_gaussian(sampler, steps):
    """The exact velocity of a Gaussian carries N(0, I) noise (at t_max, in the VE frame N(0, sigma_max^2))
    to N(MU, STD^2)."""
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(20000, 1, 2, 2, generator=g).double() * SIGMA_MAX
    x = S.run_sampler(sampler, ideal_denoiser, x_T, grid(steps), g, frame="flow")
    torch.testing.assert_close(x.mean(0, keepdim=True), MU, atol=0.02, rtol=0)
    torch.testing.assert_close(x.std(0, keepdim=True), STD, atol=0.01, rtol=0.03)


def test_heun_is_second_order_and_closer_than_euler_at_equal_steps():
    x_T = torch.randn(64, 1, 2, 2, generator=torch.Generator().manual_seed(1)).double() * SIGMA_MAX
    exact = exact_ode_end(x_T)
    errors = {"euler": [], "heun": []}
    for steps in (16, 32, 64):
        for name in errors:
            x = S.run_sampler(name, ideal_denoiser, x_T, grid(steps), frame="flow")
            errors[name].append((x - exact).abs().max().item())
    for e_heun, e_euler in zip(errors["heun"], errors["euler"], strict=True):
        assert e_heun < 0.35 * e_euler
    assert errors["heun"][-1] < 5e-3
    assert 3.0 < errors["heun"][1] / errors["heun"][2] < 5.0  # halving the step: error / 4
    assert 1.7 < errors["euler"][1] / errors["euler"][2] < 2.3  # first order: error / 2
    # Heun in the flow frame beats EDM's Heun (a trapezoid in sigma) on the same uniform-t points
    edm_heun = (S.sample_heun(ideal_denoiser, x_T, grid(64)) - exact).abs().max().item()
    assert errors["heun"][-1] < 0.2 * edm_heun


def test_euler_is_ddim_and_the_explicit_euler_step_in_t():
    x_T = torch.randn(8, 1, 2, 2, generator=torch.Generator().manual_seed(2)).double() * SIGMA_MAX
    sigmas = grid(7)
    ours = S.sample_euler(ideal_denoiser, x_T, sigmas)
    torch.testing.assert_close(ours, S.sample_ddim(ideal_denoiser, x_T, sigmas))
    ts = sigmas / (1 + sigmas)
    x_t = x_T / (1 + sigmas[0])
    for t, t_next in zip(ts[:-1], ts[1:], strict=True):  # x_t' = x_t + (t' - t) v(x_t, t)
        x_t = x_t + (t_next - t) * flow_velocity(x_t, t)
    torch.testing.assert_close(ours, x_t, atol=1e-9, rtol=1e-9)


def _velocity_net(x_t, timestep):
    """diffusers' flow schedulers call the net at timestep = 1000 t and expect v = eps - x0."""
    return flow_velocity(x_t.double(), timestep.double() / 1000).float()


def test_euler_equals_diffusers_flow_match_euler():
    diffusers = pytest.importorskip("diffusers")
    steps = 10
    sigmas = S.uniform_t_sigmas(SIGMA_MAX, steps)
    ts = (sigmas / (1 + sigmas)).tolist()
    sched = diffusers.FlowMatchEulerDiscreteScheduler()
    sched.set_timesteps(sigmas=ts[:-1])  # it appends the final 0
    x_T = torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(3))
    x = x_T * T_MAX  # the VE x_T * sigma_max in the flow frame
    for timestep in sched.timesteps:
        x = sched.step(_velocity_net(x, timestep), timestep, x).prev_sample
    ours = S.sample_euler(lambda x, s: ideal_denoiser(x.double(), s.double()).float(), x_T * SIGMA_MAX, sigmas)
    torch.testing.assert_close(ours, x, atol=1e-4, rtol=1e-4)


def test_flow_heun_equals_diffusers_flow_match_heun():
    diffusers = pytest.importorskip("diffusers")
    steps = 6
    sigmas = S.uniform_t_sigmas(SIGMA_MAX, steps)
    t = sigmas / (1 + sigmas)
    sched = diffusers.FlowMatchHeunDiscreteScheduler()
    sched.set_timesteps(steps)
    # its set_timesteps takes no grid: give it ours in its layout (each inner point twice)
    sched.sigmas = torch.cat([t[:1], t[1:-1].repeat_interleave(2), t[-1:]])
    sched.timesteps = torch.cat([t[:1], t[1:-1].repeat_interleave(2)]) * 1000
    x_T = torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(4))
    x = x_T * T_MAX
    calls = 0
    for timestep in sched.timesteps:
        x = sched.step(_velocity_net(x, timestep), timestep, x).prev_sample
        calls += 1
    assert calls == S.network_calls("heun", steps)
    ours = S.sample_flow_heun(lambda x, s: ideal_denoiser(x.double(), s.double()).float(), x_T * SIGMA_MAX, sigmas)
    torch.testing.assert_close(ours, x, atol=1e-4, rtol=1e-4)


def test_guidance_on_x0_is_guidance_on_the_velocity():
    """Classifier-free guidance is applied to x0_hat; at fixed x_t and t the velocity (x_t - x0_hat) / t is
    affine in x0_hat, so it is the same guidance of v_hat (as flow-matching models apply it)."""
    def cond(x, s):
        return torch.tanh(x / (1 + s)) * 0.5

    def uncond(x, s):
        return torch.sin(x / (1 + s)) * 0.3

    x, sigma, w = torch.randn(4, 1, 2, 2), torch.tensor(1.5), 2.5
    t = sigma / (1 + sigma)
    x_t = x / (1 + sigma)
    v_guided = (x_t - S.guided_denoiser(cond, uncond, w)(x, sigma)) / t
    v_c, v_u = (x_t - cond(x, sigma)) / t, (x_t - uncond(x, sigma)) / t
    torch.testing.assert_close(v_guided, v_u + w * (v_c - v_u))


def test_unknown_frame_is_refused():
    with pytest.raises(ValueError, match="frame"):
        S.run_sampler("heun", ideal_denoiser, torch.zeros(1, 1, 2, 2), grid(2), frame="vp")


# ------------------------------------------------------------------------------------- the model


def tiny(class_cond=True, **kw) -> D.Diffusion:
    torch.manual_seed(0)
    return D.build(D.Config(**{**TINY, "class_cond": class_cond, **kw}), INFO)


def trained_a_little(steps=3, **kw) -> D.Diffusion:
    model = tiny(**kw)
    opt = default_optimizers(model, model.cfg, config.TrainConfig(lr=1e-2))["main"]
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    y = torch.arange(6) % 3
    for _ in range(steps):
        model(x, y)["loss"].backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


@pytest.fixture(scope="module")
def model() -> D.Diffusion:
    """A class-conditional tiny flow model after 3 steps (shared: no test changes it)."""
    return trained_a_little()


def _sample(model, seed=0, **kw):
    return D.sample(model, 4, generator=torch.Generator().manual_seed(seed), **{"steps": 4, **kw})


def test_training_loss_is_the_velocity_regression():
    """With the network replaced by the exact target the loss is 0; at initialisation (output 0) it is
    E||eps - x0||^2; and x_t, t and the target follow the linear path."""
    model = tiny(class_cond=False)
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1
    seen = {}

    class Recorder(torch.nn.Module):
        def forward(self, x_t, noise_label, y=None):
            seen["x_t"], seen["t"] = x_t, noise_label / 1000
            return torch.zeros_like(x_t)

    model.unet = Recorder()
    torch.manual_seed(5)
    loss0 = model(x0)["loss"]
    torch.manual_seed(5)
    noise = torch.randn_like(x0)  # forward draws the noise first, then t
    t = seen["t"].view(-1, 1, 1, 1)
    torch.testing.assert_close(seen["x_t"], (1 - t) * x0 + t * noise)
    torch.testing.assert_close(loss0, (noise - x0).pow(2).mean())
    assert ((seen["t"] > 0) & (seen["t"] < 1)).all()


@pytest.mark.parametrize("dist", D.FLOW_T_DISTS)
def test_t_distributions(dist):
    model = tiny(class_cond=False, flow_t_dist=dist)
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, x_t, noise_label, y=None):
            seen.append(noise_label / 1000)
            return torch.zeros_like(x_t)

    model.unet = Recorder()
    torch.manual_seed(0)
    model(torch.zeros(4000, 1, 2, 2))
    t = seen[0]
    assert 0 < t.min() and t.max() < 1
    assert abs(t.mean() - 0.5) < 0.02
    if dist == "uniform":  # var 1/12
        assert abs(t.var() - 1 / 12) < 0.005
    else:  # logit(t) ~ N(0, 1)
        logit = torch.logit(t)
        assert abs(logit.mean()) < 0.05 and abs(logit.std() - 1) < 0.05
    with pytest.raises(ImagegenError, match="flow_t_dist"):
        tiny(flow_t_dist="cosmic")


def test_a_tiny_flow_model_learns():
    """~100 steps on a small toy (4x4 images: one of three bars) lower the loss, measured with the same
    noise and t draws before and after, well below its value at initialisation."""
    torch.manual_seed(0)
    net = {"base_channels": 8, "channel_mult": [1], "num_res_blocks": 1, "attn_resolutions": []}
    model = D.build(D.Config(formulation="flow", flow_t_dist="uniform", dropout=0.0, **net), DataInfo(1, 4, 0))
    bars = -torch.ones(3, 1, 4, 4)
    bars[0, :, 1, :] = 1
    bars[1, :, :, 2] = 1
    bars[2, :, 3, 1:] = 1
    data = bars[torch.arange(64) % 3]

    def eval_loss():
        torch.manual_seed(123)
        with torch.no_grad():
            return sum(model(data)["loss"].item() for _ in range(4)) / 4

    before = eval_loss()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(1)
    for _ in range(100):
        batch = data[torch.randint(0, 64, (16,))]
        loss = model(batch)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad()
    after = eval_loss()
    assert after < 0.6 * before, (before, after)


def test_the_sampling_grid_and_prior_of_a_flow_model():
    model = tiny()
    sigmas = D.make_sigmas(model, "euler", 8)
    torch.testing.assert_close(sigmas, S.uniform_t_sigmas(SIGMA_MAX, 8))
    assert model.prior_std(float(sigmas[0])) == pytest.approx(SIGMA_MAX, rel=1e-5)
    assert len(D.make_sigmas(model, "heun", 8, schedule="karras")) == 9
    with pytest.raises(ImagegenError, match="karras or uniform"):
        D.make_sigmas(model, "ddim", 8, schedule="trailing")


@pytest.mark.parametrize("sampler", ["euler", "heun", "ddim", "ddpm", "dpmpp-2m"])
def test_sample_shape_range_and_reproducibility(sampler, model):
    a = _sample(model, 1, sampler=sampler, labels=2)
    assert a.shape == (4, 1, 8, 8) and torch.isfinite(a).all() and a.abs().max() <= 1
    assert torch.equal(a, _sample(model, 1, sampler=sampler, labels=2))


def test_heun_on_a_flow_model_is_the_flow_frame_heun(model):
    y = torch.full((4,), 1)
    sigmas = D.make_sigmas(model, "heun", 4)
    x_T = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(6)) * model.prior_std(float(sigmas[0]))
    expected = S.sample_flow_heun(D.make_denoiser(model, y), x_T, sigmas).clamp(-1, 1)
    torch.testing.assert_close(_sample(model, 6, sampler="heun", labels=1), expected)
    edm_heun = S.sample_heun(D.make_denoiser(model, y), x_T, sigmas).clamp(-1, 1)
    assert not torch.allclose(expected, edm_heun)


@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_guidance_one_equals_unguided_and_other_scales_differ(sampler, model):
    labels = [0, 1, 2, 0]
    plain = _sample(model, 5, sampler=sampler, labels=labels)
    assert torch.equal(_sample(model, 5, sampler=sampler, labels=labels, guidance=1.0), plain)
    assert not torch.allclose(_sample(model, 5, sampler=sampler, labels=labels, guidance=3.0), plain)


def test_ddpm_large_is_refused_for_flow(model):
    with pytest.raises(ImagegenError, match="flow model"):
        _sample(model, sampler="ddpm-large")


def test_inpainting_keeps_known_pixels_exactly(model):
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(3)) * 2 - 1
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4, :] = 1
    out = D.complete(model, x, mask, labels=1, generator=torch.Generator().manual_seed(0), steps=4, resample=2)
    assert out.shape == x.shape and torch.isfinite(out).all() and out.abs().max() <= 1
    assert torch.equal(out[..., :4, :], x[..., :4, :])
    assert not torch.equal(out[..., 4:, :], x[..., 4:, :])


@pytest.mark.parametrize("sampler", ["euler", "heun", "ddpm"])
def test_sdedit_denoise(sampler, model):
    x = torch.rand(2, 1, 8, 8) * 2 - 1
    assert torch.equal(D.denoise(model, x, 0.0), x)
    out = D.denoise(model, x, 0.4, sampler=sampler, generator=torch.Generator().manual_seed(0), steps=10)
    assert out.shape == x.shape and torch.isfinite(out).all() and out.abs().max() <= 1
    again = D.denoise(model, x, 0.4, sampler=sampler, generator=torch.Generator().manual_seed(0), steps=10)
    assert torch.equal(out, again)


def test_interpolate_via_inversion():
    model = trained_a_little(class_cond=False)
    a, b = torch.rand(1, 1, 8, 8) * 2 - 1, torch.rand(1, 1, 8, 8) * 2 - 1
    frames = D.interpolate(model, a, b, frames=5, steps=6)
    assert frames.shape == (5, 1, 8, 8) and torch.isfinite(frames).all()
    z = D.invert(model, torch.cat([a, b]), steps=6)
    recon = S.sample_euler(D.make_denoiser(model, None), z, D.make_sigmas(model, "euler", 6)).clamp(-1, 1)
    torch.testing.assert_close(frames[[0, -1]], recon, atol=1e-5, rtol=1e-5)
    by_seed = D.interpolate(model, None, None, frames=3, steps=4, seeds=(1, 2))
    torch.testing.assert_close(by_seed[:1], _sample(model, 1, sampler="euler")[:1], atol=1e-5, rtol=1e-5)


def test_inversion_round_trip_with_the_ideal_velocity():
    """Euler up the flow ODE (DDIM inversion) and back down returns the data point (first-order error)."""
    x0 = MU + STD * torch.randn(16, 1, 2, 2, generator=torch.Generator().manual_seed(2)).double()
    sigmas = grid(400)
    z = S.sample_ddim(ideal_denoiser, x0, sigmas[:-1].flip(0))
    assert (z / (1 + sigmas[0])).std() > 0.5  # x_t near t_max is mostly noise
    back = S.sample_euler(ideal_denoiser, z, sigmas)
    torch.testing.assert_close(back, x0, atol=0.03, rtol=0)


def test_nll_is_refused_in_one_line(model):
    with pytest.raises(ImagegenError, match="formulation=flow has no variational bound") as err:
        D.nll(model, torch.zeros(2, 1, 8, 8))
    assert "\n" not in str(err.value)


def test_flow_mnist_preset_builds():
    cfg = config.resolve(preset="flow-mnist", overrides={"model": {"class_cond": True}})
    assert cfg.model.formulation == "flow"
    ddpm = config.resolve(preset="ddpm-mnist", overrides={"model": {"class_cond": True}})
    with torch.device("meta"):
        model = D.build(cfg.model, DataInfo(channels=1, size=28, num_classes=10))
        ref = D.build(ddpm.model, DataInfo(channels=1, size=28, num_classes=10))
    # the ddpm-mnist network, only the formulation differs
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in ref.parameters())
