"""Training augmentation (imagegen.augment, data.augment): per-image, seeded, in range, resumable."""

import json

import pytest
import torch

from imagegen import api, augment, checkpoint, config
from imagegen.data import DataInfo, ImageDataset
from imagegen.errors import ImagegenError

ALL = ["hflip", "rotate:15", "scale:0.8-1.2", "translate:2", "colour-jitter:0.3,0.3,0.3,0.1"]


def _batch(c=3, n=6, size=16, seed=0):
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("specs", [[s] for s in ALL] + [ALL])
@pytest.mark.parametrize("channels", [1, 3])
def test_seeded_same_shape_and_range(specs, channels):
    x = _batch(channels)
    a = augment.apply(x, specs, torch.Generator().manual_seed(1))
    b = augment.apply(x, specs, torch.Generator().manual_seed(1))
    c = augment.apply(x, specs, torch.Generator().manual_seed(2))
    assert a.shape == x.shape and a.dtype == x.dtype and torch.equal(a, b)
    assert a.min() >= -1 and a.max() <= 1
    assert not torch.equal(a, c)


@pytest.mark.parametrize("spec", ALL)
def test_every_image_gets_its_own_parameters(spec):
    """Unlike a v2 transform called on a batch, identical inputs come out different."""
    x = _batch(3, n=1).expand(8, -1, -1, -1).clone()
    out = augment.apply(x, [spec], torch.Generator().manual_seed(0))
    assert len({tuple(o.flatten().tolist()) for o in out}) > 1


def test_hflip_alone_is_exact_and_about_half():
    x = _batch(1, n=64)
    out = augment.apply(x, ["hflip"], torch.Generator().manual_seed(0))
    same = [torch.equal(o, i) for o, i in zip(out, x)]
    flipped = [torch.equal(o, i.flip(2)) for o, i in zip(out, x)]
    assert all(s or f for s, f in zip(same, flipped)) and 16 < sum(flipped) < 48


def test_geometry_moves_mass_as_asked():
    """A centred blob: rotation and scale keep its centre; translate:2 moves it by at most 2 pixels."""
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    blob = (torch.exp(-((xx - 7.5) ** 2 + (yy - 7.5) ** 2) / 8) * 2 - 1).expand(32, 1, 16, 16).clone()

    def centre(img):
        w = (img + 1).flatten(1)
        return torch.stack([(w * xx.flatten()).sum(1), (w * yy.flatten()).sum(1)], 1) / w.sum(1, keepdim=True)

    for spec in (["rotate:90"], ["scale:0.7-1.3"], ["hflip", "rotate:30"]):
        out = augment.apply(blob, spec, torch.Generator().manual_seed(0))
        assert (centre(out) - 7.5).abs().max() < 0.05, spec
    shifted = centre(augment.apply(blob, ["translate:2"], torch.Generator().manual_seed(0))) - 7.5
    assert shifted.abs().max() <= 2.05 and shifted.abs().max() > 0.5
    constant = torch.full((4, 3, 16, 16), 0.25)  # reflection padding: nothing new comes in at the edges
    torch.testing.assert_close(augment.apply(constant, ALL[:4], torch.Generator().manual_seed(0)), constant)


def test_colour_jitter_on_grey_images_only_changes_brightness_and_contrast():
    x = _batch(3, n=4)
    grey = x.mean(1, keepdim=True).expand(-1, 3, -1, -1).clone()
    out = augment.apply(grey, ["colour-jitter:0,0,0.5,0.5"], torch.Generator().manual_seed(0))
    # saturation and hue do nothing to grey (up to torchvision's luma weights, which sum to 0.9999)
    torch.testing.assert_close(out, grey, atol=2e-4, rtol=0)


def test_parse_errors_are_one_line_and_config_records_the_parsed_list():
    for bad, words in (("spin:3", "unknown data.augment item"), ("rotate", "expected 1 number"),
                       ("scale:1.2-0.8", "0 < LO <= HI"), ("colour-jitter:0.1,0.1", "expected 4"),
                       ("colour-jitter:0.1,0.1,0.1,0.9", "H in"), ("translate:-1", "> 0 pixels")):
        with pytest.raises(ImagegenError, match=words) as e:
            augment.parse([bad])
        assert "\n" not in str(e.value)
    with pytest.raises(ImagegenError, match="unknown data.augment item"):
        config.resolve("vae", overrides=config.parse_overrides(["data.augment=hflip,twirl"]))
    cfg = config.resolve("vae", overrides=config.parse_overrides(
        ["data.augment=hflip,color-jitter:0.2,0.2,0.2,0.05,rotate:10"]))
    assert cfg.data.augment == ["hflip", "colour-jitter:0.2,0.2,0.2,0.05", "rotate:10"]
    assert json.loads(cfg.to_json())["data"]["augment"] == cfg.data.augment
    assert config.resolve("vae").data.augment == []


def test_binarised_batches_stay_binary():
    info = DataInfo(channels=1, size=16, num_classes=0, bits=1, name="bin")
    u8 = (torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    ds = ImageDataset(u8, None, info, binarize=True)
    x = ds.batch(torch.arange(8), torch.Generator().manual_seed(0), augment=["rotate:20"]).x
    assert set(x.unique().tolist()) <= {-1.0, 1.0}


TINY = ["model.latent_dim=4", "model.base_channels=8", "model.channel_mult=1,1", "data.limit=96",
        "train.batch_size=16", "train.log_every=1", "train.sample_every=0", "train.ckpt_every=100",
        "data.augment=hflip,rotate:10,translate:1,scale:0.9-1.1"]


def _train(out, steps, extra=()):
    return api.train("vae", data="digits", steps=steps, out=out, overrides=TINY + list(extra), progress=False)


def _losses(run):
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_resumed_run_continues_the_same_augmentation_stream(tmp_path, monkeypatch):
    calls = []
    real = augment.apply
    monkeypatch.setattr(augment, "apply", lambda x, aug, g=None: calls.append(list(aug)) or real(x, aug, g))
    a = _train(tmp_path / "a", 4)
    assert len(calls) == 4 and calls[0] == TINY[-1].split("=")[1].split(",")  # every training batch
    _train(tmp_path / "b", 2)
    b = _train(tmp_path / "b", 4)  # resumes at step 2: the global RNG (and so the augmentation) is restored
    assert _losses(a) == _losses(b)
    ca, cb = checkpoint.load(a), checkpoint.load(b)
    for key in ca.tensors:
        if key.startswith(("model/", "ema/")):
            assert torch.equal(ca.tensors[key], cb.tensors[key]), key
    assert json.loads((a / "config.json").read_text())["data"]["augment"] == calls[0]
