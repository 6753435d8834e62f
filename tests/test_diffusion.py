"""The diffusion family: UNet, formulations, sampling options, guidance, inpainting, SDEdit, interpolation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from imagegen import config
from imagegen.data import Batch, DataInfo
from imagegen.errors import ImagegenError
from imagegen.families import diffusion as D
from imagegen.families.base import default_optimizers

INFO = DataInfo(channels=1, size=8, num_classes=3)
TINY = dict(D.TEST_CONFIG, num_timesteps=1000)


def tiny(formulation="eps", class_cond=True, info=INFO, **kw) -> D.Diffusion:
    torch.manual_seed(0)
    return D.build(D.Config(**{**TINY, "formulation": formulation, "class_cond": class_cond, **kw}), info)


def trained_a_little(formulation="eps", steps=3, **kw) -> D.Diffusion:
    """A tiny model after a few optimiser steps, so the zero-initialised output layers are non-zero and
    the labels matter (a freshly built model ignores its input by design)."""
    model = tiny(formulation, **kw)
    cfg = config.TrainConfig(lr=1e-2)
    opt = default_optimizers(model, model.cfg, cfg)["main"]
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    y = torch.arange(6) % 3
    for _ in range(steps):
        model(x, y)["loss"].backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


def _sample(model, seed=0, **kw):
    return D.sample(model, 4, generator=torch.Generator().manual_seed(seed), **{"steps": 4, **kw})


# ------------------------------------------------------------------------------------- training


@pytest.mark.parametrize("formulation", D.FORMULATIONS)
def test_loss_finite_and_gradients_reach_every_layer(formulation, accel):
    model = tiny(formulation)
    opts = default_optimizers(model, model.cfg, config.TrainConfig(lr=1e-3))
    batch = Batch(torch.rand(6, 1, 8, 8) * 2 - 1, torch.arange(6) % 3)
    for step in range(3):  # zero-initialised output convs pass gradient back from the second step on
        out = model(batch.x, batch.y)
        assert torch.isfinite(out["loss"])
        out["loss"].backward()
        if step < 2:
            opts["main"].step()
            opts["main"].zero_grad()
    no_grad = [n for n, p in model.named_parameters()
               if "label_emb" not in n and (p.grad is None or p.grad.abs().sum() == 0)]
    assert not no_grad, f"no gradient for {no_grad}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_train_step_contract(accel):
    model = tiny("v")
    opts = default_optimizers(model, model.cfg, config.TrainConfig())
    logs = D.train_step(model, Batch(torch.rand(4, 1, 8, 8) * 2 - 1, torch.tensor([0, 1, 2, 0])), opts, 0, accel)
    assert set(logs) >= {"loss"} and torch.isfinite(logs["loss"])


def test_bf16_autocast_on_cpu_gives_a_finite_loss():
    model = tiny("edm")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(torch.rand(4, 1, 8, 8) * 2 - 1, torch.tensor([0, 1, 2, 0]))["loss"]
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_edm_learns_a_single_image():
    """With one training image the ideal denoiser returns it at every noise level: a short EDM run
    must get the sampler's output close to it (a check that training and sampling agree end to end)."""
    torch.manual_seed(0)
    model = D.build(D.Config(**{**TINY, "formulation": "edm", "dropout": 0.0}), DataInfo(1, 8, 0))
    target = torch.linspace(-0.8, 0.8, 64).view(1, 1, 8, 8)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    for _ in range(100):
        loss = model(target.expand(8, -1, -1, -1))["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    x = D.sample(model, 4, generator=torch.Generator().manual_seed(0), sampler="heun", steps=10)
    # an untrained EDM net (output 0, D = c_skip x) samples N(0, sigma_data^2): MSE ~ 0.47 here
    assert (x - target).pow(2).mean() < 0.05


def test_class_cond_without_labels_is_a_user_error():
    with pytest.raises(ImagegenError, match="labels"):
        D.build(D.Config(**TINY, class_cond=True), DataInfo(1, 8, 0))
    with pytest.raises(ImagegenError, match="formulation"):
        D.build(D.Config(**TINY, formulation="x0"), INFO)


# ------------------------------------------------------------------------------------- the denoiser


@pytest.mark.parametrize("formulation", D.FORMULATIONS)
def test_denoiser_with_the_ideal_network_output_returns_x0(formulation):
    """Feed the preconditioned denoiser the network output that each formulation's training target
    defines (eps, v = sqrt(abar) eps - sqrt(1 - abar) x0, EDM's F target, flow's velocity n - x0 of
    x_t = (1 - t) x0 + t n with t = sigma / (1 + sigma)); D(x0 + sigma n) must be x0."""
    model = tiny(formulation, class_cond=False)
    x0 = torch.rand(2, 1, 8, 8) * 2 - 1
    n = torch.randn(2, 1, 8, 8)
    sigma = torch.tensor(1.7)
    alpha = 1 / (1 + sigma**2).sqrt()  # sqrt(abar)
    sigma_vp = sigma * alpha  # sqrt(1 - abar)
    sd = model.cfg.sigma_data
    targets = {"eps": n, "v": alpha * n - sigma_vp * x0,
               "edm": (x0 - sd**2 / (sigma**2 + sd**2) * (x0 + sigma * n)) / (sigma * sd / (sigma**2 + sd**2).sqrt()),
               "flow": n - x0}

    class Oracle(nn.Module):
        def forward(self, x, t, y=None):
            return targets[formulation]

    model.unet = Oracle()
    torch.testing.assert_close(model.denoise(x0 + sigma * n, sigma), x0, atol=1e-5, rtol=1e-5)


def test_sigma_to_t_is_exact_at_training_levels():
    model = tiny(class_cond=False)
    t = torch.tensor([0, 1, 17, 500, 999])
    torch.testing.assert_close(model.sigma_to_t(model.train_sigmas[t]), t.float(), atol=2e-3, rtol=0)


def test_odd_sizes_are_padded_and_cropped():
    model = D.build(D.Config(base_channels=8, channel_mult=[1, 2, 2, 2], num_res_blocks=1,
                             attn_resolutions=[4]), DataInfo(1, 28, 0))
    out = model.unet(torch.randn(2, 1, 28, 28), torch.tensor([3.0, 500.0]))
    assert out.shape == (2, 1, 28, 28)


def test_channels_last_changes_nothing_but_the_layout():
    a = tiny(channels_last=False).eval()
    for p in a.parameters():  # non-zero output layers so the comparison means something
        p.data.normal_(0, 0.1)
    b = tiny(channels_last=True).eval()
    b.load_state_dict(a.state_dict())
    assert b.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(3, 1, 8, 8)
    y = torch.tensor([0, 1, 3])
    torch.testing.assert_close(a.denoise(x, torch.tensor(2.0), y), b.denoise(x, torch.tensor(2.0), y),
                               atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("formulation", D.FORMULATIONS)
@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "dpmpp-2m", "heun"])
def test_sample_shape_range_and_reproducibility(formulation, sampler):
    model = trained_a_little(formulation, steps=1)
    a = _sample(model, 1, sampler=sampler, labels=2)
    b = _sample(model, 1, sampler=sampler, labels=2)
    assert a.shape == (4, 1, 8, 8) and torch.isfinite(a).all()
    assert a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b)


def test_different_seeds_give_different_samples():
    model = trained_a_little()
    assert not torch.equal(_sample(model, 1), _sample(model, 2))


def test_guidance_one_equals_unguided_and_other_scales_differ():
    model = trained_a_little()
    plain = _sample(model, 5, labels=[0, 1, 2, 0])
    assert torch.equal(_sample(model, 5, labels=[0, 1, 2, 0], guidance=1.0), plain)
    assert not torch.allclose(_sample(model, 5, labels=[0, 1, 2, 0], guidance=3.0), plain)


@pytest.mark.parametrize("channels", [8, 32, 128])
def test_resblock_embedding_survives_group_norm(channels):
    """With one channel per GroupNorm group the norm after the embedding's addition erases it (the bug
    the ddpm-mnist preset's 32-channel level had): every width must keep >= 2 channels per group."""
    from imagegen.nn import ResBlock, norm_groups

    assert channels // norm_groups(channels) >= 2
    torch.manual_seed(0)
    block = ResBlock(channels, channels, emb_dim=16).eval()
    nn.init.normal_(block.conv2.weight, std=0.1)  # zero-initialised: the block starts as the identity
    x = torch.randn(2, channels, 8, 8)
    out_a, out_b = block(x, torch.randn(2, 16)), block(x, torch.randn(2, 16))
    assert (out_a - out_b).abs().max() > 1e-2


def test_time_step_and_label_change_the_prediction():
    """The UNet's output (not the preconditioning around it) depends on its time step and label inputs."""
    model = trained_a_little()
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    t, y = torch.tensor([500.0, 500.0]), torch.tensor([0, 0])
    with torch.no_grad():
        base = model.unet(x, t, y)
        assert (model.unet(x, t, torch.tensor([1, 1])) - base).abs().max() > 1e-3
        assert (model.unet(x, torch.tensor([100.0, 100.0]), y) - base).abs().max() > 1e-3


def test_guidance_needs_a_conditional_model():
    model = trained_a_little(class_cond=False)
    with pytest.raises(ImagegenError, match="class-conditional"):
        _sample(model, guidance=2.0)


def test_labels_are_validated_and_unconditional_sampling_uses_the_null_class():
    model = trained_a_little()
    with pytest.raises(ImagegenError, match="labels must lie"):
        _sample(model, labels=7)
    null = torch.full((4,), 3)
    x_T = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    sigmas = D.make_sigmas(model, "ddim", 4)
    expected = D.S.sample_ddim(D.make_denoiser(model, null), x_T * model.prior_std(float(sigmas[0])), sigmas)
    torch.testing.assert_close(_sample(model, 4), expected.clamp(-1, 1))


def test_bad_options_are_user_errors():
    model = trained_a_little()
    with pytest.raises(ImagegenError, match="sampler"):
        _sample(model, sampler="euler-a")
    with pytest.raises(ImagegenError, match="steps"):
        _sample(model, steps=0)
    with pytest.raises(ImagegenError, match="schedule"):
        _sample(model, schedule="quadratic")
    with pytest.raises(ImagegenError, match="karras"):
        _sample(trained_a_little("edm"), schedule="trailing")


# ------------------------------------------------------------------------------------- applications


@pytest.mark.parametrize("formulation", ["eps", "edm"])
def test_inpainting_keeps_known_pixels_exactly(formulation):
    model = trained_a_little(formulation)
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(3)) * 2 - 1
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4, :] = 1  # keep the top half
    out = D.complete(model, x, mask, labels=1, generator=torch.Generator().manual_seed(0), steps=4, resample=2)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert torch.equal(out[..., :4, :], x[..., :4, :])
    assert not torch.equal(out[..., 4:, :], x[..., 4:, :])
    assert out.min() >= -1 and out.max() <= 1
    with pytest.raises(ImagegenError, match="mask"):
        D.complete(model, x, torch.ones(1, 1, 4, 4))


def test_sdedit_denoise():
    model = trained_a_little()
    x = torch.rand(2, 1, 8, 8) * 2 - 1
    assert torch.equal(D.denoise(model, x, 0.0), x)
    g = torch.Generator().manual_seed(0)
    out = D.denoise(model, x, 0.4, generator=g, steps=10)
    assert out.shape == x.shape and torch.isfinite(out).all() and out.abs().max() <= 1
    again = D.denoise(model, x, 0.4, generator=torch.Generator().manual_seed(0), steps=10)
    assert torch.equal(out, again)
    with pytest.raises(ImagegenError, match="strength"):
        D.denoise(model, x, 1.5)


def test_interpolate_via_ddim_inversion():
    model = trained_a_little(class_cond=False)
    a, b = torch.rand(1, 1, 8, 8) * 2 - 1, torch.rand(1, 1, 8, 8) * 2 - 1
    frames = D.interpolate(model, a, b, frames=5, steps=6)
    assert frames.shape == (5, 1, 8, 8) and torch.isfinite(frames).all()
    assert not torch.equal(frames[0], frames[-1])
    # the ends are the deterministic DDIM reconstructions of a and b
    z = D.invert(model, torch.cat([a, b]), steps=6)
    recon = D.S.sample_ddim(D.make_denoiser(model, None), z, D.make_sigmas(model, "ddim", 6)).clamp(-1, 1)
    torch.testing.assert_close(frames[[0, -1]], recon, atol=1e-5, rtol=1e-5)
    # between the starting noises of two seeds: the end frames are those seeds' DDIM samples
    by_seed = D.interpolate(model, None, None, frames=3, steps=4, seeds=(1, 2))
    for frame, seed in ((0, 1), (2, 2)):
        torch.testing.assert_close(by_seed[frame:frame + 1], _sample(model, seed)[:1], atol=1e-5, rtol=1e-5)
    with pytest.raises(ImagegenError, match="two images"):
        D.interpolate(model, a, None)


# ------------------------------------------------------------------------------------- presets, checkpoints


def test_ddpm_cifar10_preset_has_the_papers_35_7m_parameters():
    cfg = config.resolve(preset="ddpm-cifar10")
    with torch.device("meta"):  # no memory, no init cost
        model = D.build(cfg.model, DataInfo(channels=3, size=32, num_classes=10))
    n = sum(p.numel() for p in model.parameters())
    assert n == 35_746_307  # Ho et al. 2020: 35.7M (the official TF model has exactly this many)


@pytest.mark.parametrize("preset", ["ddpm-mnist", "edm-mnist"])
def test_mnist_presets_build(preset):
    cfg = config.resolve(preset=preset, overrides={"model": {"class_cond": True}})
    with torch.device("meta"):
        model = D.build(cfg.model, DataInfo(channels=1, size=28, num_classes=10))
    assert 1e6 < sum(p.numel() for p in model.parameters()) < 3e6


def test_rebuild_gives_the_same_state_dict_keys_and_no_schedule_buffers():
    cfg = config.resolve("diffusion", overrides={"model": {**D.TEST_CONFIG, "class_cond": True,
                                                           "compile": True, "channels_last": True}})
    a, b = D.build(cfg.model, INFO), D.build(cfg.model, INFO)
    assert list(a.state_dict()) == list(b.state_dict())
    assert not any("alphas_cumprod" in k or "sigma" in k for k in a.state_dict())
    b.load_state_dict(a.state_dict())
