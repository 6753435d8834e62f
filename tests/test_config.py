import pytest

from imagegen import config
from imagegen.errors import ImagegenError


def test_overrides_are_typed():
    cfg = config.resolve("vae", overrides=config.parse_overrides(
        ["model.latent_dim=16", "train.lr=3e-4", "model.class_cond=true", "model.channel_mult=1,2",
         "train.steps=5", "data.image_size=null"]))
    assert cfg.model.latent_dim == 16 and isinstance(cfg.model.latent_dim, int)
    assert cfg.train.lr == 3e-4 and cfg.model.class_cond is True
    assert cfg.model.channel_mult == [1, 2] and cfg.data.image_size is None


@pytest.mark.parametrize("item,match", [
    ("model.latent_dim=abc", "expected an integer"),
    ("model.class_cond=maybe", "expected true or false"),
    ("train.lr=fast", "expected a number"),
    ("model.nope=1", "valid keys here: latent_dim"),
    ("nope.x=1", "valid sections"),
    ("model.latent_dim", "key=value"),
])
def test_bad_overrides_are_clear_errors(item, match):
    with pytest.raises(ImagegenError, match=match):
        config.resolve("vae", overrides=config.parse_overrides([item]))


@pytest.mark.parametrize("family,item,match", [
    ("vae", "train.lr=-1", r"train.lr must be > 0, got -1.0"),
    ("vae", "train.batch_size=0", r"train.batch_size must be >= 1"),
    ("vae", "train.ema_decay=1", r"train.ema_decay must lie in \[0, 1\)"),
    ("vae", "train.adam_betas=0.9,1.5", r"train.adam_betas\[1\] must lie in \[0, 1\)"),
    ("vae", "data.image_size=0", r"data.image_size must lie in \[1, 4096\], got 0"),
    ("vae", "data.image_size=100000", r"data.image_size must lie in \[1, 4096\], got 100000"),
    ("vae", "model.latent_dim=0", r"model.latent_dim must be >= 1"),
    ("vae", "model.channel_mult=1,0", r"model.channel_mult\[1\] must be >= 1"),
    ("gan", "model.lr_d=0", r"model.lr_d must be > 0"),
    ("gan", "model.r1_gamma=-1", r"model.r1_gamma must be >= 0"),
    ("pixelcnn", "model.layers=-1", r"model.layers must lie in \[0, 1000\], got -1"),
    ("diffusion", "model.label_dropout=1", r"model.label_dropout must lie in \[0, 1\)"),
    ("diffusion", "model.beta_end=1.5", r"model.beta_end must lie in \(0, 1\)"),
])
def test_out_of_range_values_are_clear_errors(family, item, match):
    with pytest.raises(ImagegenError, match=match):
        config.resolve(family, overrides=config.parse_overrides([item]))


def test_ranges_name_real_fields_and_defaults_lie_inside():
    """Every RANGES entry names a numeric field of its class, and the defaults satisfy it."""
    import dataclasses

    from imagegen import registry

    classes = [config.DataConfig, config.TrainConfig] + [registry.get_family(f).Config for f in registry.FAMILIES]
    for cls in classes:
        ranges = cls.RANGES
        names = {f.name for f in dataclasses.fields(cls)}
        default = cls()
        for name, spec in ranges.items():
            assert name in names, f"{cls.__name__}.RANGES names no field '{name}'"
            config.check_range(getattr(default, name), spec, name)


def test_family_defaults_then_preset_then_overrides():
    cfg = config.resolve("vae")
    assert cfg.train.lr == 1e-3  # the family's TRAIN_DEFAULTS beat the dataclass default
    p = config.resolve(preset="vae-mnist", overrides={"train": {"batch_size": 7}})
    assert p.family == "vae" and p.data.name == "mnist" and p.train.batch_size == 7
    with pytest.raises(ImagegenError, match="unknown preset"):
        config.resolve(preset="does-not-exist")
    with pytest.raises(ImagegenError, match="unknown family"):
        config.resolve("flow")


def test_every_shipped_preset_resolves():
    names = config.preset_names()
    assert "vae-mnist" in names
    for name in names:
        cfg = config.resolve(preset=name)
        assert cfg.family == config.load_preset(name)["family"]


def test_saved_config_round_trips():
    cfg = config.resolve("vae", overrides={"model": {"latent_dim": 3}})
    import json

    again = config.from_saved(json.loads(cfg.to_json()))
    assert again == cfg


@pytest.mark.parametrize("text,minutes", [("90s", 1.5), ("5m", 5), ("1.5h", 90), ("2", 2)])
def test_budget_parsing(text, minutes):
    assert config.parse_budget(text) == pytest.approx(minutes)


def test_bad_budget():
    with pytest.raises(ImagegenError, match="90s, 5m"):
        config.parse_budget("soon")
