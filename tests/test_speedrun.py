"""The five-CPU-minute recipes (docs/speedrun.md): every *-5m preset trains a step and samples through the
public API, bf16 autocast on the CPU is finite, and a family trained without a preset gets a network sized to
its images. No timing here: the numbers are benchmarks/speedrun.py's."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from helpers import make_mnist
from imagegen import api, config
from imagegen.data import DataInfo
from imagegen.families import diffusion as D

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _five_minute_recipes() -> dict:
    """preset -> (first stage needed?, sampling options), read from benchmarks/speedrun.py's RECIPES, the one table
    the benchmark scores with (3 sampler steps here instead of 10: a unit test)."""
    sys.path.insert(0, str(BENCH))  # as `python benchmarks/speedrun.py` does, for its sibling modules
    try:
        import speedrun
    finally:
        sys.path.remove(str(BENCH))
    return {preset: (latent, {**opts, **({"steps": 3} if "steps" in opts else {})})
            for _, preset, _, latent, opts in speedrun.RECIPES.values() if preset and preset.endswith("-5m")}


FIVE_MINUTE = _five_minute_recipes()


def test_every_five_minute_preset_is_a_recipe_of_the_speedrun():
    assert {n for n in config.preset_names() if n.endswith("-5m")} == set(FIVE_MINUTE)


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_mnist(root, n_train=64, n_test=16)
    return root


@pytest.fixture(scope="module")
def first_stage(mnist_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "ae"
    api.train("autoencoder", preset="autoencoder-mnist", data_root=mnist_root, steps=2, out=out, progress=False,
              overrides=["train.batch_size=16", "train.sample_every=0"])
    return out


@pytest.mark.parametrize("preset", sorted(FIVE_MINUTE))
def test_five_minute_preset_trains_and_samples(preset, mnist_root, first_stage, tmp_path):
    latent, sampling = FIVE_MINUTE[preset]
    cfg = config.resolve(preset=preset)
    out = tmp_path / preset
    api.train(cfg.family, preset=preset, data_root=mnist_root, steps=2, out=out, progress=False,
              latent=first_stage if latent else None, overrides=["train.batch_size=8", "train.sample_every=0"])
    model = api.load(out)
    assert model.class_conditional  # every recipe takes labels (and cacc scores them)
    x = model.sample(4, labels=[0, 1, 2, 3], seed=0, **sampling)
    assert x.shape == (4, 1, 28, 28) and torch.isfinite(x).all() and x.min() >= -1 and x.max() <= 1
    assert torch.equal(x, model.sample(4, labels=[0, 1, 2, 3], seed=0, **sampling))


def test_bf16_autocast_on_cpu_trains_and_samples_finite(tmp_path):
    out = tmp_path / "bf16"
    overrides = [f"model.{k}={v}".replace(" ", "") for k, v in D.TEST_CONFIG.items()]
    api.train("diffusion", data="digits", steps=3, out=out, progress=False,
              overrides=[*overrides, "train.mixed_precision=bf16", "train.batch_size=8", "train.log_every=1",
                         "train.sample_every=0", "data.limit=32"])
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    x = api.load(out).sample(2, seed=0, sampler="dpmpp-2m", steps=3)
    assert torch.isfinite(x).all()


def _parameters(info: DataInfo, **model) -> int:
    cfg = config.resolve("diffusion", overrides={"model": model} if model else None)
    with torch.device("meta"):
        net = D.build(cfg.model, info)
    return sum(p.numel() for p in net.parameters())


def test_family_defaults_are_sized_to_the_data():
    digits = DataInfo(channels=1, size=16, num_classes=10)
    assert _parameters(digits) < 1.5e6  # not the 35.7M CIFAR-10 UNet for 16x16 digits
    assert _parameters(DataInfo(channels=1, size=28, num_classes=10)) < 2e6
    assert _parameters(DataInfo(channels=3, size=32, num_classes=10)) == 35_746_307  # the paper's, as before
    assert _parameters(digits, base_channels=8, channel_mult=[1, 2], attn_resolutions=[8]) < 1e5  # --set wins
    cfg = config.resolve("diffusion")
    assert cfg.model.base_channels is None and D.sized_unet(cfg.model, digits)["channel_mult"] == [1, 2]


def test_demo_writes_an_enlarged_grid_with_a_column_per_class(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from imagegen import demo

    monkeypatch.setenv("IMAGEGEN_DEMO_BUDGET", "2s")
    monkeypatch.setenv("IMAGEGEN_DEMO_OUT", str(tmp_path / "demo"))
    assert demo.main() == 0
    with Image.open(tmp_path / "demo" / "grid.png") as small, Image.open(tmp_path / "demo" / "grid-x4.png") as big:
        assert big.size == (4 * small.width, 4 * small.height)
        assert small.size == (10 * 17 + 1, 8 * 17 + 1)  # 10 classes x 8 rows of 16x16 digits, 1-pixel padding
    assert "column k is digit k" in capsys.readouterr().out
