"""The VAE's sampling prior fitted after training (ex-post density estimation, Ghosh et al. 2020)."""

import pytest
import torch

import imagegen
from imagegen import api, checkpoint
from imagegen.config import DataConfig
from imagegen.data import load_dataset
from imagegen.errors import ImagegenError
from imagegen.families import vae

TINY = ["model.latent_dim=4", "model.base_channels=8", "model.channel_mult=1,1", "data.limit=120",
        "train.batch_size=16", "train.sample_every=0", "train.ckpt_every=100"]


def _train(out, extra=(), steps=3):
    return api.train("vae", data="digits", steps=steps, out=out, overrides=TINY + list(extra), progress=False)


@pytest.fixture(scope="module")
def cond_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("vae") / "cond", ["model.class_cond=true"])


def _posterior_means(net, labels: bool):
    data = load_dataset(DataConfig(name="digits", limit=120), "train")
    with torch.no_grad():
        mu, _ = net.encode(data.batch(torch.arange(len(data))).x, data.labels if labels else None)
    return mu.double(), data.labels


def test_a_conditional_vae_fits_one_gaussian_per_class_to_its_posterior_means(cond_run):
    model = imagegen.load(cond_run, device="cpu")
    net = model.module
    assert float(net.prior_fitted) == 1.0
    mu, y = _posterior_means(net, labels=True)
    for c in range(10):  # independent computation: the class's mean and covariance of the posterior means
        sel = mu[y == c]
        cov = net.prior_scale_tril[c].double() @ net.prior_scale_tril[c].double().T
        assert torch.allclose(net.prior_mean[c].double(), sel.mean(0), atol=1e-5)
        assert torch.allclose(cov, torch.cov(sel.T) + 1e-6 * torch.eye(4, dtype=torch.float64), atol=1e-4)


def test_fitted_draws_follow_the_fitted_gaussian_and_standard_draws_do_not(cond_run):
    net = imagegen.load(cond_run, device="cpu").module
    y = torch.full((20000,), 3)
    g = torch.Generator().manual_seed(0)
    z = vae._draw_z(net, 20000, y, g, 1.0, "fitted").double()
    cov = net.prior_scale_tril[3].double() @ net.prior_scale_tril[3].double().T
    assert torch.allclose(z.mean(0), net.prior_mean[3].double(), atol=0.05 * cov.diag().sqrt().max().item() + 1e-3)
    assert torch.allclose(torch.cov(z.T), cov, atol=0.05 * cov.abs().max().item())
    half = vae._draw_z(net, 20000, y, torch.Generator().manual_seed(0), 0.5, "fitted").double()
    assert torch.allclose(half - net.prior_mean[3], 0.5 * (z - net.prior_mean[3]), atol=1e-5)  # temperature
    std = vae._draw_z(net, 20000, y, torch.Generator().manual_seed(0), 1.0, "standard").double()
    assert torch.allclose(std.mean(0), torch.zeros(4, dtype=torch.float64), atol=0.05)
    assert not torch.allclose(std.mean(0), net.prior_mean[3].double(), atol=0.05)


def test_an_unconditional_vae_fits_a_mixture_and_draws_its_components_by_weight(tmp_path):
    run = _train(tmp_path / "u", ["model.prior_components=3"])
    net = imagegen.load(run, device="cpu").module
    weights = net.prior_logits.softmax(0)
    assert float(net.prior_fitted) == 1.0 and weights.shape == (3,)
    assert torch.allclose(weights.sum(), torch.tensor(1.0)) and (weights > 0).all()
    z = vae._draw_z(net, 30000, None, torch.Generator().manual_seed(1), 1.0, "fitted").double()
    mix_mean = (weights.double()[:, None] * net.prior_mean.double()).sum(0)
    assert torch.allclose(z.mean(0), mix_mean, atol=0.05 * z.std(0).max().item())
    # the same seed gives the same image at any batch size, also with the component draw
    model = imagegen.load(run, device="cpu")
    assert torch.equal(model.sample(5, seed=4), torch.cat([model.sample(2, seed=4, batch_size=2),
                                                           model.sample(3, seed=4, first_index=2)]))


def test_fit_prior_false_keeps_n01_and_fitted_is_then_a_clear_error(tmp_path):
    run = _train(tmp_path / "n", ["model.fit_prior=false"], steps=1)
    model = imagegen.load(run, device="cpu")
    assert float(model.module.prior_fitted) == 0.0
    assert torch.equal(model.sample(4, seed=0), model.sample(4, seed=0, prior="standard"))
    with pytest.raises(ImagegenError, match="no fitted prior.*--prior standard"):
        model.sample(4, seed=0, prior="fitted")
    with pytest.raises(ImagegenError, match="prior"):
        model.sample(4, seed=0, prior="gaussian")


def test_a_checkpoint_from_before_the_fitted_prior_still_loads_and_samples_from_n01(cond_run, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(cond_run, old)
    path = checkpoint.latest(old)
    ck = checkpoint.load(path)
    tensors = {k: v for k, v in ck.tensors.items() if "/prior_" not in k}
    assert len(tensors) < len(ck.tensors)
    checkpoint.atomic_save_tensors(tensors, path, metadata=_metadata(path))
    model = imagegen.load(old, device="cpu")
    assert float(model.module.prior_fitted) == 0.0
    assert model.sample(3, labels=[0, 1, 2], seed=0).shape == (3, 1, 16, 16)
    fitted = imagegen.load(cond_run, device="cpu").sample(3, labels=[0, 1, 2], seed=0)
    assert not torch.equal(model.sample(3, labels=[0, 1, 2], seed=0), fitted)


def _metadata(path):
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.metadata()


def test_the_cli_offers_the_prior_choice(cond_run, tmp_path):
    from typer.testing import CliRunner

    from imagegen.cli import app

    out = tmp_path / "s.png"
    res = CliRunner().invoke(app, ["sample", str(cond_run), "--n", "4", "--labels", "balanced", "--prior",
                                   "standard", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.is_file()
    res = CliRunner().invoke(app, ["sample", "--help"])
    assert "--prior" in res.output


def test_an_unconditional_vae_trained_on_one_image_keeps_a_standard_prior(tmp_path):
    # EM needs two points (found by test_faults' fuzzing: --set data.limit=1 stopped with sklearn's ValueError)
    run = _train(tmp_path / "one", ["data.limit=1", "train.batch_size=1"], steps=1)
    net = imagegen.load(run, device="cpu").module
    assert float(net.prior_fitted) == 1.0 and net.prior_logits[0] == 0 and torch.isinf(net.prior_logits[1:]).all()
    assert torch.equal(net.prior_mean, torch.zeros_like(net.prior_mean))
    x = imagegen.load(run, device="cpu").sample(2, seed=0)
    assert torch.isfinite(x).all()
