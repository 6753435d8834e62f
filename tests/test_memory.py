"""The memory checks before the first step (imagegen.memory) and the grey-as-RGB folder rule (imagegen.data)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from helpers import run_cli
from imagegen import api, config, memory, registry
from imagegen.config import DataConfig
from imagegen.data import DataInfo, load_dataset
from imagegen.errors import ImagegenError

TINY = ["model.latent_dim=4", "model.base_channels=8", "model.channel_mult=1,1", "data.limit=48",
        "train.batch_size=8", "train.sample_every=0"]


def _one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_an_image_size_beyond_the_loaders_cap_is_refused_before_any_work(tmp_path, capsys):
    code, _, err = run_cli(["train", "vae", "--data", "digits", "--image-size", 100000, "--steps", 1,
                            "--out", tmp_path / "r"], capsys)
    assert code == 2 and "data.image_size must lie in [1, 4096], got 100000" in _one_error_line(err)
    assert not (tmp_path / "r").exists()


def test_data_that_does_not_fit_names_the_size_that_does(monkeypatch):
    """digits at 64x64 is 1500 x 64 x 64 bytes = 5.9 MiB; with 2 MiB free the loader refuses before resizing and
    names a size that then loads."""
    monkeypatch.setattr(memory, "available_bytes", lambda device=None: 2 * 1024**2)
    with pytest.raises(ImagegenError, match=r"data.image_size=64 makes the digits train split 1500 x 1 x 64 x 64 "
                                            r"= 5.9 MiB but 2.0 MiB of memory is available; at most "
                                            r"data.image_size=(\d+) fits") as e:
        load_dataset(DataConfig(name="digits", image_size=64), "train")
    fits = int(re.search(r"at most data.image_size=(\d+)", str(e.value)).group(1))
    assert 32 <= fits < 64
    assert load_dataset(DataConfig(name="digits", image_size=fits), "train").images.shape[-1] == fits


def test_a_batch_that_does_not_fit_names_the_batch_size_that_does(tmp_path, monkeypatch, capsys):
    sets = [s for s in TINY if not s.startswith("data.limit")] + ["train.batch_size=1024"]  # < 1500 images
    fam = registry.get_family("vae")
    cfg = config.resolve("vae", None, config.parse_overrides(sets))
    info = DataInfo(channels=1, size=16, num_classes=10)
    est = memory.estimate_training(fam, cfg, info, slope=True)
    assert est["measured"] and est["per_image"] > 0
    # room for the model and about 100 images of the batch
    avail = est["params"] + (est["step"] - est["per_image"] * 1024) + 100 * est["per_image"]
    monkeypatch.setattr(memory, "available_bytes", lambda device=None: int(avail))
    code, _, err = run_cli(["train", "vae", "--data", "digits", "--steps", 1, "--out", tmp_path / "r",
                            *sum((["--set", s] for s in sets), [])], capsys)
    line = _one_error_line(err)
    assert code == 2 and "train.batch_size=1024 is too large" in line, line
    fits = int(re.search(r"at most train.batch_size=(\d+) fits", line).group(1))
    assert 90 <= fits <= 100
    assert not (tmp_path / "r" / "checkpoints").exists()  # stopped before the first step
    run = api.train("vae", data="digits", steps=1, out=tmp_path / "ok", progress=False,
                    overrides=sets + [f"train.batch_size={fits}"])
    assert (run / "checkpoints").is_dir()
    # a batch larger than the data set is the data set (what the batch sampler draws): no false alarm
    api.train("vae", data="digits", steps=1, out=tmp_path / "all", progress=False,
              overrides=TINY + ["train.batch_size=100000"])


def test_a_model_too_wide_is_refused_without_building_it(tmp_path, capsys):
    """10^5 channels are ~10^12 parameters: the model is measured on the meta device, never allocated."""
    code, _, err = run_cli(["train", "vae", "--data", "digits", "--steps", 1, "--out", tmp_path / "r",
                            "--set", "model.base_channels=100000"], capsys)
    line = _one_error_line(err)
    assert code == 2 and "the model is too large" in line and "lower model.base_channels=100000" in line


def test_the_estimate_leaves_the_random_stream_alone_and_grows_with_the_batch():
    for name in registry.FAMILIES:
        fam = registry.get_family(name)
        small = config.resolve(name, None, {"model": dict(fam.TEST_CONFIG), "train": {"batch_size": 4}})
        big = config.resolve(name, None, {"model": dict(fam.TEST_CONFIG), "train": {"batch_size": 64}})
        info = DataInfo(channels=1, size=8, num_classes=10)
        before = torch.get_rng_state()
        a, b = memory.estimate_training(fam, small, info), memory.estimate_training(fam, big, info)
        assert torch.equal(before, torch.get_rng_state()), name
        assert a["measured"] and b["measured"], name  # every family's train_step runs on meta
        assert a["params"] == b["params"] > 0 and b["step"] > a["step"], name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compares with the CUDA allocator's peak")
@pytest.mark.parametrize("family", list(registry.FAMILIES))
def test_the_estimate_is_close_to_the_cuda_allocators_peak(family):
    """One real training step on the GPU: the allocator's peak lies within [0.5, 1.5] x the estimate."""
    from accelerate import Accelerator

    from imagegen.data import Batch
    from imagegen.families.base import default_optimizers

    fam = registry.get_family(family)
    cfg = config.resolve(family, None, {"train": {"batch_size": 64}})
    info = DataInfo(channels=3, size=32, num_classes=10)
    est = memory.estimate_training(fam, cfg, info)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    accel = Accelerator()
    model = fam.build(cfg.model, info).cuda()
    ema = fam.build(cfg.model, info).cuda()  # the EMA copy the trainer keeps
    opts = (fam.configure_optimizers(model, cfg.model, cfg.train) if hasattr(fam, "configure_optimizers")
            else default_optimizers(model, cfg.model, cfg.train))
    x = torch.rand(64, 3, 32, 32, device="cuda") * 2 - 1
    y = torch.randint(0, 10, (64,), device="cuda")
    fam.train_step(model, Batch(x, y), opts, 1, accel, grad_clip=cfg.train.grad_clip)
    fam.train_step(model, Batch(x, y), opts, 2, accel, grad_clip=cfg.train.grad_clip)  # optimiser state from the 1st
    peak = torch.cuda.max_memory_allocated() - base
    need = est["params"] + est["step"]
    del model, ema, opts
    assert 0.5 * need <= peak <= 1.5 * need, (family, memory.fmt_bytes(peak), memory.fmt_bytes(need))


# ---------------------------------------------------------------------------------------------- grey saved as RGB


def _save(path, arr, mode):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode).save(path)


def test_a_folder_of_grey_images_saved_as_rgb_is_read_as_grey_and_says_why(tmp_path, capfd):
    rng = np.random.default_rng(0)
    grey = [rng.integers(0, 256, (12, 12), dtype=np.uint8) for _ in range(4)]
    for i, g in enumerate(grey):  # RGB files (PNG and JPEG-like tools) whose three planes are equal
        _save(tmp_path / "rgb" / f"{i}.png", np.stack([g, g, g], -1), "RGB")
        _save(tmp_path / "l" / f"{i}.png", g, "L")
    ds = load_dataset(DataConfig(name=f"folder:{tmp_path / 'rgb'}"))
    assert ds.info.channels == 1 and ds.images.shape == (4, 1, 12, 12)
    assert "stored as RGB but every one has R = G = B" in ds.info.channels_from
    assert "every one has R = G = B" in capfd.readouterr().err
    # the same bytes as the folder saved greyscale
    same = load_dataset(DataConfig(name=f"folder:{tmp_path / 'l'}"))
    assert same.info.channels == 1 and torch.equal(same.images, ds.images)
    assert same.info.channels_from.startswith("grey: all 4 images are stored greyscale")
    # read again from the cache: the same decision and reason
    again = load_dataset(DataConfig(name=f"folder:{tmp_path / 'rgb'}"))
    assert torch.equal(again.images, ds.images) and again.info.channels_from == ds.info.channels_from
    # --channels 3 keeps three planes; one colour pixel anywhere makes the folder colour
    assert load_dataset(DataConfig(name=f"folder:{tmp_path / 'rgb'}", channels=3)).info.channels == 3
    tinted = np.stack([grey[0], grey[0], grey[0]], -1)
    tinted[5, 5, 0] ^= 1
    _save(tmp_path / "rgb" / "tinted.png", tinted, "RGB")
    colour = load_dataset(DataConfig(name=f"folder:{tmp_path / 'rgb'}"))
    assert colour.info.channels == 3 and colour.info.channels_from.startswith("colour: 1 of the 5 images")
    # a mixed folder (greyscale files and colour files) is colour, the grey ones repeated to 3 planes
    _save(tmp_path / "l" / "colour.png", tinted, "RGB")
    mixed = load_dataset(DataConfig(name=f"folder:{tmp_path / 'l'}"))
    assert mixed.info.channels == 3 and torch.equal(mixed.images[0, 0], mixed.images[0, 2])


def test_the_decision_is_kept_in_the_run_and_shown_by_info(tmp_path, capsys):
    rng = np.random.default_rng(1)
    for i in range(8):
        g = rng.integers(0, 256, (8, 8), dtype=np.uint8)
        _save(tmp_path / "imgs" / f"{i}.jpg", np.stack([g, g, g], -1), "RGB")
    run = api.train("vae", data=f"folder:{tmp_path / 'imgs'}", steps=1, out=tmp_path / "r", progress=False,
                    overrides=["model.latent_dim=4", "model.base_channels=8", "model.channel_mult=1,1",
                               "train.batch_size=4", "train.sample_every=0"])
    from imagegen import checkpoint

    info = checkpoint.read_meta(run)["data_info"]
    assert info["channels"] == 1 and "R = G = B" in info["channels_from"]
    code, out, _ = run_cli(["info", run], capsys)
    assert code == 0 and "(1x8x8, 0 classes); grey: 8 of the 8 images are stored as RGB" in out
