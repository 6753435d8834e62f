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
