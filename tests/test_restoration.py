"""Restoration: the operators (forward map, pseudo-inverse), every family's restore, the API, the CLI."""

import dataclasses
import inspect
import re

import numpy as np
import pytest
import torch

from helpers import run_cli
from imagegen import api, checkpoint, config, registry
from imagegen import restoration as R
from imagegen import samplers as S
from imagegen.data import DataInfo
from imagegen.errors import ImagegenError

GREY = DataInfo(channels=1, size=16, num_classes=0, bits=8, name="unit")
RGB = DataInfo(channels=3, size=16, num_classes=0, bits=8, name="unit3")
# few network calls: enough to exercise every path, not to restore anything well
FAST = {"diffusion": {"steps": 3, "resample": 1}, "gan": {"steps": 4, "restarts": 2},
        "vae": {"iterations": 3, "steps": 4}, "pixelcnn": {}}


def _images(info, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, info.channels, info.size, info.size, generator=g) * 2 - 1


def _top_half(info):
    m = torch.zeros(1, 1, info.size, info.size)
    m[..., : info.size // 2, :] = 1
    return m


def _loaded(name, info):
    fam = registry.get_family(name)
    cfg = config.resolve(name, overrides={"model": getattr(fam, "TEST_CONFIG", {})})
    torch.manual_seed(0)
    model = fam.build(cfg.model, info).eval()
    model.requires_grad_(False)
    return api.LoadedModel(name, cfg, info, model, {}, None, torch.device("cpu"))


def _matrix(fn, n_in):
    """The matrix of a linear map on flattened inputs: column j is fn(e_j)."""
    return torch.stack([fn(e) for e in torch.eye(n_in, dtype=torch.float64)], 1)


# ------------------------------------------------------------------------------------------ the operators


@pytest.mark.parametrize("task,info", [("sr2", GREY), ("sr4", GREY), ("sr2", RGB), ("colourise", RGB),
                                       ("sr2+colourise", RGB), ("sr4+denoise:0.1", GREY)])
def test_pseudo_inverse_is_moore_penrose_and_a_right_inverse(task, info):
    """A+ equals torch.linalg.pinv of A's matrix (built column by column on a tiny image), and A(A+(y)) = y."""
    small = dataclasses.replace(info, size=4)
    op = R.parse_task(task, small.channels, small.size)
    c, s = small.channels, small.size
    mc, ms = op.measurement_shape(c, s)
    n_in, n_out = c * s * s, mc * ms * ms
    A = _matrix(lambda v: op.forward(v.view(1, c, s, s)).flatten(), n_in)  # (n_out, n_in)
    P = _matrix(lambda v: op.pinv(v.view(1, mc, ms, ms)).flatten(), n_out)  # (n_in, n_out)
    torch.testing.assert_close(P, torch.linalg.pinv(A), atol=1e-12, rtol=0)
    y = torch.rand(3, mc, ms, ms, dtype=torch.float64) * 2 - 1
    torch.testing.assert_close(op.forward(op.pinv(y)), y, atol=1e-12, rtol=0)


def test_shapes_and_values_of_each_map():
    x = _images(RGB)
    y = R.downsample(4).forward(x)
    assert y.shape == (2, 3, 4, 4)
    torch.testing.assert_close(y[0, 0, 0, 0], x[0, 0, :4, :4].mean())
    up = R.downsample(4).pinv(y)
    assert up.shape == x.shape and torch.equal(up[:, :, :4, :4], y[:, :, :1, :1].expand(-1, -1, 4, 4))
    g = R.greyscale(3).forward(x)
    assert g.shape == (2, 1, 16, 16) and torch.allclose(g, x.mean(1, keepdim=True))
    assert torch.equal(R.greyscale(3).pinv(g), g.expand(-1, 3, -1, -1))
    m = _top_half(RGB)
    op = R.mask(m)
    assert torch.equal(op.forward(x), x * m) and torch.equal(op.pinv(op.forward(x)), op.forward(x))  # A+ A = A
    ident = R.noise(0.3)
    assert torch.equal(ident.forward(x), x) and ident.tasks == ("denoise",) and not ident.noiseless


def test_measure_adds_seeded_noise_of_the_given_std():
    x = torch.zeros(4, 1, 32, 32)
    op = R.noise(0.2)
    a, b = op.measure(x, torch.Generator().manual_seed(0)), op.measure(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and abs(a.std().item() - 0.2) < 0.01
    assert torch.equal(R.downsample(2).measure(x), R.downsample(2).forward(x))  # noiseless: no draw


@pytest.mark.parametrize("task,info", [("sr2", GREY), ("sr4", RGB), ("colourise", RGB), ("sr2+colourise", RGB),
                                       ("inpaint", GREY)])
def test_projection_and_finalize_honour_the_measurement(task, info):
    op = R.parse_task(task, info.channels, info.size, _top_half(info))
    y = op.forward(_images(info, seed=1))
    guess = _images(info, seed=2) * 3  # far outside [-1, 1]: finalize must bring it back and still explain y
    torch.testing.assert_close(op.forward(op.project(guess, y)), y, atol=1e-6, rtol=0)
    out = op.finalize(guess, y)
    torch.testing.assert_close(op.forward(out), y, atol=1e-6, rtol=0)
    assert out.min() >= -1 - 1e-3 and out.max() <= 1 + 1e-3
    if task == "inpaint":
        assert torch.equal(out[..., :8, :], y[..., :8, :])  # the known pixels bit for bit


def test_parse_task_names_and_errors():
    op = R.parse_task("sr2+denoise:0.1", 1, 28)
    assert op.measurement_shape(1, 28) == (1, 14) and op.sigma == 0.1 and op.tasks == ("sr", "denoise")
    assert R.parse_task("Colorize", 3, 32).tasks == ("colourise",)
    assert R.parse_task("sr4+colourise", 3, 32).measurement_shape(3, 32) == (1, 8)
    for bad, words in (("sr1", "K >= 2"), ("sr3", "divisible by 3"), ("colourise", "3-channel"),
                       ("inpaint", "needs a mask"), ("denoise:-1", "noise std"), ("denoise", "noise std"),
                       ("blur", "unknown restoration task"), ("sr2+sr2", "one srK"), ("", "--task")):
        with pytest.raises(ImagegenError, match=words) as e:
            R.parse_task(bad, 1, 16)
        assert "\n" not in str(e.value)
    with pytest.raises(ImagegenError, match="inpaint combines only"):
        R.parse_task("inpaint+sr2", 1, 16, _top_half(GREY))


# ------------------------------------------------------------------------------------------ every family


def _cases():
    for name in registry.FAMILIES:
        tasks = registry.restore_tasks(name)
        for task, info in (("sr2", GREY), ("sr4", GREY), ("inpaint", GREY), ("colourise", RGB),
                           ("sr2+colourise", RGB)):
            op = R.parse_task(task, info.channels, info.size, _top_half(info))
            if R.offered(tasks, op):
                yield name, task, info


@pytest.mark.parametrize("name,task,info", list(_cases()))
def test_noiseless_restoration_honours_y(name, task, info):
    """For every family that offers the task: A(restored) equals y to float precision, in [-1, 1]."""
    loaded = _loaded(name, info)
    mask = _top_half(info)
    op = R.parse_task(task, info.channels, info.size, mask)
    y = op.forward(_images(info))
    out = loaded.restore(y, task, mask=mask, seed=0, **FAST[name])
    assert out.shape == (2, info.channels, info.size, info.size) and torch.isfinite(out).all()
    torch.testing.assert_close(op.forward(out), y, atol=1e-5, rtol=0)
    assert out.min() >= -1 - 1e-3 and out.max() <= 1 + 1e-3
    again = loaded.restore(y, op, seed=0, **FAST[name])  # an Operator works as well as a task string
    assert torch.equal(out, again)


@pytest.mark.parametrize("name", [n for n in registry.FAMILIES if "denoise" in registry.restore_tasks(n)])
@pytest.mark.parametrize("task", ["denoise:0.2", "sr2+denoise:0.1"])
def test_noisy_restoration_is_seeded_and_in_range(name, task):
    loaded = _loaded(name, GREY)
    op = R.parse_task(task, 1, 16)
    y = op.measure(_images(GREY), torch.Generator().manual_seed(3))
    if task == "denoise:0.2":
        assert y.abs().max() > 1  # a noisy measurement may leave [-1, 1]; the API accepts it
    a = loaded.restore(y, task, seed=5, **FAST[name])
    b = loaded.restore(y, task, seed=5, **FAST[name])
    assert a.shape == (2, 1, 16, 16) and torch.equal(a, b) and a.min() >= -1 and a.max() <= 1


@pytest.mark.parametrize("name", [n for n in registry.FAMILIES if "complete" in registry.capabilities(n)])
def test_complete_is_restore_with_a_mask(name):
    """``complete`` and ``restore(inpaint)`` are one mechanism: the same seed gives the same pixels."""
    fam = registry.get_family(name)
    loaded = _loaded(name, GREY)
    x, mask = _images(GREY), _top_half(GREY)
    opts = {k: v for k, v in FAST[name].items() if k in inspect.signature(fam.complete).parameters}
    via_complete = loaded.complete(x, mask, seed=4, **opts)
    via_restore = loaded.restore(x * mask, "inpaint", mask=mask, seed=4, **opts)
    assert torch.equal(via_complete, via_restore)


def test_a_family_without_the_task_names_the_families_that_have_it():
    loaded = _loaded("pixelcnn", GREY)
    with pytest.raises(ImagegenError) as e:
        loaded.restore(torch.zeros(1, 1, 8, 8), "sr2")
    msg = str(e.value)
    assert "\n" not in msg and "pixelcnn family does not offer sr" in msg
    offering = [f for f in registry.FAMILIES if "sr" in registry.restore_tasks(f)]
    assert offering and f"families that do: {', '.join(offering)}" in msg
    with pytest.raises(ImagegenError, match="does not offer denoise"):  # a noisy mask needs denoise too
        registry.get_family("pixelcnn").restore(loaded.module, torch.zeros(1, 1, 16, 16),
                                                R.mask(_top_half(GREY), sigma=0.1))


def test_api_checks_the_measurement():
    loaded = _loaded("vae", GREY)
    with pytest.raises(ImagegenError, match=r"\(N, 1, 8, 8\)"):
        loaded.restore(torch.zeros(1, 1, 16, 16), "sr2")  # sr2 takes the low-resolution image
    with pytest.raises(ImagegenError, match="values in"):
        loaded.restore(torch.full((1, 1, 8, 8), 2.0), "sr2")
    with pytest.raises(ImagegenError, match="does not take option 'sampler'"):
        loaded.restore(torch.zeros(1, 1, 8, 8), "sr2", sampler="ddim")
    with pytest.raises(ImagegenError, match="task string"):
        loaded.restore(torch.zeros(1, 1, 8, 8), 2)


def test_ddnm_sampler_equals_projected_denoiser_in_ddim():
    """Noiseless DDNM (sample_ddnm, sigma_y = 0) is DDIM with the null-space-projected denoiser."""
    op = R.downsample(2)
    x0 = _images(GREY, n=3)
    y = op.forward(x0)

    def denoiser(x, sigma):  # any smooth map will do; this one shrinks towards 0.3
        return (x + 0.3 * sigma**2) / (1 + sigma**2)

    sigmas = S.karras_sigmas(0.01, 10.0, 6)
    x_T = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)) * 10
    a = S.sample_ddnm(denoiser, x_T, sigmas, op.forward, op.pinv, y, 0.0, torch.Generator().manual_seed(1), eta=0.85)
    b = S.sample_ddim(S.projected_denoiser(denoiser, lambda z: op.project(z, y)), x_T, sigmas,
                      torch.Generator().manual_seed(1), eta=0.85)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(op.forward(a), y, atol=1e-5, rtol=0)


def test_ddnm_plus_tends_to_ddnm_and_pulls_towards_y():
    """DDNM+ with a vanishing sigma_y is noiseless DDNM; with a real one it does not reproduce the noisy y
    exactly (A x != y) but explains it far better than the unconditional sample does."""
    op = R.downsample(2)
    x0 = _images(GREY, n=2)
    y = op.forward(x0)
    y_noisy = y + 0.2 * torch.randn(y.shape, generator=torch.Generator().manual_seed(2))

    def denoiser(x, sigma):
        return x / (1 + sigma**2)

    sigmas = S.karras_sigmas(0.01, 10.0, 8)
    x_T = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)) * 10
    run = lambda yy, s_y: S.sample_ddnm(denoiser, x_T, sigmas, op.forward, op.pinv, yy, s_y,  # noqa: E731
                                        torch.Generator().manual_seed(1))
    torch.testing.assert_close(run(y, 1e-9), run(y, 0.0), atol=1e-4, rtol=0)
    free = S.sample_ddim(denoiser, x_T, sigmas, torch.Generator().manual_seed(1), eta=0.85)
    noisy = run(y_noisy, 0.2)
    miss = (op.forward(noisy) - y_noisy).abs().mean()
    assert 1e-4 < miss < 0.5 * (op.forward(free) - y_noisy).abs().mean()


# ------------------------------------------------------------------------------------------ the CLI


def _run_dir(tmp_path, name, info):
    loaded = _loaded(name, info)
    meta = {"family": name, "config": loaded.config.to_dict(), "data_info": info.to_dict(), "step": 1,
            "images_seen": 8}
    run = tmp_path / name
    checkpoint.save(run / "checkpoints" / "ckpt-00000001.safetensors", meta=meta, model=loaded.module)
    return run


def _png(path, size, channels):
    from PIL import Image

    arr = np.random.default_rng(0).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    Image.fromarray(arr).convert("RGB" if channels == 3 else "L").save(path)
    return path


def test_cli_restore_and_enhance(tmp_path, capsys):
    from PIL import Image

    run = _run_dir(tmp_path, "diffusion", GREY)
    low = _png(tmp_path / "low.png", 8, 1)
    code, out, err = run_cli(["enhance", run, "--image", low, "--scale", "2", "--steps", "2", "--out",
                              tmp_path / "big.png"], capsys)
    assert code == 0, err
    with Image.open(tmp_path / "big.png") as im, Image.open(low) as im_low:
        big, small = np.asarray(im, dtype=np.float64), np.asarray(im_low, dtype=np.float64)
    assert big.shape[:2] == (16, 16)
    pooled = big.reshape(8, 2, 8, 2, -1).mean((1, 3))[..., 0]  # the enlargement averages back to the input
    assert np.abs(pooled - small).max() <= 1.0  # one level of rounding
    code, _, err = run_cli(["restore", run, "--image", _png(tmp_path / "full.png", 16, 1), "--task", "inpaint",
                            "--keep", "top-half", "--n", "2", "--compare", "--steps", "2", "--method", "ddnm", "--out",
                            tmp_path / "fill.png"], capsys)
    assert code == 0, err
    with Image.open(tmp_path / "fill.png") as im:
        assert im.size == (3 * 16 + 4, 16 + 2)  # the measurement and 2 draws, padding 1
    code, _, err = run_cli(["restore", run, "--image", low, "--task", "sr2+denoise:0.1", "--steps", "2",
                            "--out", tmp_path / "n.png"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["enhance", run, "--image", low, "--scale", "3", "--out", tmp_path / "x.png"], capsys)
    assert code == 2 and "--scale must be 2 or 4" in err


def test_cli_restore_unsupported_task_is_one_line(tmp_path, capsys):
    run = _run_dir(tmp_path, "pixelcnn", GREY)
    code, _, err = run_cli(["restore", run, "--image", _png(tmp_path / "low.png", 8, 1), "--task", "sr2",
                            "--out", tmp_path / "o.png"], capsys)
    assert code == 2 and err.count("\n") == 1 and "families that do: vae, gan, diffusion" in err
    code, out, _ = run_cli(["list"], capsys)
    assert re.search(r"pixelcnn +sample, nll, complete, restore \(inpaint\)", out)
