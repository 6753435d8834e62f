"""GAN family: both players train, penalties and spectral norm are exact, applications behave."""

from __future__ import annotations

import warnings

import pytest
import torch

from imagegen.config import TrainConfig
from imagegen.data import Batch, DataInfo
from imagegen.errors import ImagegenError
from imagegen.families import gan
from imagegen.families.gan_nets import CondBatchNorm2d

DIGITS = DataInfo(channels=1, size=16, num_classes=10, name="digits")
COLOUR = DataInfo(channels=3, size=32, num_classes=0, name="tiny-colour")


def tiny(**kw) -> gan.Config:
    return gan.Config(**{**gan.TEST_CONFIG, **kw})


def make(info=DIGITS, **kw):
    torch.manual_seed(0)
    cfg = tiny(**kw)
    model = gan.build(cfg, info)
    opts = gan.configure_optimizers(model, cfg, TrainConfig(**gan.TRAIN_DEFAULTS))
    return model, opts


def batch(info=DIGITS, n=8, seed=0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, info.channels, info.size, info.size, generator=g) * 2 - 1
    y = torch.randint(0, info.num_classes, (n,), generator=g) if info.num_classes else None
    return Batch(x, y)


@pytest.mark.parametrize("arch,loss,extra", [
    ("dcgan", "ns", {}),
    ("dcgan", "minimax", {}),
    ("dcgan", "wgan-gp", {"d_steps": 2}),
    ("resnet", "hinge", {"spectral_norm": True, "diffaug": True, "r1_gamma": 1.0, "r1_every": 1}),
])
@pytest.mark.parametrize("info", [DIGITS, COLOUR], ids=["cond16", "uncond32"])
def test_train_step_updates_both_players(accel, arch, loss, extra, info):
    model, opts = make(info, arch=arch, loss=loss, **extra)
    g0 = [p.detach().clone() for p in model.G.parameters()]
    d0 = [p.detach().clone() for p in model.D.parameters()]
    logs = gan.train_step(model, batch(info), opts, 0, accel)
    for k in ("loss", "d_loss", "g_loss", "d_real_acc", "d_fake_acc", "d_grad_norm", "g_grad_norm", "health"):
        assert torch.isfinite(torch.as_tensor(logs[k])).all(), k
    assert 0 <= float(logs["d_real_acc"]) <= 1 and 0 <= float(logs["d_fake_acc"]) <= 1
    assert float(logs["d_grad_norm"]) > 0 and float(logs["g_grad_norm"]) > 0
    assert any(not torch.equal(a, b) for a, b in zip(g0, model.G.parameters())), "G did not change"
    assert any(not torch.equal(a, b) for a, b in zip(d0, model.D.parameters())), "D did not change"
    if loss == "wgan-gp":
        assert float(logs["gp"]) > 0
    if extra.get("r1_gamma"):
        assert float(logs["r1"]) > 0


def test_generator_pass_leaves_discriminator_without_gradients():
    model, _ = make()
    b = batch()
    out = model(None, b.y, phase="g", batch_size=8)
    out["loss"].backward()
    assert all(p.grad is None for p in model.D.parameters())
    assert all(p.requires_grad for p in model.D.parameters())  # unfrozen again afterwards
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.G.parameters())
    model.zero_grad(set_to_none=True)
    out = model(b.x, b.y, phase="d")
    out["loss"].backward()
    assert all(p.grad is None for p in model.G.parameters())  # fakes are constants for D's loss


def test_losses_match_their_formulas():
    r, f = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    sig = torch.sigmoid
    bce = -(torch.log(sig(r)).mean() + torch.log(1 - sig(f)).mean())
    assert torch.allclose(gan.d_loss_fn("ns", r, f), bce)
    assert torch.allclose(gan.g_loss_fn("minimax", f), torch.log(1 - sig(f)).mean())
    assert torch.allclose(gan.g_loss_fn("ns", f), -torch.log(sig(f)).mean())
    assert torch.allclose(gan.d_loss_fn("hinge", r, f), torch.tensor((0 + 2 + 1.5 + 0) / 2))
    assert torch.allclose(gan.d_loss_fn("wgan-gp", r, f), f.mean() - r.mean())


def _per_sample_input_grads(D, x, y):
    """Independent reference: one autograd call per image."""
    grads = []
    for i in range(x.shape[0]):
        xi = x[i:i + 1].detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(D(xi, None if y is None else y[i:i + 1]).sum(), xi)
        grads.append(g.flatten())
    return torch.stack(grads)  # (B, C*H*W)


def test_gradient_penalty_matches_autograd():
    model, _ = make(arch="resnet", loss="wgan-gp")
    torch.manual_seed(1)
    b, fake = batch(), torch.rand(8, 1, 16, 16) * 2 - 1
    eps = torch.rand(8, 1, 1, 1)
    gp = gan.gradient_penalty(model.D, b.x, fake, b.y, eps=eps)
    x_hat = eps * b.x + (1 - eps) * fake
    ref = (_per_sample_input_grads(model.D, x_hat, b.y).norm(dim=1) - 1).pow(2).mean()
    assert torch.allclose(gp, ref, rtol=1e-4, atol=1e-6)
    assert gp.requires_grad  # it must be trainable (double backprop)


def test_r1_matches_autograd():
    model, _ = make(arch="dcgan", loss="ns", spectral_norm=True)
    model.eval()  # fixed spectral-norm vectors, so both computations see the same weights
    b = batch()
    r1 = gan.r1_penalty(model.D, b.x, b.y)
    ref = _per_sample_input_grads(model.D, b.x, b.y).pow(2).sum(1).mean()
    assert torch.allclose(r1, ref, rtol=1e-4, atol=1e-7)
    assert r1 > 0


@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
def test_spectral_norm_bounds_largest_singular_value(arch):
    model, _ = make(arch=arch, spectral_norm=True, d_channels=16)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # move the weights (new singular vectors) and scale them far above sigma = 1
        for m in model.D.modules():
            if hasattr(m, "parametrizations"):
                w = m.parametrizations.weight.original
                w.add_(torch.randn(w.shape, generator=g) * w.std()).mul_(5.0)
    model.train()
    b = batch(n=2)
    model.D(b.x, b.y)
    sn_layers = [m for m in model.D.modules() if hasattr(m, "parametrizations")]
    for _ in range(300):  # every training-mode read of .weight is one power iteration, as in a forward
        for m in sn_layers:
            _ = m.weight
    checked = 0
    model.eval()  # read the weights without further iterations
    for m in model.D.modules():
        if hasattr(m, "parametrizations"):
            raw = m.parametrizations.weight.original
            w = m.weight.detach()
            dim = 1 if isinstance(m, torch.nn.ConvTranspose2d) else 0
            mat = w.transpose(0, dim).flatten(1) if dim else w.flatten(1)
            sigma = torch.linalg.svdvals(mat)[0]
            assert sigma == pytest.approx(1.0, abs=2e-2), m
            assert torch.linalg.svdvals(raw.flatten(1))[0] > 1.5  # the bound is the parametrisation's work
            checked += 1
    assert checked >= 4


def test_diffaugment_keeps_shape_and_range_and_is_differentiable():
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(6, 3, 32, 32, generator=g) * 2 - 1).requires_grad_(True)
    y = gan.diff_augment(x, generator=g)
    assert y.shape == x.shape
    assert y.min() >= -1 and y.max() <= 1
    assert not torch.allclose(y, x)
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    t = gan.diff_augment(x.detach(), "translation", generator=g)
    assert t.shape == x.shape and t.min() >= -1 and t.max() <= 1
    c = gan.diff_augment(torch.ones(4, 1, 16, 16), "cutout", generator=g)
    # a zeroed 8x8 square (possibly cut off at the border): between 16 and 64 pixels per image
    zeros = (c == 0).flatten(1).sum(1)
    assert ((zeros >= 16) & (zeros <= 64)).all()
    with pytest.raises(ImagegenError):
        gan.diff_augment(x, "colour,flip")


def test_conditional_sampling_returns_requested_labels():
    model, _ = make()
    model.eval()
    g = torch.Generator().manual_seed(0)
    out = gan.sample(model, 5, labels=[1, 2, 3, 4, 5], generator=g)
    assert out.shape == (5, 1, 16, 16) and out.min() >= -1 and out.max() <= 1
    assert gan.sample(model, 7, labels=3, generator=g).shape[0] == 7
    # the label changes the image for the same z (class gains start equal: make them differ first)
    with torch.no_grad():
        for m in model.G.modules():
            if isinstance(m, CondBatchNorm2d):
                m.bias.weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(0))
    a = gan.sample(model, 1, labels=0, generator=torch.Generator().manual_seed(3))
    b = gan.sample(model, 1, labels=9, generator=torch.Generator().manual_seed(3))
    assert not torch.allclose(a, b)
    with pytest.raises(ImagegenError):
        gan.sample(model, 3, labels=[1, 2])
    with pytest.raises(ImagegenError):
        gan.sample(model, 2, labels=10)
    uncond, _ = make(COLOUR)
    with pytest.raises(ImagegenError):
        gan.sample(uncond.eval(), 2, labels=1)


def test_truncation_bounds_latents_and_is_reproducible():
    model, _ = make()
    z = model.draw_z(2000, torch.Generator().manual_seed(0), truncation=0.5)
    assert z.abs().max() <= 0.5 and z.std() < 0.35  # N(0,1) truncated to [-0.5, 0.5] has std ~0.28
    a = gan.sample(model.eval(), 4, labels=1, generator=torch.Generator().manual_seed(1), truncation=0.8)
    b = gan.sample(model, 4, labels=1, generator=torch.Generator().manual_seed(1), truncation=0.8)
    assert torch.equal(a, b)
    with pytest.raises(ImagegenError):
        gan.sample(model, 2, truncation=-1.0)


def calibrate_batchnorm(model):
    """Give G's BatchNorm layers real running statistics (a fresh G in eval mode is nearly flat)."""
    for m in model.G.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model.G(model.draw_z(64), torch.arange(64) % 10)


def test_inversion_fits_known_pixels_and_keeps_them():
    model, _ = make(z_dim=8)
    calibrate_batchnorm(model)
    model.eval().requires_grad_(False)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        target = model.G(model.draw_z(2, g), torch.tensor([4, 7]))  # images G can make exactly
    mask = torch.zeros(1, 16, 16)
    mask[:, :, :8] = 1  # left half known
    known = gan._known(mask, target)
    with torch.no_grad():
        start = model.G(model.draw_z(2, torch.Generator().manual_seed(9)), torch.tensor([4, 7]))
    err_start = ((start - target)[known] ** 2).mean()
    z, y, x_hat = gan.invert(model, target, mask, labels=[4, 7], generator=g, steps=100, restarts=2)
    err_fit = ((x_hat - target)[known] ** 2).mean()
    assert err_fit < 0.2 * err_start
    out = gan.complete(model, target, mask, labels=[4, 7], generator=g, steps=20, restarts=1)
    assert torch.equal(out[known], target[known])  # known pixels come back unchanged
    assert out.shape == target.shape and out.min() >= -1 and out.max() <= 1
    # unlabelled query to a conditional G: inversion searches the classes too
    _, y_found, _ = gan.invert(model, target[:1], mask, None, g, steps=5, restarts=1)
    assert y_found is not None and 0 <= int(y_found) < 10
    with pytest.raises(ImagegenError):
        gan.complete(model, target, torch.ones(3, 5, 5))


def test_interpolate_between_seeds_and_images():
    model, _ = make()
    model.eval()
    strip = gan.interpolate(model, None, None, 6, seeds="1,2")
    assert strip.shape == (6, 1, 16, 16)
    assert torch.equal(strip, gan.interpolate(model, None, None, 6, seeds=(1, 2)))  # seeds decide it
    assert not torch.allclose(strip[0], strip[-1])
    # the two ends are the seeds' own samples
    z1 = model.draw_z(1, torch.Generator().manual_seed(1))
    y1 = torch.randint(0, 10, (1,), generator=torch.Generator().manual_seed(1).manual_seed(1))
    assert z1.shape == (1, model.z_dim) and y1.shape == (1,)
    same_class = gan.interpolate(model, None, None, 3, labels=4, seeds="1,2")
    with torch.no_grad():
        end = model.G(z1, torch.tensor([4]))
    assert torch.allclose(same_class[0], end[0], atol=1e-5)
    a, b = strip[:1], strip[-1:]
    inv = gan.interpolate(model, a, b, 4, steps=3)
    assert inv.shape == (4, 1, 16, 16)
    with pytest.raises(ImagegenError):
        gan.interpolate(model, a, None, 4)
    with pytest.raises(ImagegenError):
        gan.interpolate(model, None, None, 4, seeds="1")


def test_health_check_flags_collapse_and_divergence():
    model, _ = make(health_every=10, collapse_ratio=0.2)
    b = batch()
    healthy = {"d_loss": torch.tensor(1.3), "g_loss": torch.tensor(0.8), "d_real_acc": 0.6, "d_fake_acc": 0.5}
    with torch.no_grad():  # collapse: G's last layer outputs its bias whatever z is
        model.G.out.weight.zero_()
    with pytest.warns(RuntimeWarning, match="mode collapse"):
        msg = gan.health_check(model, b.x, healthy, step=20)
    assert msg and model.health_state["flag"] == gan.HEALTH_COLLAPSE
    assert model.health_state["diversity"] < 1e-6
    with pytest.warns(RuntimeWarning, match="diverged"):
        gan.health_check(model, b.x, dict(healthy, d_loss=torch.tensor(float("nan"))), step=30)
    assert model.health_state["flag"] == gan.HEALTH_DIVERGED
    fresh, _ = make(health_every=10, collapse_ratio=0.0)  # a fresh tiny G is not diverse yet
    perfect = dict(healthy, d_real_acc=1.0, d_fake_acc=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flags = [gan.health_check(fresh, b.x, perfect, step=s) is not None for s in range(0, 60, 10)]
    assert flags == [False] * 4 + [True, True]  # D winning outright five checks in a row
    assert fresh.health_state["flag"] == gan.HEALTH_DIVERGED


def test_state_dict_round_trip_with_spectral_norm():
    model, _ = make(arch="resnet", spectral_norm=True)
    other, _ = make(arch="resnet", spectral_norm=True)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.1)
    other.load_state_dict(model.state_dict())
    model.eval(), other.eval()
    b = batch()
    assert torch.equal(model.D(b.x, b.y), other.D(b.x, b.y))
    assert torch.equal(gan.sample(model, 3, 1, torch.Generator().manual_seed(0)),
                       gan.sample(other, 3, 1, torch.Generator().manual_seed(0)))


def test_config_errors_are_user_errors():
    from imagegen import config

    for bad in ({"loss": "lsgan"}, {"arch": "stylegan"}, {"diffaug_policy": "flip"}):
        with pytest.raises(ImagegenError):
            gan.build(tiny(**bad), DIGITS)
    # ranges: when the config is read
    with pytest.raises(ImagegenError, match=r"model.d_steps must lie in \[1, 100\], got 0"):
        config.resolve("gan", overrides={"model": {"d_steps": 0}})
    with pytest.raises(ImagegenError):
        gan.build(tiny(), DataInfo(channels=1, size=7))


def test_trainer_runs_gan_with_ema(tmp_path):
    """End to end through the shared trainer: two optimisers, BatchNorm buffers in the EMA, a checkpoint."""
    from imagegen import config
    from imagegen.trainer import train as run_training

    cfg = config.resolve("gan", None, {"model": dict(gan.TEST_CONFIG),
                                       "data": {"name": "digits", "limit": 64},
                                       "train": {"steps": 3, "batch_size": 16, "sample_every": 0,
                                                 "log_every": 1, "device": "cpu"}})
    out = run_training(cfg, tmp_path / "run", progress=False)
    from imagegen import checkpoint

    ck = checkpoint.load(out)
    assert ck.has_ema() and set(ck.meta["optim"]) == {"d", "g"}
    module = gan.build(cfg.model, DIGITS)
    ck.load_module(module, "ema")
    x = gan.sample(module.eval(), 4, labels=2, generator=torch.Generator().manual_seed(0))
    assert x.shape == (4, 1, 16, 16) and torch.isfinite(x).all()
