"""The diffusion family's likelihood: the variational bound against closed forms (with an oracle network),
the discretised decoder, the Monte-Carlo estimate over t, and eval-nll end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from helpers import run_cli
from imagegen.cli import main
from imagegen.data import DataInfo, to_float
from imagegen.errors import ImagegenError
from imagegen.families import diffusion as D
from imagegen.likelihood import evaluate_nll

INFO = DataInfo(channels=1, size=8, num_classes=3)


def tiny(formulation="eps", class_cond=False, info=INFO, **kw) -> D.Diffusion:
    torch.manual_seed(0)
    cfg = D.Config(**{**D.TEST_CONFIG, "formulation": formulation, "class_cond": class_cond, **kw})
    return D.build(cfg, info).eval()


def random_tiny(formulation="eps", **kw) -> D.Diffusion:
    """A tiny model whose zero-initialised layers (the output conv, each ResBlock's last conv) are random,
    so its predictions depend on x_t, t and the label."""
    model = tiny(formulation, **kw)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1 and not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def images(n, seed=0, info=INFO) -> torch.Tensor:
    """(n, C, H, W) 8-bit images as the data pipeline makes them, with some pixels at both edge levels."""
    g = torch.Generator().manual_seed(seed)
    u8 = torch.randint(0, 256, (n, info.channels, info.size, info.size), generator=g, dtype=torch.uint8)
    u8[:, :, 0, :3] = 0
    u8[:, :, 1, :3] = 255
    return to_float(u8)


def gen(seed):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------ the bound, in closed form


class Oracle(nn.Module):
    """The ideal network for data that is a point mass at one image per class (x0s[y]): from any x_t
    the posterior over x0 is that image. ``delta`` shifts the eps it implies by a constant."""

    def __init__(self, x0s, abar, formulation, delta):
        super().__init__()
        self.x0s, self.abar, self.formulation, self.delta = x0s.double(), abar, formulation, delta

    def forward(self, x_t, t, y=None):
        a = self.abar[t.long()].sqrt().view(-1, 1, 1, 1)
        s = (1 - self.abar[t.long()]).sqrt().view(-1, 1, 1, 1)
        x_t = x_t.double()
        eps = (x_t - a * self.x0s[y]) / s + self.delta
        if self.formulation == "eps":
            return eps.float()
        x0_hat = (x_t - s * eps) / a  # the x0 that this eps implies; v = sqrt(abar) eps - sqrt(1 - abar) x0
        return (a * eps - s * x0_hat).float()


def closed_form_bound(x0, betas, variance, delta):
    """Ho et al. 2020 eq. 5 term by term for the oracle: L_T = KL(N(sqrt(abar_T) x0, 1 - abar_T) || N(0, 1));
    L_{t-1} (t >= 2) from their eq. 12, beta_t^2 / (2 sigma_t^2 alpha_t (1 - abar_t)) ||eps - eps_hat||^2,
    plus the variance mismatch when sigma_t^2 != beta_tilde_t; L_0 from the normal CDF over x0's bin."""
    x0 = x0.double()
    d = x0.numel()
    alphas = 1 - betas
    abar = torch.cumprod(alphas, 0)
    prior = (0.5 * (abar[-1] * x0**2 + (1 - abar[-1]) - 1 - torch.log(1 - abar[-1]))).sum()
    beta_tilde = betas[1:] * (1 - abar[:-1]) / (1 - abar[1:])  # t = 2..T
    sigma2 = beta_tilde if variance == "posterior" else betas[1:]
    mean_part = betas[1:] ** 2 / (2 * sigma2 * alphas[1:] * (1 - abar[1:])) * d * delta**2
    var_part = 0.5 * d * (torch.log(sigma2 / beta_tilde) + beta_tilde / sigma2 - 1)
    middle = (mean_part + var_part).sum()
    sigma1 = (beta_tilde[0] if variance == "posterior" else betas[0]).sqrt()
    mu = x0 - (1 - abar[0]).sqrt() / abar[0].sqrt() * delta  # the decoder's mean x0_hat at t = 1
    normal = torch.distributions.Normal(mu, sigma1)
    h = 1 / 255
    p = normal.cdf(x0 + h) - normal.cdf(x0 - h)
    p = torch.where(x0 < -1 + h / 2, normal.cdf(x0 + h), torch.where(x0 > 1 - h / 2, 1 - normal.cdf(x0 - h), p))
    return prior + middle - torch.log(p).sum()


@pytest.mark.parametrize("formulation,variance,delta,schedule,max_batch", [
    ("eps", "posterior", 0.0, "linear", 256),
    ("v", "posterior", 0.05, "linear", 5),
    ("eps", "beta", 0.05, "cosine", 256),
    ("v", "beta", 0.0, "cosine", 7),
])
def test_bound_with_the_oracle_network_equals_the_closed_form(formulation, variance, delta, schedule, max_batch):
    """Exact prediction (delta 0): every KL term for t >= 2 vanishes and the bound is the prior KL plus the
    decoder's -log prob. A shifted eps (delta) adds eq. 12's weighted error at every t. Two images with
    their own labels, split over many network calls (max_batch), also check that images, steps and labels
    stay paired."""
    model = tiny(formulation, class_cond=True, num_timesteps=1000, schedule=schedule)
    betas = D.make_betas(schedule, 1000, model.cfg.beta_start, model.cfg.beta_end)
    x0s = images(3)
    model.unet = Oracle(x0s, torch.cumprod(1 - betas, 0), formulation, delta)
    labels = torch.tensor([2, 0])
    got = D.nll(model, x0s[labels], labels=labels, variance=variance, clip_denoised=delta == 0,
                max_batch=max_batch, generator=gen(0))
    expected = torch.stack([closed_form_bound(x0s[i], betas, variance, delta) for i in labels])
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-4)
    if delta == 0:  # the same data under a wrong label is far less likely
        wrong = D.nll(model, x0s[labels], labels=torch.tensor([1, 1]), variance=variance, generator=gen(0))
        assert (wrong > expected + 100).all()


# ------------------------------------------------------------------------------ the discretised decoder


@pytest.mark.parametrize("levels", [256, 2])
def test_decoder_probabilities_sum_to_one_over_the_levels(levels):
    u8 = torch.arange(256, dtype=torch.uint8) if levels == 256 else torch.tensor([0, 255], dtype=torch.uint8)
    grid = to_float(u8).double()  # the levels exactly as the data pipeline makes them (float32)
    for mean, std in [(0.0, 1e-3), (0.3, 0.01), (-0.999, 0.05), (1.7, 0.2), (-3.0, 1.0), (0.1, 30.0)]:
        logp = D.discretized_gaussian_log_prob(grid, torch.tensor(mean, dtype=torch.float64),
                                               torch.tensor(std, dtype=torch.float64), levels)
        assert torch.isfinite(logp).all() and (logp <= 0).all()
        torch.testing.assert_close(logp.logsumexp(0), torch.tensor(0.0, dtype=torch.float64), atol=1e-10, rtol=0)


def test_decoder_is_accurate_deep_in_the_tails():
    """A bin hundreds of standard deviations from the mean, against 50-digit arithmetic."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50
    for level, mean, std in [(191, 0.0, 0.01), (64, 0.0, 0.01), (153, 0.9, 0.02)]:
        x = to_float(torch.tensor(level, dtype=torch.uint8))  # float32, as the data pipeline makes it
        got = D.discretized_gaussian_log_prob(x, torch.tensor(mean, dtype=torch.float64), std).item()
        centre = mpmath.mpf(2 * level) / 255 - 1
        a = (centre - mpmath.mpf(1) / 255 - mean) / std
        b = (centre + mpmath.mpf(1) / 255 - mean) / std
        if a > 0:  # Phi(b) - Phi(a) = Phi(-a) - Phi(-b): both terms tiny, so 50 digits resolve them
            a, b = -b, -a
        want = float(mpmath.log(mpmath.ncdf(b) - mpmath.ncdf(a)))
        assert math.isfinite(got) and got == pytest.approx(want, rel=1e-9)


# ------------------------------------------------------------------------------ a random model


def test_monte_carlo_estimate_over_t_is_unbiased():
    """The mean of many t-sampled estimates agrees with the full sum within its standard error (a check
    for gross errors, e.g. a wrong scale or range of t: the terms vary over t by orders of magnitude, so
    the standard error stays near 10% of the bound)."""
    model = random_tiny()  # T = 100
    x = images(2)
    full = torch.stack([D.nll(model, x, generator=gen(s)) for s in range(2)]).mean(0)  # (2,)
    mc = torch.stack([D.nll(model, x, t_samples=10, generator=gen(100 + s)) for s in range(60)])  # (60, 2)
    mean, sem = mc.mean(0), mc.std(0) / math.sqrt(mc.shape[0])
    assert (sem > 0).all() and (sem < 0.15 * full).all()
    assert ((mean - full).abs() < 4 * sem).all(), (mean, full, sem)


@pytest.mark.parametrize("formulation", ["eps", "v"])
def test_bound_is_finite_positive_and_uses_the_labels(formulation):
    model = random_tiny(formulation, class_cond=True)
    x = images(3)
    a = D.nll(model, x, labels=torch.tensor([0, 1, 2]), generator=gen(0))
    b = D.nll(model, x, labels=torch.tensor([2, 2, 2]), generator=gen(0))
    assert a.shape == (3,) and torch.isfinite(a).all() and (a > 0).all()
    assert not torch.allclose(a, b)
    assert torch.equal(a, D.nll(model, x, labels=torch.tensor([0, 1, 2]), generator=gen(0)))  # reproducible
    assert not model.training


def test_binary_data_uses_two_levels():
    info = DataInfo(channels=1, size=8, bits=1)
    model = random_tiny(info=info)
    x = torch.where(images(2, info=info) > 0, 1.0, -1.0)
    nats = D.nll(model, x, generator=gen(0))
    assert torch.isfinite(nats).all() and (nats >= 0).all()
    # the 8-bit decoder would charge far more for the same image: its bins are 2/255 wide, not 1 wide
    model.bits = 8
    assert (D.nll(model, x, generator=gen(0)) > nats + 10).all()


def test_user_errors():
    with pytest.raises(ImagegenError, match="formulation=edm") as e:
        D.nll(tiny("edm"), images(1))
    assert "\n" not in str(e.value) and "--set model.formulation=eps" in str(e.value)
    with pytest.raises(ImagegenError, match="variance"):
        D.nll(tiny(), images(1), variance="learned")
    with pytest.raises(ImagegenError, match="t_samples"):
        D.nll(tiny(), images(1), t_samples=-1)
    with pytest.raises(ImagegenError, match="label dropout"):
        D.nll(tiny(class_cond=True, label_dropout=0.0), images(1))


# ------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("diffnll") / "run"
    main(["train", "diffusion", "--data", "digits", "--steps", "2", "--out", str(out),
          "--set", "model.base_channels=8", "--set", "model.channel_mult=1,2", "--set", "model.num_res_blocks=1",
          "--set", "model.attn_resolutions=4", "--set", "model.num_timesteps=20", "--set", "train.batch_size=8",
          "--set", "data.limit=32", "--set", "train.sample_every=0"])
    return out


def test_eval_nll_end_to_end(trained, tmp_path, capsys):
    out = tmp_path / "nll.json"
    code, stdout, err = run_cli(["eval-nll", trained, "--n", 6, "--batch-size", 4, "--device", "cpu",
                                 "--out", out], capsys)
    assert code == 0, err
    res = json.loads(out.read_text())
    assert res["family"] == "diffusion" and res["n"] == 6 and res["bound"] == D.NLL_KIND
    assert math.isfinite(res["bits_per_dim"]) and res["bits_per_dim"] > 0
    assert "bits/dim" in stdout
    code, _, err = run_cli(["eval-nll", trained, "--n", 6, "--device", "cpu", "--t-samples", 5, "--out", out], capsys)
    assert code == 0, err
    mc = json.loads(out.read_text())
    assert mc["options"] == {"t_samples": 5} and math.isfinite(mc["bits_per_dim"]) and mc["bits_per_dim"] > 0
    same = evaluate_nll(trained, n=6, device="cpu", progress=False, t_samples=5)  # same seed, same estimate
    assert mc == {**same, "seconds": mc["seconds"]}


def test_t_samples_is_a_diffusion_option(tmp_path, capsys):
    run = tmp_path / "vae"
    main(["train", "vae", "--data", "digits", "--steps", "1", "--out", str(run), "--set", "data.limit=16",
          "--set", "train.sample_every=0"])
    code, _, err = run_cli(["eval-nll", run, "--n", 4, "--t-samples", 5], capsys)
    assert code != 0 and "t_samples" in err and "Traceback" not in err
