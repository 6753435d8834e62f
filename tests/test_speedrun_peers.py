"""The speedrun's peers (benchmarks/speedrun_peers.py): each trains a few steps on small uint8 digits, stops when
its wall-clock budget is spent, and samples uint8 (n, 1, 28, 28) images that are not constant. No timing is
asserted beyond "it stopped once the budget had elapsed"."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
PEERS = ("hf-ddpm", "pt-vae", "pt-dcgan")
FEW = {"hf-ddpm": {"sampler": "ddim", "steps": 2}}  # the reduced-step sampler: a 1000-step loop is no unit test


@pytest.fixture(scope="module")
def sp():
    import sys

    sys.path.insert(0, str(BENCH))  # as `python benchmarks/speedrun_peers.py` does, for benchmarks/_bench.py
    try:
        spec = importlib.util.spec_from_file_location("bench_speedrun_peers", BENCH / "speedrun_peers.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


@pytest.fixture(scope="module")
def digits_u8():
    """64 real digits (scikit-learn's, through our loader) drawn at 28x28, uint8 (64, 1, 28, 28)."""
    from imagegen.config import DataConfig
    from imagegen.data import load_dataset

    images = load_dataset(DataConfig(name="digits", image_size=28, limit=64), "train").images
    assert images.dtype == torch.uint8 and images.shape == (64, 1, 28, 28)
    return images


def _check_samples(x: torch.Tensor, n: int) -> None:
    assert x.dtype == torch.uint8 and x.shape == (n, 1, 28, 28)
    assert x.float().std() > 0, "constant samples"


@pytest.mark.parametrize("name", PEERS)
def test_a_peer_trains_a_few_steps_and_samples_uint8(sp, digits_u8, name):
    peer = sp.PEERS[name]
    state, stats = peer.train(digits_u8, 600.0, 0, 1, batch_size=8, max_steps=3)
    assert stats["steps"] == 3 and stats["images_seen"] == 24
    assert all(torch.isfinite(p).all() for p in _params(state))
    x = peer.sample(state, 5, 0, **FEW.get(name, {}))  # 5: a part batch too (the DCGAN draws in batches of 64)
    _check_samples(x, 5)
    assert torch.equal(x, peer.sample(state, 5, 0, **FEW.get(name, {}))), "the same seed, other samples"


@pytest.mark.parametrize("name", PEERS)
def test_a_peer_stops_when_its_budget_has_elapsed(sp, digits_u8, name):
    _, stats = sp.PEERS[name].train(digits_u8, 1.0, 0, 1, batch_size=8)  # no step cap: only the clock stops it
    assert stats["steps"] >= 1 and stats["train_wall_s"] >= 1.0


def test_run_peer_writes_samples_a_grid_and_a_row(sp, digits_u8, tmp_path):
    row = sp.run_peer("pt-vae", tmp_path, skip_score=True, budget_s=0.5, n=8, seed=1, threads=1,
                      train_images_u8=digits_u8)
    for key in ("recipe", "family", "latent", "step", "kimg", "train_s", "sampling", "train_wall_s", "sample64_s"):
        assert key in row, key
    assert row["recipe"] == "pt-vae" and row["family"] == "vae" and row["step"] >= 1
    assert json.loads((tmp_path / "row-pt-vae.json").read_text()) == row
    from imagegen.data import load_image_array

    images, labels = load_image_array(tmp_path / "pt-vae" / "samples-8.npz")
    _check_samples(images, 8)
    from PIL import Image

    assert Image.open(tmp_path / "grids" / "pt-vae.png").size[0] >= 4 * 8 * 28  # upscaled for viewing


def test_the_ddpm_samples_with_the_courses_1000_step_loop_by_default(sp):
    assert sp._sampling_label("hf-ddpm", {}) == {"sampler": "ddpm", "steps": 1000}
    assert sp._sampling_label("hf-ddpm", {"sampler": "ddim"}) == {"sampler": "ddim", "steps": 50}


def _params(state):
    mods = [state] if isinstance(state, torch.nn.Module) else [v for v in state
                                                                 if isinstance(v, torch.nn.Module)]
    return [p for m in mods for p in m.parameters()]
