"""The family contract, checked for every registered family with its tiny TEST_CONFIG."""

import inspect

import pytest
import torch

from imagegen import api, checkpoint, config, registry
from imagegen.data import Batch, DataInfo, ImageDataset
from imagegen.families.base import default_optimizers
from imagegen.rng import ImageGenerators

FAMILIES = list(registry.FAMILIES)
GENERATIVE = [n for n in FAMILIES if registry.generative(n)]  # all but the autoencoder (a first stage)
INFO = DataInfo(channels=1, size=16, num_classes=10, bits=8, name="unit")


def _setup(name, info=INFO, **model_overrides):
    fam = registry.get_family(name)
    overrides = {**getattr(fam, "TEST_CONFIG", {}), **model_overrides}
    cfg = config.resolve(name, overrides={"model": overrides, "train": {"batch_size": 8}})
    torch.manual_seed(0)
    model = fam.build(cfg.model, info)
    if hasattr(fam, "after_training"):  # what it fits after training (the VAE's prior) is then part of every test
        g = torch.Generator().manual_seed(2)
        images = torch.randint(0, 256, (64, info.channels, info.size, info.size), generator=g, dtype=torch.uint8)
        model.eval()
        fam.after_training(model, ImageDataset(images, torch.arange(64) % max(1, info.num_classes), info))
    opts = (fam.configure_optimizers(model, cfg.model, cfg.train) if hasattr(fam, "configure_optimizers")
            else default_optimizers(model, cfg.model, cfg.train))
    return fam, cfg, model, opts


def _batch(info=INFO, n=8):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, info.channels, info.size, info.size, generator=g) * 2 - 1
    if info.bits == 1:
        x = torch.where(x > 0, 1.0, -1.0)
    return Batch(x, torch.arange(n) % max(1, info.num_classes))


def _sample(fam, model, n, seed, **kw):
    g = ImageGenerators.for_images(seed, 0, n)  # image i seeded by (seed, i), as LoadedModel.sample does
    with torch.no_grad():
        return fam.sample(model, n, generator=g, **{**getattr(fam, "PREVIEW_OPTIONS", {}), **kw})


@pytest.mark.parametrize("name", FAMILIES)
def test_train_step_loss_finite_and_parameters_move(name, accel):
    fam, cfg, model, opts = _setup(name)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    model.train()
    # zero-initialised output layers (as in DDPM's UNet) pass no gradient back on the first step, and
    # each step wakes one more level: allow a few steps for the gradient to reach every layer
    for step in range(8):
        logs = fam.train_step(model, _batch(), opts, step, accel)
        assert "loss" in logs and torch.isfinite(torch.as_tensor(logs["loss"])).all()
        changed = [k for k, v in model.named_parameters() if not torch.equal(v, before[k])]
        if len(changed) >= 0.9 * len(before):
            break
    assert len(changed) >= 0.9 * len(before), f"only {len(changed)}/{len(before)} parameter tensors moved"


@pytest.mark.parametrize("name", GENERATIVE)
def test_sample_shape_range_and_seed(name):
    fam, cfg, model, _ = _setup(name)
    model.eval()
    a, b = _sample(fam, model, 5, seed=3), _sample(fam, model, 5, seed=3)
    assert a.shape == (5, 1, 16, 16)
    assert torch.isfinite(a).all() and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", FAMILIES)
def test_checkpoint_round_trip_gives_identical_samples(name, accel, tmp_path):
    fam, cfg, model, opts = _setup(name)
    model.train()
    fam.train_step(model, _batch(), opts, 0, accel)
    model.eval()
    meta = {"family": name, "config": cfg.to_dict(), "data_info": INFO.to_dict(), "step": 1, "images_seen": 8}
    path = checkpoint.save(tmp_path / "ckpt-00000001.safetensors", meta=meta, model=model, optimizers=opts)
    loaded = api.load(path, device="cpu")
    assert loaded.family == name and loaded.step == 1
    if not registry.generative(name):  # a first stage: the same reconstructions instead
        x = _batch(n=4).x
        with torch.no_grad():
            assert torch.allclose(fam.reconstruct(model, x), loaded.reconstruct(x), atol=1e-6)
        return
    expected = _sample(fam, model, 4, seed=11)
    got = loaded.sample(4, seed=11, **getattr(fam, "PREVIEW_OPTIONS", {}))
    assert torch.allclose(expected, got, atol=1e-6)


def _choice_variants(fam) -> list[dict]:
    """The preview options, then each value of each of ``SAMPLE_CHOICES`` in turn (the others at preview)."""
    base = dict(getattr(fam, "PREVIEW_OPTIONS", {}))
    return [base] + [{**base, key: v} for key, values in getattr(fam, "SAMPLE_CHOICES", {}).items()
                     for v in values if v != base.get(key)]


@pytest.mark.parametrize("name", GENERATIVE)
def test_same_seed_gives_the_same_images_at_any_batch_size(name):
    # per-image seeds (EDM's StackedRandomGenerator): image i depends on (seed, i) only, never on its batch
    fam, cfg, model, _ = _setup(name)
    model.eval()
    loaded = api.LoadedModel(name, cfg, INFO, model, {}, None, torch.device("cpu"))
    variants = _choice_variants(fam)
    for options in variants:  # every sampler draws its noise through imagegen.rng
        whole = loaded.sample(4, seed=5, batch_size=4, **options)
        for batch_size in (1, 3) if options is variants[0] else (3,):
            assert torch.allclose(loaded.sample(4, seed=5, batch_size=batch_size, **options), whole, atol=1e-5), \
                f"{name} {options}: batch size {batch_size} changed the images"
    whole = loaded.sample(4, seed=5, **variants[0])
    # images 2..3 of seed 5 are the same when an evaluation draws them in a later call
    assert torch.allclose(loaded.sample(2, seed=5, first_index=2, **variants[0]), whole[2:], atol=1e-5)
    assert not torch.allclose(loaded.sample(4, seed=6, **variants[0]), whole)


@pytest.mark.parametrize("name", [n for n in FAMILIES if "nll" in registry.capabilities(n)])
def test_nll_is_positive_and_finite(name):
    fam, cfg, model, _ = _setup(name)
    model.eval()
    with torch.no_grad():
        nats = fam.nll(model, _batch().x)
    assert nats.shape == (8,) and torch.isfinite(nats).all() and (nats > 0).all()


@pytest.mark.parametrize("name", [n for n in FAMILIES if "complete" in registry.capabilities(n)])
def test_complete_keeps_known_pixels(name):
    fam, cfg, model, _ = _setup(name)
    model.eval()
    x = _batch(n=2).x
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, :8] = 1
    opts = {k: v for k, v in getattr(fam, "PREVIEW_OPTIONS", {}).items()
            if k in inspect.signature(fam.complete).parameters}
    out = fam.complete(model, x, mask, generator=torch.Generator().manual_seed(0), **opts)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert torch.equal(out[:, :, :8], x[:, :, :8])
    # the Python API takes one mask for the whole batch (bool here) and hands the family one per image
    loaded = api.LoadedModel(name, cfg, INFO, model, {}, None, torch.device("cpu"))
    via_api = loaded.complete(x, mask[:1].bool(), seed=0, **opts)
    assert via_api.shape == x.shape and torch.equal(via_api[:, :, :8], x[:, :, :8])


@pytest.mark.parametrize("name", GENERATIVE)
def test_class_conditional_variant(name, accel):
    fam = registry.get_family(name)
    if "class_cond" not in {f.name for f in fam.Config.__dataclass_fields__.values()}:
        pytest.skip(f"{name} has no class conditioning")
    fam, cfg, model, opts = _setup(name, class_cond=True)
    model.train()
    logs = fam.train_step(model, _batch(), opts, 0, accel)
    assert torch.isfinite(torch.as_tensor(logs["loss"])).all()
    model.eval()
    x = _sample(fam, model, 4, seed=0, labels=torch.tensor([0, 1, 2, 3]))
    assert x.shape == (4, 1, 16, 16)


@pytest.mark.parametrize("name", FAMILIES)
def test_binary_data(name, accel):
    info = DataInfo(channels=1, size=16, num_classes=0, bits=1, name="bin")
    fam, cfg, model, opts = _setup(name, info=info)
    model.train()
    logs = fam.train_step(model, _batch(info), opts, 0, accel)
    assert torch.isfinite(torch.as_tensor(logs["loss"])).all()


@pytest.mark.parametrize("name", [n for n in FAMILIES if "interpolate" in registry.capabilities(n)])
def test_interpolation_labels_are_checked(name):
    """One label draws the whole strip in that class; more labels than the family can use is an error that
    says how many it takes (VAE and diffusion used to answer 'got 3 labels for 1 images' or, with two
    labels, complain about the frame count)."""
    from imagegen.errors import ImagegenError

    fam, cfg, model, _ = _setup(name, class_cond=True)
    model.eval()
    loaded = api.LoadedModel(name, cfg, INFO, model, {}, None, torch.device("cpu"))
    x = _batch(n=2).x
    opts = {"steps": 2} if "steps" in inspect.signature(fam.interpolate).parameters else {}
    strip = loaded.interpolate(x[:1], x[1:], 3, labels=4, **opts)
    assert strip.shape == (3, 1, 16, 16) and torch.isfinite(strip).all()
    with pytest.raises(ImagegenError, match="takes one label (for the whole strip|or two)"):
        loaded.interpolate(x[:1], x[1:], 3, labels=[1, 2, 3], **opts)


@pytest.mark.parametrize("name", GENERATIVE)
def test_latent_variant_round_trips_and_completes(name, tmp_path):
    """Every generative family on a first stage's codes (imagegen.latent): a checkpoint that records the first
    stage reloads to the same decoded samples, and completion keeps the known pixels."""
    from imagegen.latent import load_first_stage

    ae_fam, ae_cfg, ae, _ = _setup("autoencoder")
    ae.eval()
    ae_meta = {"family": "autoencoder", "config": ae_cfg.to_dict(), "data_info": INFO.to_dict(), "step": 1,
               "images_seen": 8}
    ae_path = checkpoint.save(tmp_path / "ae" / "checkpoints" / "ckpt-00000001.safetensors", meta=ae_meta,
                              model=ae)
    stage = load_first_stage(ae_path)
    code_info = stage.latent_info(INFO)
    extra = {"attn_resolutions": [4]} if name == "diffusion" else {}
    fam, cfg, model, _ = _setup(name, info=code_info, **extra)
    model.eval()
    meta = {"family": name, "config": cfg.to_dict(), "data_info": INFO.to_dict(), "step": 1, "images_seen": 8,
            "latent": {"first_stage": stage.record(tmp_path / "run"), "data_info": code_info.to_dict()}}
    path = checkpoint.save(tmp_path / "run" / "checkpoints" / "ckpt-00000001.safetensors", meta=meta, model=model)
    loaded = api.load(path, device="cpu")
    expected = stage.decode(_sample(fam, model, 3, seed=2))
    got = loaded.sample(3, seed=2, **getattr(fam, "PREVIEW_OPTIONS", {}))
    assert got.shape == (3, 1, 16, 16) and torch.allclose(expected, got, atol=1e-6)
    if "complete" in registry.capabilities(name):
        x = _batch(n=2).x
        mask = torch.zeros(1, 1, 16, 16)
        mask[:, :, :8] = 1
        opts = {k: v for k, v in getattr(fam, "PREVIEW_OPTIONS", {}).items()
                if k in inspect.signature(fam.complete).parameters}
        if "steps" in inspect.signature(fam.complete).parameters:
            opts["steps"] = 3
        out = loaded.complete(x, mask, seed=0, **opts)
        assert out.shape == x.shape and torch.equal(out[:, :, :8], x[:, :, :8])


# formulations that change a family's training and sampling code: the core of the contract once more for each
VARIANTS = [("diffusion", {"formulation": "flow"})]


@pytest.mark.parametrize("name,overrides", VARIANTS, ids=lambda v: v if isinstance(v, str) else
                         ",".join(f"{k}={x}" for k, x in v.items()))
def test_variant_trains_samples_round_trips_and_completes(name, overrides, accel, tmp_path):
    fam, cfg, model, opts = _setup(name, **overrides)
    assert all(getattr(cfg.model, k) == v for k, v in overrides.items())
    model.train()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    for step in range(8):
        logs = fam.train_step(model, _batch(), opts, step, accel)
        assert torch.isfinite(torch.as_tensor(logs["loss"])).all()
    assert sum(not torch.equal(v, before[k]) for k, v in model.named_parameters()) >= 0.9 * len(before)
    model.eval()
    a, b = _sample(fam, model, 5, seed=3), _sample(fam, model, 5, seed=3)
    assert a.shape == (5, 1, 16, 16) and torch.isfinite(a).all() and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b)
    meta = {"family": name, "config": cfg.to_dict(), "data_info": INFO.to_dict(), "step": 8, "images_seen": 64}
    path = checkpoint.save(tmp_path / "ckpt-00000008.safetensors", meta=meta, model=model, optimizers=opts)
    loaded = api.load(path, device="cpu")
    assert all(getattr(loaded.config.model, k) == v for k, v in overrides.items())
    got = loaded.sample(4, seed=11, **getattr(fam, "PREVIEW_OPTIONS", {}))
    assert torch.allclose(_sample(fam, model, 4, seed=11), got, atol=1e-6)
    if "complete" in registry.capabilities(name):
        x = _batch(n=2).x
        mask = torch.zeros(2, 1, 16, 16)
        mask[:, :, :8] = 1
        out = loaded.complete(x, mask[:1].bool(), seed=0, steps=4, resample=2)
        assert out.shape == x.shape and torch.equal(out[:, :, :8], x[:, :, :8])
