"""Latent models: the first-stage autoencoder, its codes, and every generative family trained on them."""

import inspect
import shutil

import pytest
import torch

from helpers import run_cli
from imagegen import api, checkpoint, registry
from imagegen.config import DataConfig
from imagegen.data import load_dataset
from imagegen.errors import ImagegenError
from imagegen.latent import load_first_stage

AE = ["model.base_channels=8", "model.channel_mult=[1,2]", "model.latent_channels=2", "data.limit=128",
      "train.batch_size=32", "train.sample_every=0", "train.log_every=5"]
GENERATIVE = [n for n in registry.FAMILIES if registry.generative(n)]


def _tiny(name: str) -> list[str]:
    fam = registry.get_family(name)
    return [f"model.{k}={v}".replace(" ", "") for k, v in getattr(fam, "TEST_CONFIG", {}).items()]


def _attn_fix(name: str) -> list[str]:
    # the diffusion TEST_CONFIG puts attention at 16x16 pixel maps; codes are 8x8
    return ["model.attn_resolutions=[4]"] if name == "diffusion" else []


@pytest.fixture(scope="module")
def ae_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "ae"
    api.train("autoencoder", data="digits", steps=20, out=out, overrides=AE, progress=False)
    return out


def _second_stage(name, ae, out, steps=3, extra=()):
    return api.train(name, data="digits", steps=steps, out=out, latent=ae, progress=False,
                     overrides=_tiny(name) + _attn_fix(name) + ["data.limit=64", "train.batch_size=8",
                                                                "train.sample_every=0", *extra])


def _digits(n=4):
    ds = load_dataset(DataConfig(name="digits"), "test")
    return ds.batch(torch.arange(n)).x


def test_first_stage_round_trip_shapes_and_grid(ae_run):
    stage = load_first_stage(ae_run)
    assert stage.latent_shape == (2, 8, 8) and stage.factor == 2
    x = _digits()
    z = stage.encode(x)
    assert z.shape == (4, 2, 8, 8) and z.min() >= -1 and z.max() <= 1
    levels = stage.module.cfg.levels  # FSQ: every code on the grid of `levels` values
    k = (z + 1) * (levels - 1) / 2
    assert torch.allclose(k, k.round(), atol=1e-4)
    x_hat = stage.decode(z)
    assert x_hat.shape == x.shape and x_hat.min() >= -1 and x_hat.max() <= 1
    # decoding anything a second stage makes first snaps it to the grid
    assert torch.equal(stage.decode(z + 0.2 / (levels - 1)), x_hat)
    # the autoencoder learned something in 20 steps: reconstructions beat a constant image
    assert (x_hat - x).pow(2).mean() < (x - x.mean()).pow(2).mean()


def test_latent_mask_keeps_a_cell_only_when_all_its_pixels_are_known(ae_run):
    stage = load_first_stage(ae_run)
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., :7, :] = 1  # rows 0..6 known: cells 0..2 (rows 0..5) fully, cell 3 (rows 6, 7) half
    m = stage.latent_mask(mask)
    assert m.shape == (1, 1, 8, 8)
    assert m[..., :3, :].eq(1).all() and m[..., 3:, :].eq(0).all()


@pytest.mark.parametrize("name", GENERATIVE)
def test_every_family_trains_on_codes_samples_completes_and_round_trips(name, ae_run, tmp_path):
    """The shared contract, through a first stage: samples are images, completion keeps the known pixels,
    a checkpoint reloads to the same samples, and the checkpoint records the first stage."""
    run = _second_stage(name, ae_run, tmp_path / name)
    model = api.load(run, device="cpu")
    assert model.first_stage is not None and model.info.size == 16
    fam = model.fam
    opts = getattr(fam, "PREVIEW_OPTIONS", {})
    a, b = model.sample(3, seed=5, **opts), model.sample(3, seed=5, **opts)
    assert a.shape == (3, 1, 16, 16) and torch.isfinite(a).all() and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b)
    rec = checkpoint.read_meta(checkpoint.resolve(run))["latent"]
    assert rec["first_stage"]["sha256"] == load_first_stage(ae_run).sha256
    assert rec["data_info"]["size"] == 8 and rec["data_info"]["channels"] == 2
    if "complete" in registry.capabilities(name):
        x = _digits(2)
        mask = torch.zeros(1, 1, 16, 16)
        mask[..., :8, :] = 1
        copts = {k: v for k, v in opts.items() if k in inspect.signature(fam.complete).parameters}
        if name == "gan":
            copts["steps"] = 5
        out = model.complete(x, mask, seed=0, **copts)
        assert out.shape == x.shape and torch.isfinite(out).all()
        assert torch.equal(out[..., :8, :], x[..., :8, :])


def test_latent_diffusion_interpolates_and_denoises_in_image_space(ae_run, tmp_path):
    model = api.load(_second_stage("diffusion", ae_run, tmp_path / "d"), device="cpu")
    x = _digits(2)
    strip = model.interpolate(x[:1], x[1:], 4, steps=3)
    assert strip.shape == (4, 1, 16, 16)
    assert model.denoise(x, 0.3, steps=3).shape == x.shape
    with pytest.raises(ImagegenError, match="codes, not over pixels"):
        model.nll(x)


def test_changed_moved_or_missing_first_stage(ae_run, tmp_path):
    runs = tmp_path / "runs"
    ae = runs / "ae"
    shutil.copytree(ae_run, ae)
    run = _second_stage("pixelcnn", ae, runs / "p")
    # moved together: found through the path relative to the run
    shutil.move(str(runs), str(tmp_path / "moved"))
    assert api.load(tmp_path / "moved" / "p", device="cpu").first_stage is not None
    # missing: one line that names the path and the fix
    ae_file = checkpoint.latest(tmp_path / "moved" / "ae")
    ae_file.rename(ae_file.with_suffix(".bak"))
    with pytest.raises(ImagegenError, match="first stage .* is missing"):
        api.load(tmp_path / "moved" / "p", device="cpu")
    # changed: another autoencoder's weights under the same name are refused by their sha256
    other = api.train("autoencoder", data="digits", steps=2, out=tmp_path / "ae2", overrides=AE + ["train.seed=1"],
                      progress=False)
    shutil.copy(checkpoint.latest(other), ae_file)
    with pytest.raises(ImagegenError, match="has changed since this model was trained"):
        api.load(tmp_path / "moved" / "p", device="cpu")
    del run


def test_resume_refuses_a_first_stage_that_trained_on(ae_run, tmp_path):
    ae = tmp_path / "ae"
    shutil.copytree(ae_run, ae)
    run = _second_stage("vae", ae, tmp_path / "v", steps=2)
    api.train("autoencoder", data="digits", steps=22, out=ae, overrides=AE, progress=False)  # a newer checkpoint
    with pytest.raises(ImagegenError, match="different data.latent"):
        _second_stage("vae", ae, run, steps=4)


def test_bad_latent_settings_are_one_line_errors(ae_run, tmp_path):
    vae = api.train("vae", data="digits", steps=1, out=tmp_path / "vae", progress=False,
                    overrides=_tiny("vae") + ["data.limit=16", "train.sample_every=0"])
    with pytest.raises(ImagegenError, match="must be an autoencoder run"):
        _second_stage("diffusion", vae, tmp_path / "x")
    with pytest.raises(ImagegenError, match="data.hflip"):
        _second_stage("diffusion", ae_run, tmp_path / "y", extra=["data.hflip=true"])
    with pytest.raises(ImagegenError, match="trained on 1x16x16 images"):
        _second_stage("diffusion", ae_run, tmp_path / "z", extra=["data.image_size=8"])
    with pytest.raises(ImagegenError, match="draws no samples"):
        api.load(ae_run, device="cpu").sample(2)
    with pytest.raises(ImagegenError, match="does not divide the image size"):
        api.train("autoencoder", data="digits", steps=1, out=tmp_path / "ae3", progress=False,
                  overrides=AE + ["model.channel_mult=[1,1,1,1,1,1]"])


def test_cli_train_latent_and_info(ae_run, tmp_path, capsys):
    out = tmp_path / "cli"
    code, stdout, err = run_cli(["train", "pixelcnn", "--data", "digits", "--latent", ae_run, "--steps", "2",
                                 "--out", out, *sum((["--set", s] for s in _tiny("pixelcnn") +
                                                     ["data.limit=32", "train.batch_size=8"]), [])], capsys)
    assert code == 0, err
    code, stdout, _ = run_cli(["info", out], capsys)
    assert code == 0 and "latent:      2x8x8 codes of the first stage" in stdout
    code, stdout, _ = run_cli(["sample", out, "--n", "4", "--out", tmp_path / "g.png"], capsys)
    assert code == 0 and (tmp_path / "g.png").is_file()
    code, stdout, _ = run_cli(["list"], capsys)
    assert "first stage of latent models" in stdout


def test_latent_restore_inpaints_and_refuses_pixel_operators(ae_run, tmp_path):
    model = api.load(_second_stage("diffusion", ae_run, tmp_path / "d"), device="cpu")
    x = _digits(2)
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., :8, :] = 1
    out = model.restore(x, "inpaint", mask=mask, steps=3)
    assert torch.equal(out[..., :8, :], x[..., :8, :])
    with pytest.raises(ImagegenError, match="restores by inpainting only"):
        model.restore(x[:, :, ::2, ::2].contiguous(), "sr2")
    assert model.restore_tasks == ("inpaint",) and "sr" in registry.restore_tasks("diffusion")
    with pytest.raises(ImagegenError, match="restores by inpainting only"):  # noisy inpainting is not on codes
        model.restore(x, "inpaint+denoise:0.1", mask=mask, steps=3)
    with pytest.raises(ImagegenError, match="data.augment"):
        _second_stage("diffusion", ae_run, tmp_path / "a", extra=["data.augment=[rotate:10]"])
